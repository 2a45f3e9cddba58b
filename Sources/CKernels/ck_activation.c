// Element-wise activations of the MLP: g[i] = gelu_tanh(g[i]) * u[i], written as
// z * sigmoid(2y) = z / (1 + exp(-2y)) with y = sqrt(2/pi) (z + 0.044715 z^3), which equals
// 0.5 z (1 + tanh(y)). Portable C (libm expf) and AVX2 / AVX-512 with a polynomial exp.
// The final-logit soft-cap v = cap tanh(v / cap) (Gemma 2 and 4, over every vocabulary row)
// uses the same exp: tanh(x) = 2 / (1 + exp(-2x)) - 1, a few ulp(1) absolute from tanh near 0
// (the subtraction from 1), so the logits move by at most cap * 6e-7 (LayerOpsTests' bound);
// libm tanhf in the portable twin.
#include <math.h>
#include "ck_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define CK_GELU_C 0.7978845608028654f
#define CK_GELU_A 0.044715f

static void gelu_mul_scalar(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float z = g[i];
        float y = CK_GELU_C * (z + CK_GELU_A * z * z * z);
        float t = -2.0f * y;
        if (t > 88.0f) t = 88.0f;  // exp overflows past ~88.7; z / (1 + e^88) is 0 in f32 terms
        g[i] = z / (1.0f + expf(t)) * u[i];
    }
}

#if defined(__x86_64__)
// exp(x) for x in [-88, 88]: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial
// (Taylor coefficients; truncation error < 2e-8 relative on that interval), times 2^n via scalef.
__attribute__((target("avx512f")))
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f")))
static void gelu_mul_avx512(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 z = _mm512_loadu_ps(g + i);
        __m512 z3 = _mm512_mul_ps(_mm512_mul_ps(z, z), z);
        __m512 y = _mm512_mul_ps(_mm512_set1_ps(CK_GELU_C), _mm512_fmadd_ps(_mm512_set1_ps(CK_GELU_A), z3, z));
        __m512 e = exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), y));
        __m512 gz = _mm512_div_ps(z, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(gz, _mm512_loadu_ps(u + i)));
    }
    if (i < n) {  // the tail through the same vector formula (masked), so no element's result
                  // depends on where it falls in the buffer (batch invariance)
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 z = _mm512_maskz_loadu_ps(m, g + i);
        __m512 z3 = _mm512_mul_ps(_mm512_mul_ps(z, z), z);
        __m512 y = _mm512_mul_ps(_mm512_set1_ps(CK_GELU_C), _mm512_fmadd_ps(_mm512_set1_ps(CK_GELU_A), z3, z));
        __m512 e = exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), y));
        __m512 gz = _mm512_div_ps(z, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(gz, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

__attribute__((target("avx2,fma")))
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // 2^n by building the exponent bits: n in [-126, 127] after the clamp above.
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

__attribute__((target("avx2,fma")))
static void gelu_mul_avx2(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 z = _mm256_loadu_ps(g + i);
        __m256 z3 = _mm256_mul_ps(_mm256_mul_ps(z, z), z);
        __m256 y = _mm256_mul_ps(_mm256_set1_ps(CK_GELU_C), _mm256_fmadd_ps(_mm256_set1_ps(CK_GELU_A), z3, z));
        __m256 e = exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), y));
        __m256 gz = _mm256_div_ps(z, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(gz, _mm256_loadu_ps(u + i)));
    }
    if (i < n) {  // the tail through the same vector formula via a padded copy (batch invariance)
        float tg[8] = {0}, tu[8] = {0};
        for (int64_t k = i; k < n; k++) { tg[k - i] = g[k]; tu[k - i] = u[k]; }
        gelu_mul_avx2(tg, tu, 8);
        for (int64_t k = i; k < n; k++) g[k] = tg[k - i];
    }
}
#endif

static void softcap_scalar(float *v, int64_t n, float cap) {
    for (int64_t i = 0; i < n; i++) v[i] = cap * tanhf(v[i] / cap);
}

#if defined(__x86_64__)
__attribute__((target("avx512f")))
static inline __m512 softcap512(__m512 v, float cap) {
    __m512 e = exp512(_mm512_mul_ps(v, _mm512_set1_ps(-2.0f / cap)));
    __m512 t = _mm512_sub_ps(_mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e)), _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(_mm512_set1_ps(cap), t);
}

__attribute__((target("avx512f")))
static void softcap_avx512(float *v, int64_t n, float cap) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(v + i, softcap512(_mm512_loadu_ps(v + i), cap));
    if (i < n) {  // the same formula, masked: no element's result depends on its position
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(v + i, m, softcap512(_mm512_maskz_loadu_ps(m, v + i), cap));
    }
}

__attribute__((target("avx2,fma")))
static void softcap_avx2(float *v, int64_t n, float cap) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_mul_ps(_mm256_loadu_ps(v + i), _mm256_set1_ps(-2.0f / cap)));
        __m256 t = _mm256_sub_ps(_mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_set1_ps(1.0f));
        _mm256_storeu_ps(v + i, _mm256_mul_ps(_mm256_set1_ps(cap), t));
    }
    if (i < n) {  // through a padded copy, the same formula
        float t[8] = {0};
        for (int64_t k = i; k < n; k++) t[k - i] = v[k];
        softcap_avx2(t, 8, cap);
        for (int64_t k = i; k < n; k++) v[k] = t[k - i];
    }
}
#endif

void ck_softcap(int level, float *v, int64_t n, float cap) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
#if defined(__x86_64__)
    if (level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512)) { softcap_avx512(v, n, cap); return; }
    if ((level == CK_LEVEL_AVX2 || level == CK_LEVEL_AVX512) && ck_level_supported(CK_LEVEL_AVX2)) { softcap_avx2(v, n, cap); return; }
#endif
    softcap_scalar(v, n, cap);
}

void ck_gelu_mul(int level, float *g, const float *u, int64_t n) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
#if defined(__x86_64__)
    if (level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512)) { gelu_mul_avx512(g, u, n); return; }
    if ((level == CK_LEVEL_AVX2 || level == CK_LEVEL_AVX512) && ck_level_supported(CK_LEVEL_AVX2)) { gelu_mul_avx2(g, u, n); return; }
#endif
    gelu_mul_scalar(g, u, n);
}
