// ARM NEON kernels (aarch64): F32, F16, BF16, and Q8_0, Q4_0, Q5_0, Q4_K, Q6_K in two flavours
// compiled from one body (ck_neon_body.h): widening int8 multiplies (vmull_s8, baseline
// ARMv8-A) and the ARMv8.2 dot-product instruction (vdotq_s32, per-function target attribute,
// so the file still builds for baseline armv8-a). ck_neon_kernel picks the dot-product flavour
// at run time when the CPU has it (Linux: AT_HWCAP & HWCAP_ASIMDDP; macOS:
// hw.optional.arm.FEAT_DotProd; GEMMA_NODE_NEON_DOTPROD=0 turns it off). Both flavours give
// bit-identical results. Q4_1, Q5_1 and Q5_K use the scalar C kernels on ARM. Tested under
// qemu-aarch64 against the scalar twins by Scripts/test_neon.sh (see KERNELS.md).
#include "ck_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <pthread.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

// GCC 12's arm_neon.h declares vdotq_s32 under arch=armv8.2-a+dotprod and only inlines it into
// functions with at least that; clang takes the feature name.
#if defined(__clang__)
#define CK_DOTPROD __attribute__((target("dotprod")))
#else
#define CK_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

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

// Widening multiplies: int8 x int8 products summed in pairs stay inside int16 (|w| <= 128,
// |a| <= 127: 2 * 128 * 127 = 32512), then widened pairwise to int32.
static inline __attribute__((always_inline)) int32x4_t dot32_mull(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    int16x8_t p0 = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(a0)), vget_high_s8(w0), vget_high_s8(a0));
    int16x8_t p1 = vmlal_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(a1)), vget_high_s8(w1), vget_high_s8(a1));
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}
static inline __attribute__((always_inline)) int32x4_t dot16_mull(int8x16_t w, int8x16_t a) {
    return vpaddlq_s16(vmlal_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), vget_high_s8(w), vget_high_s8(a)));
}
// Dot-product instruction: each int32 lane += four int8 x int8 products.
static inline __attribute__((always_inline)) CK_DOTPROD int32x4_t dot32_sdot(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
}
static inline __attribute__((always_inline)) CK_DOTPROD int32x4_t dot16_sdot(int8x16_t w, int8x16_t a) {
    return vdotq_s32(vdupq_n_s32(0), w, a);
}

#define CK_NT
#define CK_NN(x) x##_mull
#include "ck_neon_body.h"
#undef CK_NT
#undef CK_NN

#define CK_NT CK_DOTPROD
#define CK_NN(x) x##_sdot
#include "ck_neon_body.h"
#undef CK_NT
#undef CK_NN

static pthread_once_t dotprod_once = PTHREAD_ONCE_INIT;
static int dotprod_cpu, dotprod_use;

static void detect_dotprod(void) {
#if defined(__linux__)
    dotprod_cpu = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t len = sizeof v;
    dotprod_cpu = sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0 && v != 0;
#endif
    const char *e = getenv("GEMMA_NODE_NEON_DOTPROD");  // =0: widening-multiply flavour (A/B runs)
    dotprod_use = dotprod_cpu && !(e && e[0] == '0');
}

int ck_neon_dotprod(int which) {
    pthread_once(&dotprod_once, detect_dotprod);
    return which ? dotprod_use : dotprod_cpu;
}

ck_dot_fn ck_neon_kernel_flavour(uint32_t type, int dotprod) {
    switch (type) {
    case CK_F32: return dot_f32;
    case CK_F16: return dot_f16;
    case CK_BF16: return dot_bf16;
    default: return dotprod ? kernel_sdot(type) : kernel_mull(type);
    }
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

ck_dot_fn ck_neon_kernel(uint32_t type) { return ck_neon_kernel_flavour(type, ck_neon_dotprod(1)); }
#else
ck_dot_fn ck_neon_kernel(uint32_t type) { (void)type; return 0; }
int ck_neon_dotprod(int which) { (void)which; return 0; }
ck_dot_fn ck_neon_kernel_flavour(uint32_t type, int dotprod) { (void)type; (void)dotprod; return 0; }
float ck_q8_0_f32_neon(const void *w, const float *x, int64_t n) { return ck_q8_0_f32_scalar(w, x, n); }
#endif
