// launch_emu.cpp — every kernel of kernels/cuda/*.cu, compiled unmodified for the CPU emulator
// (cuda_emu.h), behind one `extern "C" emu_<kernel>(grid, block, args...)` per kernel.
//
// The grid and block are arguments, not recomputed here: the Rust tests pass exactly the
// LaunchConfig the real launcher in kernels/src/launch/*.rs builds (grid_1d, the conv gemm
// grids, BnShape::chunked_config, ...), so the emulated launch is the launch the GPU gets.
// Each wrapper names the launcher it mirrors. Pointers are host memory; the emulator runs the
// whole grid before returning (like a launch followed by a stream synchronise).

#include "cuda_emu.h"

#include "../cuda/augment.cu"
#include "../cuda/batchnorm.cu"
#include "../cuda/conv.cu"
#include "../cuda/conv_bf16.cu"
#include "../cuda/elementwise.cu"
#include "../cuda/loss.cu"
#include "../cuda/peak.cu"
#include "../cuda/pool_fc.cu"
#include "../cuda/sgd.cu"
#include "../cuda/shortcut.cu"

// Plain C struct for the FFI (dim3 has constructors); Rust's `Dim3` is #[repr(C)] {x, y, z}.
struct EmuDim3 {
    unsigned x, y, z;
};
static dim3 d3(EmuDim3 d) { return dim3(d.x, d.y, d.z); }

#define EMU_LAUNCH(grid, block, call) emu::launch(d3(grid), d3(block), [&] { call; })

