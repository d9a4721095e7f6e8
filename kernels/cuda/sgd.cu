// sgd.cu — one fused SGD-with-momentum step over every parameter of the model.
//
// Semantics (torch.optim.SGD, dampening = 0 / the CPU twin and the launcher in
// crates/tensor/src/sgd/):
//   g'  = g + wd * p                 (wd is per tensor: 0 for BN gamma/beta and biases)
//   buf = mu * buf + g'              (buf starts at zero, which equals torch's buf = g' on step 1)
//   p  -= lr * (nesterov ? g' + mu * buf : buf)
//
// Parameters, gradients and momentum buffers each live in one flat f32 buffer of `total`
// elements. Tensors are contiguous segments: segment s covers [seg_offsets[s], seg_offsets[s+1])
// and has weight decay seg_wd[s]. Each thread finds its segment by binary search over the
// (small, ~60 entry) offset table, so the whole update is a single launch. 1-D grid-stride loop.
//
// sgd_step_tensors does the same over tensors that live in separate buffers (the model's
// parameters as they are): a device table gives each tensor's three addresses, and the tensors
// are laid end to end in a virtual index space by the same offset table, so it is still one
// launch with the same per-element arithmetic. It reads lr from device memory, so a captured
// CUDA graph can replay it with a new learning rate.

__device__ __forceinline__ int find_segment(const int* seg_offsets, int num_segs, int i)
{
    // Largest s with seg_offsets[s] <= i (seg_offsets[0] == 0, seg_offsets[num_segs] == total).
    int lo = 0, hi = num_segs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (seg_offsets[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}

extern "C" __global__ void sgd_step(float* __restrict__ params, const float* __restrict__ grads,
                                    float* __restrict__ bufs,
                                    const int* __restrict__ seg_offsets,
                                    const float* __restrict__ seg_wd, int num_segs, int total,
                                    float lr, float momentum, int nesterov)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const float wd = seg_wd[find_segment(seg_offsets, num_segs, i)];
        const float p = params[i];
        const float g = grads[i] + wd * p;
        const float b = momentum * bufs[i] + g;
        bufs[i] = b;
        const float step = nesterov ? (g + momentum * b) : b;
        params[i] = p - lr * step;
    }
}

// ptrs[3s], ptrs[3s+1], ptrs[3s+2]: parameter, gradient, momentum buffer of tensor s (device
// addresses as integers), each seg_offsets[s+1] - seg_offsets[s] floats long. 1-D grid-stride
// over total = seg_offsets[num_segs].
extern "C" __global__ void sgd_step_tensors(const unsigned long long* __restrict__ ptrs,
                                            const int* __restrict__ seg_offsets,
                                            const float* __restrict__ seg_wd, int num_segs,
                                            int total, const float* __restrict__ lr_ptr,
                                            float momentum, int nesterov)
{
    const float lr = *lr_ptr;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int s = find_segment(seg_offsets, num_segs, i);
        const int j = i - seg_offsets[s];
        float* params = reinterpret_cast<float*>(ptrs[3 * s]);
        const float* grads = reinterpret_cast<const float*>(ptrs[3 * s + 1]);
        float* bufs = reinterpret_cast<float*>(ptrs[3 * s + 2]);
        const float wd = seg_wd[s];
        const float p = params[j];
        const float g = grads[j] + wd * p;
        const float b = momentum * bufs[j] + g;
        bufs[j] = b;
        const float step = nesterov ? (g + momentum * b) : b;
        params[j] = p - lr * step;
    }
}

// Zeroes many tensors in one launch (the gradients before a backward pass, which accumulates):
// tensor s starts at device address ptrs[s] and has seg_offsets[s+1] - seg_offsets[s] floats.
// 1-D grid-stride over total = seg_offsets[num_segs].
extern "C" __global__ void zero_tensors(const unsigned long long* __restrict__ ptrs,
                                        const int* __restrict__ seg_offsets, int num_segs,
                                        int total)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int s = find_segment(seg_offsets, num_segs, i);
        reinterpret_cast<float*>(ptrs[s])[i - seg_offsets[s]] = 0.0f;
    }
}
