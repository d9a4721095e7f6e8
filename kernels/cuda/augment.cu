// augment.cu — build a normalised, augmented f32 batch from the uint8 dataset resident on the GPU.
//
// Semantics (the CPU twin: crates/data's write_sample; the launcher:
// crates/tensor/src/augment.rs):
//   for sample b with dataset index idx, crop offsets (ox, oy) in -4..=4 and flip flag f:
//     x' = f ? (W-1-x) : x
//     v  = pix(idx, c, y + oy, x' + ox), or 0 if that pixel lies outside the image
//     out[b,c,y,x] = (v / 255 - mean[c]) / std[c]
//                  computed as v * (1 / (255 std[c])) + (-mean[c] / std[c]), like the CPU twin
//     out_labels[b] = labels[idx]
//   (random crop with 4-pixel zero padding + horizontal flip, then per-channel normalisation.
//   The flip is applied to the output coordinate before the offset, exactly as written above.)
//
// params is int32 [B, 4] = (idx, ox, oy, flip) per sample, drawn on the host by the seeded RNG
// and uploaded with one copy. Evaluation uses (idx, 0, 0, 0).
// images: uint8 [Ndata, 3, H, W] (CHW per image, CIFAR's own layout); labels: uint8 [Ndata].
// One thread per output element, 1-D grid-stride loop. mean/std arrive as scalars (3 channels).

extern "C" __global__ void augment_batch(const unsigned char* __restrict__ images,
                                         const unsigned char* __restrict__ labels,
                                         const int* __restrict__ params,
                                         float* __restrict__ out, int* __restrict__ out_labels,
                                         int B, int H, int W,
                                         float mean0, float mean1, float mean2,
                                         float std0, float std1, float std2)
{
    const int total = B * 3 * H * W;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int x = i % W;
        const int y = (i / W) % H;
        const int c = (i / (W * H)) % 3;
        const int b = i / (W * H * 3);
        const int idx = params[4 * b + 0];
        const int ox = params[4 * b + 1];
        const int oy = params[4 * b + 2];
        const int flip = params[4 * b + 3];
        const int xs = (flip ? (W - 1 - x) : x) + ox;
        const int ys = y + oy;
        const float m = (c == 0) ? mean0 : (c == 1) ? mean1 : mean2;
        const float s = (c == 0) ? std0 : (c == 1) ? std1 : std2;
        // Same arithmetic as the CPU twin (crates/data write_sample), in the same order, so the
        // two agree bit for bit: scale = 1/(255 std), pad = -mean/std, out = pix*scale + pad.
        // __fmul_rn stops nvrtc contracting the multiply-add into an fma (different rounding).
        const float scale = 1.0f / (255.0f * s);
        const float pad = -m / s;
        float v = pad;
        if (xs >= 0 && xs < W && ys >= 0 && ys < H) {
            const float pix = (float)images[(((size_t)idx * 3 + c) * H + ys) * W + xs];
            v = __fmul_rn(pix, scale) + pad;
        }
        out[i] = v;
        if (c == 0 && y == 0 && x == 0) out_labels[b] = (int)labels[idx];
    }
}