extern "C" {

// ---- elementwise.cu — launch/elementwise.rs: grid_1d(n) ----------------------------------------
void emu_relu_forward(EmuDim3 g, EmuDim3 b, const float* x, float* y, int n)
{
    EMU_LAUNCH(g, b, relu_forward(x, y, n));
}
void emu_relu_backward(EmuDim3 g, EmuDim3 b, const float* dy, const float* y, float* dx, int n)
{
    EMU_LAUNCH(g, b, relu_backward(dy, y, dx, n));
}
void emu_add_forward(EmuDim3 g, EmuDim3 b, const float* a, const float* bb, float* out, int n)
{
    EMU_LAUNCH(g, b, add_forward(a, bb, out, n));
}
void emu_add_relu_forward(EmuDim3 g, EmuDim3 b, const float* a, const float* bb, float* out,
                          int n)
{
    EMU_LAUNCH(g, b, add_relu_forward(a, bb, out, n));
}
void emu_accumulate(EmuDim3 g, EmuDim3 b, float* acc, const float* x, int n)
{
    EMU_LAUNCH(g, b, accumulate(acc, x, n));
}

// ---- shortcut.cu — launch/shortcut.rs: grid_1d(y_len) / grid_1d(x_len) --------------------------
void emu_shortcut_forward(EmuDim3 g, EmuDim3 b, const float* x, float* out, int N, int Cin,
                          int H, int W, int Cout, int OH, int OW, int s)
{
    EMU_LAUNCH(g, b, shortcut_forward(x, out, N, Cin, H, W, Cout, OH, OW, s));
}
void emu_shortcut_backward(EmuDim3 g, EmuDim3 b, const float* dy, float* dx, int N, int Cin,
                           int H, int W, int Cout, int OH, int OW, int s, float beta)
{
    EMU_LAUNCH(g, b, shortcut_backward(dy, dx, N, Cin, H, W, Cout, OH, OW, s, beta));
}

// ---- pool_fc.cu — launch/pool_fc.rs: grid_1d(nc), grid_1d(nc*hw), grid_1d(n*out),
// grid_1d(n*in), grid_1d(out*(in+1)) ---------------------------------------------------------------
void emu_avgpool_forward(EmuDim3 g, EmuDim3 b, const float* x, float* y, int NC, int HW)
{
    EMU_LAUNCH(g, b, avgpool_forward(x, y, NC, HW));
}
void emu_avgpool_backward(EmuDim3 g, EmuDim3 b, const float* dy, float* dx, int NC, int HW)
{
    EMU_LAUNCH(g, b, avgpool_backward(dy, dx, NC, HW));
}
void emu_linear_forward(EmuDim3 g, EmuDim3 b, const float* x, const float* w, const float* bias,
                        float* y, int N, int In, int Out)
{
    EMU_LAUNCH(g, b, linear_forward(x, w, bias, y, N, In, Out));
}
void emu_linear_backward_data(EmuDim3 g, EmuDim3 b, const float* dy, const float* w, float* dx,
                              int N, int In, int Out)
{
    EMU_LAUNCH(g, b, linear_backward_data(dy, w, dx, N, In, Out));
}
void emu_linear_backward_weight(EmuDim3 g, EmuDim3 b, const float* dy, const float* x, float* dw,
                                float* db, int N, int In, int Out, float beta)
{
    EMU_LAUNCH(g, b, linear_backward_weight(dy, x, dw, db, N, In, Out, beta));
}

// ---- batchnorm.cu — launch/batchnorm.rs: BnShape::chunked_config (train and backward, both
// launches), grid_1d(len) (eval) ---------------------------------------------------------------
void emu_batchnorm_forward_train_partial(EmuDim3 g, EmuDim3 b, const float* x, float* part, int N,
                                         int C, int HW)
{
    EMU_LAUNCH(g, b, batchnorm_forward_train_partial(x, part, N, C, HW));
}
void emu_batchnorm_forward_train_apply(EmuDim3 g, EmuDim3 b, const float* x, const float* part,
                                       float* y, const float* gamma, const float* beta,
                                       float* running_mean, float* running_var, float* save_mean,
                                       float* save_invstd, int N, int C, int HW, float momentum,
                                       float eps, int relu)
{
    EMU_LAUNCH(g, b,
               batchnorm_forward_train_apply(x, part, y, gamma, beta, running_mean, running_var,
                                             save_mean, save_invstd, N, C, HW, momentum, eps,
                                             relu));
}
void emu_batchnorm_forward_eval(EmuDim3 g, EmuDim3 b, const float* x, float* y,
                                const float* gamma, const float* beta, const float* running_mean,
                                const float* running_var, int N, int C, int HW, float eps,
                                int relu)
{
    EMU_LAUNCH(g, b,
               batchnorm_forward_eval(x, y, gamma, beta, running_mean, running_var, N, C, HW,
                                      eps, relu));
}
void emu_batchnorm_backward_partial(EmuDim3 g, EmuDim3 b, const float* dy, const float* x,
                                    const float* save_mean, const float* save_invstd,
                                    const float* relu_out, float* part, int N, int C, int HW,
                                    int relu)
{
    EMU_LAUNCH(g, b,
               batchnorm_backward_partial(dy, x, save_mean, save_invstd, relu_out, part, N, C, HW,
                                          relu));
}
void emu_batchnorm_backward_apply(EmuDim3 g, EmuDim3 b, const float* dy, const float* x,
                                  const float* gamma, const float* save_mean,
                                  const float* save_invstd, const float* relu_out,
                                  const float* part, float* dx, float* dgamma, float* dbeta, int N,
                                  int C, int HW, int relu)
{
    EMU_LAUNCH(g, b,
               batchnorm_backward_apply(dy, x, gamma, save_mean, save_invstd, relu_out, part, dx,
                                        dgamma, dbeta, N, C, HW, relu));
}

// ---- conv.cu — launch/conv_plan.rs: conv2d_forward_config / conv2d_backward_data_config /
// conv2d_backward_weight_config (tile by ConvTile::for_rows; grid z = the splits of
// ConvShape::forward_plan / backward_data_plan / weight_grad_plan) -------------------------------
void emu_conv2d_forward(EmuDim3 g, EmuDim3 b, const float* x, const float* w, float* y,
                            int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                            int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b, conv2d_forward(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk));
}
void emu_conv2d_backward_data(EmuDim3 g, EmuDim3 b, const float* dy, const float* w,
                                  float* dx, int N, int C, int H, int W, int CO, int OH, int OW,
                                  int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_data(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk));
}
void emu_conv2d_backward_weight_partial(EmuDim3 g, EmuDim3 b, const float* dy,
                                            const float* x, float* part, int N, int C, int H,
                                            int W, int CO, int OH, int OW, int KS, int S, int P,
                                            int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_weight_partial(dy, x, part, N, C, H, W, CO, OH, OW, KS, S, P,
                                                  k_chunk));
}
void emu_conv2d_forward_m32(EmuDim3 g, EmuDim3 b, const float* x, const float* w, float* y,
                            int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                            int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b, conv2d_forward_m32(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk));
}
void emu_conv2d_backward_data_m32(EmuDim3 g, EmuDim3 b, const float* dy, const float* w,
                                  float* dx, int N, int C, int H, int W, int CO, int OH, int OW,
                                  int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_data_m32(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                        k_chunk));
}
void emu_conv2d_backward_weight_partial_m32(EmuDim3 g, EmuDim3 b, const float* dy,
                                            const float* x, float* part, int N, int C, int H,
                                            int W, int CO, int OH, int OW, int KS, int S, int P,
                                            int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_weight_partial_m32(dy, x, part, N, C, H, W, CO, OH, OW, KS, S, P,
                                                  k_chunk));
}
void emu_conv2d_forward_m16(EmuDim3 g, EmuDim3 b, const float* x, const float* w, float* y,
                            int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                            int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b, conv2d_forward_m16(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk));
}
void emu_conv2d_backward_data_m16(EmuDim3 g, EmuDim3 b, const float* dy, const float* w,
                                  float* dx, int N, int C, int H, int W, int CO, int OH, int OW,
                                  int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_data_m16(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                        k_chunk));
}
void emu_conv2d_backward_weight_partial_m16(EmuDim3 g, EmuDim3 b, const float* dy,
                                            const float* x, float* part, int N, int C, int H,
                                            int W, int CO, int OH, int OW, int KS, int S, int P,
                                            int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_weight_partial_m16(dy, x, part, N, C, H, W, CO, OH, OW, KS, S, P,
                                                  k_chunk));
}
// launch/conv.rs: grid_1d(len), issued right after a split GEMM's launch.
void emu_conv2d_split_reduce(EmuDim3 g, EmuDim3 b, const float* part, float* out, int len,
                             int splits, float beta)
{
    EMU_LAUNCH(g, b, conv2d_split_reduce(part, out, len, splits, beta));
}
// conv_ops.cuh's FastDiv, a device helper rather than a kernel: n / fast_div(d).
int emu_fast_div(int n, int d)
{
    return n / fast_div(d);
}

