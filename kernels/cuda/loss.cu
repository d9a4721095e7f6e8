// loss.cu — softmax cross-entropy over logits [N, K] with int32 labels.
//
// Semantics (PyTorch F.cross_entropy, reduction='mean' / the CPU twin and the launcher in
// crates/tensor/src/loss/):
//   loss_n   = logsumexp(z_n) - z_n[label_n]     (stable: max-shifted)
//   loss     = (1/N) sum_n loss_n
//   dlogits  = (softmax(z_n) - onehot(label_n)) / N
//   correct  = #{ n : argmax_k z_n[k] == label_n }, ties -> lowest index
//
// Results go to device accumulators so the host reads them only when it wants to (e.g. once per
// epoch): loss_acc[0] += sum_n loss_n (a double, so an epoch of batch sums keeps its precision)
// and correct_acc[0] += correct. The host divides by the number of samples it fed.
//
// One block (256 threads) does the whole batch: a thread per row with serial loops over K
// (K = 10 or 100), then a fixed-shape block reduction, then thread 0 adds to the accumulators.
// Deterministic, no atomics. Launch with grid = 1, block = 256.

#define XENT_THREADS 256

struct RowResult {
    float loss;
    int correct;
};

// Processes row n; writes its gradient row when dlogits != 0 (scale = 1/N).
__device__ __forceinline__ RowResult xent_row(const float* z, int label, int K, float* drow,
                                              float scale)
{
    float m = z[0];
    int arg = 0;
    for (int k = 1; k < K; ++k) {
        if (z[k] > m) {  // strict: ties keep the lowest index
            m = z[k];
            arg = k;
        }
    }
    float se = 0.0f;
    for (int k = 0; k < K; ++k) se += expf(z[k] - m);
    RowResult r;
    // log(se) - (z[label] - m), as the CPU twin: forming lse = log(se) + m first rounds it to
    // ulp(m) and loses the loss's low bits when |m| is large (up to ~2e-5 relative at m = 1000).
    r.loss = logf(se) - (z[label] - m);
    r.correct = (arg == label) ? 1 : 0;
    if (drow) {
        const float inv = 1.0f / se;
        for (int k = 0; k < K; ++k) {
            const float p = expf(z[k] - m) * inv;
            drow[k] = (p - (k == label ? 1.0f : 0.0f)) * scale;
        }
    }
    return r;
}

__device__ __forceinline__ void xent_batch(const float* logits, const int* labels, float* dlogits,
                                           double* loss_acc, int* correct_acc, int N, int K)
{
    __shared__ float s_loss[XENT_THREADS];
    __shared__ int s_corr[XENT_THREADS];
    const float scale = 1.0f / (float)N;
    float loss = 0.0f;
    int corr = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        const RowResult r = xent_row(logits + (size_t)n * K, labels[n], K,
                                     dlogits ? dlogits + (size_t)n * K : (float*)0, scale);
        loss += r.loss;
        corr += r.correct;
    }
    s_loss[threadIdx.x] = loss;
    s_corr[threadIdx.x] = corr;
    __syncthreads();
    // Tree reduction; blockDim.x is XENT_THREADS (a power of two).
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            s_loss[threadIdx.x] += s_loss[threadIdx.x + stride];
            s_corr[threadIdx.x] += s_corr[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        loss_acc[0] += (double)s_loss[0];
        correct_acc[0] += s_corr[0];
    }
}

// Training: loss, accuracy and dlogits (overwritten). grid = 1, block = 256.
extern "C" __global__ void __launch_bounds__(XENT_THREADS)
softmax_xent_forward_backward(const float* __restrict__ logits, const int* __restrict__ labels,
                              float* __restrict__ dlogits, double* loss_acc, int* correct_acc,
                              int N, int K)
{
    xent_batch(logits, labels, dlogits, loss_acc, correct_acc, N, K);
}

// Evaluation: loss and accuracy only. grid = 1, block = 256.
extern "C" __global__ void __launch_bounds__(XENT_THREADS)
softmax_xent_forward(const float* __restrict__ logits, const int* __restrict__ labels,
                     double* loss_acc, int* correct_acc, int N, int K)
{
    xent_batch(logits, labels, (float*)0, loss_acc, correct_acc, N, K);
}
