// ARM NEON kernels (aarch64): float formats, Q8_0, Q4_0 and Q5_0 with widening int8 multiplies
// (no dotprod extension needed). Other formats use the scalar C kernels on ARM. Written to
// compile on aarch64; this machine is x86, so they are compile-checked only (see KERNELS.md).
#include "ck_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

static float dot_f32(const void *w, const void *act, int64_t n) {
    const float *a = w, *x = act;
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(x + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(x + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(x + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(x + i + 12));
    }
    float acc = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    return acc + ck_scalar_kernel(CK_F32)(a + i, x + i, n - i);
}

static float dot_f16(const void *w, const void *act, int64_t n) {
    const uint16_t *a = w;
    const float *x = act;
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(a + i));
        s0 = vfmaq_f32(s0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(x + i));
        s1 = vfmaq_f32(s1, vcvt_f32_f16(vget_high_f16(h)), vld1q_f32(x + i + 4));
    }
    return vaddvq_f32(vaddq_f32(s0, s1)) + ck_scalar_kernel(CK_F16)(a + i, x + i, n - i);
}

static float dot_bf16(const void *w, const void *act, int64_t n) {
    const uint16_t *a = w;
    const float *x = act;
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(a + i);
        float32x4_t lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        float32x4_t hi = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16));
        s0 = vfmaq_f32(s0, lo, vld1q_f32(x + i));
        s1 = vfmaq_f32(s1, hi, vld1q_f32(x + i + 4));
    }
    return vaddvq_f32(vaddq_f32(s0, s1)) + ck_scalar_kernel(CK_BF16)(a + i, x + i, n - i);
}

// Sum of 32 int8 x int8 products (|products| summed in pairs stay inside int16).
static inline int32_t dot32(int8x16_t w0, int8x16_t w1, const int8_t *q) {
    int8x16_t a0 = vld1q_s8(q), a1 = vld1q_s8(q + 16);
    int16x8_t p0 = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(a0)), vget_high_s8(w0), vget_high_s8(a0));
    int16x8_t p1 = vmlal_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(a1)), vget_high_s8(w1), vget_high_s8(a1));
    return vaddvq_s32(vpadalq_s16(vpaddlq_s16(p0), p1));
}

static float dot_q8_0(const void *w, const void *act, int64_t n) {
    const blk_q8_0 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int32_t s = dot32(vld1q_s8(b[i].qs), vld1q_s8(b[i].qs + 16), a[i].q);
        acc += (float)s * (ck_half_to_float(ck_ld16(&b[i].d)) * a[i].d);
    }
    return acc;
}

static float dot_q4_0(const void *w, const void *act, int64_t n) {
    const blk_q4_0 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        uint8x16_t q = vld1q_u8(b[i].qs);
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF)));
        int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        float d = ck_half_to_float(ck_ld16(&b[i].d));
        acc += (float)dot32(lo, hi, a[i].q) * (d * a[i].d);
        corr += d * a[i].d * (float)a[i].sum;
    }
    return acc - 8.0f * corr;
}

static float dot_q5_0(const void *w, const void *act, int64_t n) {
    const blk_q5_0 *b = w;
    const ck_q8a *a = act;
    static const uint8_t bitsel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t sel = vld1q_u8(bitsel);
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        uint32_t qh = ck_ld32(b[i].qh);
        // Byte j of each half gets bit j of qh (low half) or bit j+16 (high half).
        uint8x16_t h0 = vcombine_u8(vdup_n_u8((uint8_t)qh), vdup_n_u8((uint8_t)(qh >> 8)));
        uint8x16_t h1 = vcombine_u8(vdup_n_u8((uint8_t)(qh >> 16)), vdup_n_u8((uint8_t)(qh >> 24)));
        h0 = vandq_u8(vtstq_u8(h0, sel), vdupq_n_u8(0x10));
        h1 = vandq_u8(vtstq_u8(h1, sel), vdupq_n_u8(0x10));
        uint8x16_t q = vld1q_u8(b[i].qs);
        int8x16_t lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0xF)), h0));
        int8x16_t hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), h1));
        float d = ck_half_to_float(ck_ld16(&b[i].d));
        acc += (float)dot32(lo, hi, a[i].q) * (d * a[i].d);
        corr += d * a[i].d * (float)a[i].sum;
    }
    return acc - 16.0f * corr;
}

float ck_q8_0_f32_neon(const void *w, const float *x, int64_t n) {
    const blk_q8_0 *b = w;
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float32x4_t s = vdupq_n_f32(0);
        for (int k = 0; k < 32; k += 8) {
            int16x8_t v = vmovl_s8(vld1_s8(b[i].qs + k));
            s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_s16(vget_low_s16(v))), vld1q_f32(x + k));
            s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_s16(vget_high_s16(v))), vld1q_f32(x + k + 4));
        }
        acc = vfmaq_n_f32(acc, s, ck_half_to_float(ck_ld16(&b[i].d)));
    }
    return vaddvq_f32(acc);
}

ck_dot_fn ck_neon_kernel(uint32_t type) {
    switch (type) {
    case CK_F32: return dot_f32;
    case CK_F16: return dot_f16;
    case CK_BF16: return dot_bf16;
    case CK_Q8_0: return dot_q8_0;
    case CK_Q4_0: return dot_q4_0;
    case CK_Q5_0: return dot_q5_0;
    default: return 0;
    }
}
#else
ck_dot_fn ck_neon_kernel(uint32_t type) { (void)type; return 0; }
float ck_q8_0_f32_neon(const void *w, const float *x, int64_t n) { return ck_q8_0_f32_scalar(w, x, n); }
#endif