// ---- conv_bf16.cu — the same configs, block = CONV_BF16_THREADS, tile by ConvTile::for_rows;
// the reduce is conv.cu's ----------------------------------------------------------------------
void emu_conv2d_forward_bf16(EmuDim3 g, EmuDim3 b, const float* x, const float* w,
                                 float* y, int N, int C, int H, int W, int CO, int OH, int OW,
                                 int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b, conv2d_forward_bf16(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk));
}
void emu_conv2d_backward_data_bf16(EmuDim3 g, EmuDim3 b, const float* dy, const float* w,
                                       float* dx, int N, int C, int H, int W, int CO, int OH,
                                       int OW, int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_data_bf16(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                         k_chunk));
}
void emu_conv2d_backward_weight_partial_bf16(EmuDim3 g, EmuDim3 b, const float* dy,
                                                 const float* x, float* part, int N, int C,
                                                 int H, int W, int CO, int OH, int OW, int KS,
                                                 int S, int P, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_weight_partial_bf16(dy, x, part, N, C, H, W, CO, OH, OW, KS,
                                                       S, P, k_chunk));
}
void emu_conv2d_forward_bf16_m32(EmuDim3 g, EmuDim3 b, const float* x, const float* w,
                                 float* y, int N, int C, int H, int W, int CO, int OH, int OW,
                                 int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b, conv2d_forward_bf16_m32(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                             k_chunk));
}
void emu_conv2d_backward_data_bf16_m32(EmuDim3 g, EmuDim3 b, const float* dy, const float* w,
                                       float* dx, int N, int C, int H, int W, int CO, int OH,
                                       int OW, int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_data_bf16_m32(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                             k_chunk));
}
void emu_conv2d_backward_weight_partial_bf16_m32(EmuDim3 g, EmuDim3 b, const float* dy,
                                                 const float* x, float* part, int N, int C,
                                                 int H, int W, int CO, int OH, int OW, int KS,
                                                 int S, int P, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_weight_partial_bf16_m32(dy, x, part, N, C, H, W, CO, OH, OW, KS,
                                                       S, P, k_chunk));
}
void emu_conv2d_forward_bf16_m16(EmuDim3 g, EmuDim3 b, const float* x, const float* w,
                                 float* y, int N, int C, int H, int W, int CO, int OH, int OW,
                                 int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b, conv2d_forward_bf16_m16(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                             k_chunk));
}
void emu_conv2d_backward_data_bf16_m16(EmuDim3 g, EmuDim3 b, const float* dy, const float* w,
                                       float* dx, int N, int C, int H, int W, int CO, int OH,
                                       int OW, int KS, int S, int P, float beta, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_data_bf16_m16(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                             k_chunk));
}
void emu_conv2d_backward_weight_partial_bf16_m16(EmuDim3 g, EmuDim3 b, const float* dy,
                                                 const float* x, float* part, int N, int C,
                                                 int H, int W, int CO, int OH, int OW, int KS,
                                                 int S, int P, int k_chunk)
{
    EMU_LAUNCH(g, b,
               conv2d_backward_weight_partial_bf16_m16(dy, x, part, N, C, H, W, CO, OH, OW, KS,
                                                       S, P, k_chunk));
}

