// x86 SIMD kernels: the shared body (ck_x86_body.h) compiled for AVX2+FMA and for AVX-512 with
// VNNI, each as per-function target attributes so the rest of the build stays baseline x86-64.
#include "ck_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define CK_f32_ID CK_F32
#define CK_f16_ID CK_F16
#define CK_bf16_ID CK_BF16
#define CK_CAT2(a, b) a##b
#define CK_CAT(a, b) CK_CAT2(a, b)

#define CK_TARGET __attribute__((target("avx2,fma,f16c")))
#define CK_NAME(x) CK_CAT(x, _avx2)
#define CK_VNNI 0
#include "ck_x86_body.h"
#undef CK_TARGET
#undef CK_NAME
#undef CK_VNNI

#define CK_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define CK_NAME(x) CK_CAT(x, _avx512)
#define CK_VNNI 1
#include "ck_x86_body.h"
#undef CK_TARGET
#undef CK_NAME
#undef CK_VNNI

#else
ck_dot_fn ck_kernel_avx2(uint32_t type) { (void)type; return 0; }
ck_dot_fn ck_kernel_avx512(uint32_t type) { (void)type; return 0; }
int ck_quant_act_avx2(uint32_t type, const float *x, int64_t cols, void *out) { return ck_quantize_act(type, x, cols, out); }
int ck_quant_act_avx512(uint32_t type, const float *x, int64_t cols, void *out) { return ck_quantize_act(type, x, cols, out); }
float ck_q8_0_f32_avx2(const void *w, const float *x, int64_t n) { return ck_q8_0_f32_scalar(w, x, n); }
float ck_q8_0_f32_avx512(const void *w, const float *x, int64_t n) { return ck_q8_0_f32_scalar(w, x, n); }
#endif

ck_dot_fn ck_avx2_kernel(uint32_t type) { return ck_kernel_avx2(type); }
ck_dot_fn ck_avx512_kernel(uint32_t type) { return ck_kernel_avx512(type); }
