//! The CUDA kernels of `kernels/cuda/*.cu`, compiled unmodified with the host C++ compiler
//! against a small emulation header (`cuda_emu.h`: one OS thread per CUDA thread, blocks one
//! after another, `__syncthreads` = a barrier, warp shuffles through an exchange buffer) and
//! exposed as `emu_<kernel>(grid, block, args...)`.
//!
//! Pointers are host memory. Each call runs the whole grid before returning. The grid and block
//! should be the [`LaunchConfig`](https://docs.rs/cudarc) the real launcher in
//! `kernels/src/launch` builds; `tests/emulated/` takes them from there and checks every
//! kernel against its Rust CPU twin. See `kernels/README.md`, "Emulated on the CPU".
#![allow(clippy::too_many_arguments)]

/// A grid or block size, `#[repr(C)]` like the emulator's `EmuDim3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Dim3 { x, y, z }
    }
}

// SAFETY contract of every function: each pointer must be valid for the elements the kernel
// touches for the given shape (the same lengths the launcher in kernels/src/launch checks).
extern "C" {
    // elementwise.cu
    pub fn emu_relu_forward(g: Dim3, b: Dim3, x: *const f32, y: *mut f32, n: i32);
    pub fn emu_relu_backward(g: Dim3, b: Dim3, dy: *const f32, y: *const f32, dx: *mut f32, n: i32);
    pub fn emu_add_forward(g: Dim3, b: Dim3, a: *const f32, bb: *const f32, out: *mut f32, n: i32);
    pub fn emu_add_relu_forward(
        g: Dim3,
        b: Dim3,
        a: *const f32,
        bb: *const f32,
        out: *mut f32,
        n: i32,
    );
    pub fn emu_accumulate(g: Dim3, b: Dim3, acc: *mut f32, x: *const f32, n: i32);

    // shortcut.cu
    pub fn emu_shortcut_forward(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        out: *mut f32,
        n: i32,
        cin: i32,
        h: i32,
        w: i32,
        cout: i32,
        oh: i32,
        ow: i32,
        s: i32,
    );
    pub fn emu_shortcut_backward(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        dx: *mut f32,
        n: i32,
        cin: i32,
        h: i32,
        w: i32,
        cout: i32,
        oh: i32,
        ow: i32,
        s: i32,
        beta: f32,
    );

    // pool_fc.cu
    pub fn emu_avgpool_forward(g: Dim3, b: Dim3, x: *const f32, y: *mut f32, nc: i32, hw: i32);
    pub fn emu_avgpool_backward(g: Dim3, b: Dim3, dy: *const f32, dx: *mut f32, nc: i32, hw: i32);
    pub fn emu_linear_forward(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        n: i32,
        fin: i32,
        fout: i32,
    );
    pub fn emu_linear_backward_data(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        fin: i32,
        fout: i32,
    );
    pub fn emu_linear_backward_weight(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        dw: *mut f32,
        db: *mut f32,
        n: i32,
        fin: i32,
        fout: i32,
        beta: f32,
    );

    // batchnorm.cu
    pub fn emu_batchnorm_forward_train_partial(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        hw: i32,
    );
    pub fn emu_batchnorm_forward_train_apply(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        part: *const f32,
        y: *mut f32,
        gamma: *const f32,
        beta: *const f32,
        running_mean: *mut f32,
        running_var: *mut f32,
        save_mean: *mut f32,
        save_invstd: *mut f32,
        n: i32,
        c: i32,
        hw: i32,
        momentum: f32,
        eps: f32,
        relu: i32,
    );
    pub fn emu_batchnorm_forward_eval(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        y: *mut f32,
        gamma: *const f32,
        beta: *const f32,
        running_mean: *const f32,
        running_var: *const f32,
        n: i32,
        c: i32,
        hw: i32,
        eps: f32,
        relu: i32,
    );
    pub fn emu_batchnorm_backward_partial(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        save_mean: *const f32,
        save_invstd: *const f32,
        relu_out: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        hw: i32,
        relu: i32,
    );
    pub fn emu_batchnorm_backward_apply(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        gamma: *const f32,
        save_mean: *const f32,
        save_invstd: *const f32,
        relu_out: *const f32,
        part: *const f32,
        dx: *mut f32,
        dgamma: *mut f32,
        dbeta: *mut f32,
        n: i32,
        c: i32,
        hw: i32,
        relu: i32,
    );

    // conv.cu; the suffix is the tile (kernels::launch::ConvTile)
    pub fn emu_conv2d_forward(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_data(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_weight_partial(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_forward_m32(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_data_m32(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_weight_partial_m32(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_forward_m16(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_data_m16(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_weight_partial_m16(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        k_chunk: i32,
    );
    /// conv_ops.cuh's `n / fast_div(d)` (multiply-high division), for n in [0, 2^31), d >= 1.
    pub fn emu_fast_div(n: i32, d: i32) -> i32;
    pub fn emu_conv2d_split_reduce(
        g: Dim3,
        b: Dim3,
        part: *const f32,
        out: *mut f32,
        len: i32,
        splits: i32,
        beta: f32,
    );

    // conv_bf16.cu (the reduce is conv.cu's); the suffix is the tile (kernels::launch::ConvTile)
    pub fn emu_conv2d_forward_bf16(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_data_bf16(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_weight_partial_bf16(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_forward_bf16_m32(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_data_bf16_m32(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_weight_partial_bf16_m32(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_forward_bf16_m16(
        g: Dim3,
        b: Dim3,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_data_bf16_m16(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        beta: f32,
        k_chunk: i32,
    );
    pub fn emu_conv2d_backward_weight_partial_bf16_m16(
        g: Dim3,
        b: Dim3,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        n: i32,
        c: i32,
        h: i32,
        wd: i32,
        co: i32,
        oh: i32,
        ow: i32,
        ks: i32,
        s: i32,
        p: i32,
        k_chunk: i32,
    );

    // loss.cu
    pub fn emu_softmax_xent_forward_backward(
        g: Dim3,
        b: Dim3,
        logits: *const f32,
        labels: *const i32,
        dlogits: *mut f32,
        loss_acc: *mut f64,
        correct_acc: *mut i32,
        n: i32,
        k: i32,
    );
    pub fn emu_softmax_xent_forward(
        g: Dim3,
        b: Dim3,
        logits: *const f32,
        labels: *const i32,
        loss_acc: *mut f64,
        correct_acc: *mut i32,
        n: i32,
        k: i32,
    );

    // sgd.cu
    pub fn emu_sgd_step(
        g: Dim3,
        b: Dim3,
        params: *mut f32,
        grads: *const f32,
        bufs: *mut f32,
        seg_offsets: *const i32,
        seg_wd: *const f32,
        num_segs: i32,
        total: i32,
        lr: f32,
        momentum: f32,
        nesterov: i32,
    );
    pub fn emu_sgd_step_tensors(
        g: Dim3,
        b: Dim3,
        ptrs: *const u64,
        seg_offsets: *const i32,
        seg_wd: *const f32,
        num_segs: i32,
        total: i32,
        lr_ptr: *const f32,
        momentum: f32,
        nesterov: i32,
    );
    pub fn emu_zero_tensors(
        g: Dim3,
        b: Dim3,
        ptrs: *const u64,
        seg_offsets: *const i32,
        num_segs: i32,
        total: i32,
    );

    // peak.cu
    pub fn emu_peak_mma_bf16(g: Dim3, b: Dim3, out: *mut f32, iters: i32, m: f32);
    pub fn emu_peak_fma_f32(g: Dim3, b: Dim3, out: *mut f32, iters: i32, m: f32);

    // augment.cu
    pub fn emu_augment_batch(
        g: Dim3,
        b: Dim3,
        images: *const u8,
        labels: *const u8,
        params: *const i32,
        out: *mut f32,
        out_labels: *mut i32,
        batch: i32,
        h: i32,
        w: i32,
        mean0: f32,
        mean1: f32,
        mean2: f32,
        std0: f32,
        std1: f32,
        std2: f32,
    );
}