// ---- loss.cu — launch/loss.rs: xent_config() = grid 1, block XENT_THREADS ---------------------
void emu_softmax_xent_forward_backward(EmuDim3 g, EmuDim3 b, const float* logits,
                                       const int* labels, float* dlogits, double* loss_acc,
                                       int* correct_acc, int N, int K)
{
    EMU_LAUNCH(g, b,
               softmax_xent_forward_backward(logits, labels, dlogits, loss_acc, correct_acc, N,
                                             K));
}
void emu_softmax_xent_forward(EmuDim3 g, EmuDim3 b, const float* logits, const int* labels,
                              double* loss_acc, int* correct_acc, int N, int K)
{
    EMU_LAUNCH(g, b, softmax_xent_forward(logits, labels, loss_acc, correct_acc, N, K));
}

// ---- sgd.cu — launch/sgd.rs: grid_1d(total) ----------------------------------------------------
void emu_sgd_step(EmuDim3 g, EmuDim3 b, float* params, const float* grads, float* bufs,
                  const int* seg_offsets, const float* seg_wd, int num_segs, int total, float lr,
                  float momentum, int nesterov)
{
    EMU_LAUNCH(g, b,
               sgd_step(params, grads, bufs, seg_offsets, seg_wd, num_segs, total, lr, momentum,
                        nesterov));
}
// launch/sgd.rs sgd_step_tensors: grid_1d(total); `ptrs` holds host addresses here.
void emu_sgd_step_tensors(EmuDim3 g, EmuDim3 b, const unsigned long long* ptrs,
                          const int* seg_offsets, const float* seg_wd, int num_segs, int total,
                          const float* lr_ptr, float momentum, int nesterov)
{
    EMU_LAUNCH(g, b,
               sgd_step_tensors(ptrs, seg_offsets, seg_wd, num_segs, total, lr_ptr, momentum,
                                nesterov));
}

// launch/sgd.rs zero_tensors: grid_1d(total); `ptrs` holds host addresses here.
void emu_zero_tensors(EmuDim3 g, EmuDim3 b, const unsigned long long* ptrs,
                      const int* seg_offsets, int num_segs, int total)
{
    EMU_LAUNCH(g, b, zero_tensors(ptrs, seg_offsets, num_segs, total));
}

// ---- peak.cu — launch/peak.rs: grid = out_len / PEAK_THREADS, block = PEAK_THREADS -------------
void emu_peak_mma_bf16(EmuDim3 g, EmuDim3 b, float* out, int iters, float m)
{
    EMU_LAUNCH(g, b, peak_mma_bf16(out, iters, m));
}
void emu_peak_fma_f32(EmuDim3 g, EmuDim3 b, float* out, int iters, float m)
{
    EMU_LAUNCH(g, b, peak_fma_f32(out, iters, m));
}

// ---- augment.cu — launch/augment.rs: grid_1d(batch*3*h*w) ---------------------------------------
void emu_augment_batch(EmuDim3 g, EmuDim3 b, const unsigned char* images,
                       const unsigned char* labels, const int* params, float* out,
                       int* out_labels, int B, int H, int W, float mean0, float mean1,
                       float mean2, float std0, float std1, float std2)
{
    EMU_LAUNCH(g, b,
               augment_batch(images, labels, params, out, out_labels, B, H, W, mean0, mean1,
                             mean2, std0, std1, std2));
}

}  // extern "C"
