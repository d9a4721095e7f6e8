// pool_fc.cu — global average pooling and the final fully connected layer.
//
// Semantics (PyTorch / the CPU twins and the launchers in crates/tensor/src/pool/ and linear/):
//   avgpool:          y[n,c] = (1/HW) * sum_{h,w} x[n,c,h,w]            [N,C,H,W] -> [N,C]
//   avgpool backward: dx[n,c,h,w] = dy[n,c] / HW
//   linear:           y[n,o] = b[o] + sum_i x[n,i] * W[o,i]              W is [Out, In]
//   linear backward:  dx[n,i] = sum_o dy[n,o] * W[o,i]
//                     dW[o,i] = beta * dW[o,i] + sum_n dy[n,o] * x[n,i]
//                     db[o]   = beta * db[o]   + sum_n dy[n,o]
//
// These tensors are tiny for CIFAR ResNets (N=128, C=In=64, Out=10/100), so every kernel is
// "one thread per output element, serial loop over the reduced axis": obviously correct, no
// atomics, deterministic. All are 1-D grid-stride loops.

extern "C" __global__ void avgpool_forward(const float* __restrict__ x, float* __restrict__ y,
                                           int NC, int HW)
{
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < NC; r += gridDim.x * blockDim.x) {
        const float* row = x + (size_t)r * HW;
        float s = 0.0f;
        for (int j = 0; j < HW; ++j) s += row[j];
        y[r] = s / (float)HW;
    }
}

extern "C" __global__ void avgpool_backward(const float* __restrict__ dy, float* __restrict__ dx,
                                            int NC, int HW)
{
    const int total = NC * HW;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        dx[i] = dy[i / HW] / (float)HW;
    }
}

// One thread per y[n,o].
extern "C" __global__ void linear_forward(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y,
                                          int N, int In, int Out)
{
    const int total = N * Out;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int n = t / Out;
        const int o = t - n * Out;
        const float* xr = x + n * In;
        const float* wr = w + o * In;
        float s = 0.0f;
        for (int i = 0; i < In; ++i) s = fmaf(xr[i], wr[i], s);
        y[t] = s + b[o];
    }
}

// One thread per dx[n,i] (overwritten).
extern "C" __global__ void linear_backward_data(const float* __restrict__ dy,
                                                const float* __restrict__ w,
                                                float* __restrict__ dx, int N, int In, int Out)
{
    const int total = N * In;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int n = t / In;
        const int i = t - n * In;
        float s = 0.0f;
        for (int o = 0; o < Out; ++o) s = fmaf(dy[n * Out + o], w[o * In + i], s);
        dx[t] = s;
    }
}

// One thread per (o, i) for i in 0..=In: column i == In is the bias gradient, so dW and db come
// out of a single launch. beta = 0 overwrites (no read), beta = 1 accumulates.
extern "C" __global__ void linear_backward_weight(const float* __restrict__ dy,
                                                  const float* __restrict__ x,
                                                  float* __restrict__ dw, float* __restrict__ db,
                                                  int N, int In, int Out, float beta)
{
    const int cols = In + 1;
    const int total = Out * cols;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int o = t / cols;
        const int i = t - o * cols;
        float s = 0.0f;
        if (i < In) {
            for (int n = 0; n < N; ++n) s = fmaf(dy[n * Out + o], x[n * In + i], s);
            float* dst = dw + o * In + i;
            *dst = (beta == 0.0f) ? s : fmaf(beta, *dst, s);
        } else {
            for (int n = 0; n < N; ++n) s += dy[n * Out + o];
            db[o] = (beta == 0.0f) ? s : fmaf(beta, db[o], s);
        }
    }
}
