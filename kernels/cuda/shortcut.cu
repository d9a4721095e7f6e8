// shortcut.cu — ResNet "option A" shortcut: strided subsampling plus zero channel padding.
//
// Semantics (the CPU twin and the launcher in crates/tensor/src/shortcut/; note: channels are
// padded at the END, c >= Cin, not split on both sides as some PyTorch CIFAR ports do with
// F.pad):
//   forward:  out[n,c,y,x] = x[n,c,y*s,x*s]  for c < Cin
//                          = 0               for Cin <= c < Cout
//             OH = (H - 1) / s + 1, OW = (W - 1) / s + 1
//   backward: dx[n,c,y*s,x*s] = dy[n,c,y,x]  for c < Cin; every other dx entry is 0.
//
// Both are gathers (one thread per *destination* element), so there are no atomics and no
// separate zero-fill launch. Grid-stride 1-D loops; any grid size is correct.

extern "C" __global__ void shortcut_forward(const float* __restrict__ x, float* __restrict__ out,
                                            int N, int Cin, int H, int W,
                                            int Cout, int OH, int OW, int s)
{
    const int total = N * Cout * OH * OW;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int ox = i % OW;
        const int oy = (i / OW) % OH;
        const int c = (i / (OW * OH)) % Cout;
        const int n = i / (OW * OH * Cout);
        out[i] = (c < Cin) ? x[((n * Cin + c) * H + oy * s) * W + ox * s] : 0.0f;
    }
}

// dx = beta * dx + shortcut_backward(dy). beta = 0 overwrites (dx is not read), beta = 1 adds
// onto a gradient already there (e.g. the residual branch's conv dx).
extern "C" __global__ void shortcut_backward(const float* __restrict__ dy, float* dx,
                                             int N, int Cin, int H, int W,
                                             int Cout, int OH, int OW, int s, float beta)
{
    const int total = N * Cin * H * W;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int ix = i % W;
        const int iy = (i / W) % H;
        const int c = (i / (W * H)) % Cin;
        const int n = i / (W * H * Cin);
        float v = 0.0f;
        if ((iy % s) == 0 && (ix % s) == 0) {
            const int oy = iy / s;
            const int ox = ix / s;
            if (oy < OH && ox < OW) v = dy[((n * Cout + c) * OH + oy) * OW + ox];
        }
        dx[i] = (beta == 0.0f) ? v : fmaf(beta, dx[i], v);
    }
}
