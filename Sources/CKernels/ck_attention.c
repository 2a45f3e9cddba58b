// Attention of one query head over a run of cached positions (scores, softmax, weighted sum
// of values) and a streaming read used to measure memory bandwidth. Portable C twins plus
// AVX2 and AVX-512 versions selected by level; the Swift reference lives in GemmaKernels.
#include <math.h>
#include "ck_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// The ring index of position p is p % capacity; the run first...last is walked with an
// incrementing index that wraps, so no division per position.

static float dot_scalar(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float w, const float *v, float *o, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] += w * v[i];
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma")))
static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

__attribute__((target("avx2,fma")))
static void axpy_avx2(float w, const float *v, float *o, int64_t n) {
    __m256 wv = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(o + i)));
    for (; i < n; i++) o[i] += w * v[i];
}

__attribute__((target("avx512f")))
static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    float r = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

__attribute__((target("avx512f")))
static void axpy_avx512(float w, const float *v, float *o, int64_t n) {
    __m512 wv = _mm512_set1_ps(w);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, _mm512_fmadd_ps(wv, _mm512_loadu_ps(v + i), _mm512_loadu_ps(o + i)));
    for (; i < n; i++) o[i] += w * v[i];
}
#endif

typedef float (*dot_fn)(const float *, const float *, int64_t);
typedef void (*axpy_fn)(float, const float *, float *, int64_t);

int ck_attention_head(int level, const float *q, const float *keys, const float *values, int64_t headDim,
                      int64_t rowStride, int64_t capacity, int64_t first, int64_t last, float scale,
                      float softcap, float *scores, float *out) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
    if (headDim <= 0 || capacity <= 0 || first < 0 || last < first || last - first + 1 > capacity) return -1;
    dot_fn dot = dot_scalar;
    axpy_fn axpy = axpy_scalar;
#if defined(__x86_64__)
    if (level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512)) {
        dot = dot_avx512;
        axpy = axpy_avx512;
    } else if ((level == CK_LEVEL_AVX2 || level == CK_LEVEL_AVX512) && ck_level_supported(CK_LEVEL_AVX2)) {
        dot = dot_avx2;
        axpy = axpy_avx2;
    }
#endif
    const int64_t count = last - first + 1;
    float maxScore = -INFINITY;
    int64_t ring = first % capacity;
    for (int64_t j = 0; j < count; j++) {
        float s = dot(q, keys + ring * rowStride, headDim) * scale;
        if (softcap > 0) s = softcap * tanhf(s / softcap);
        scores[j] = s;
        if (s > maxScore) maxScore = s;
        if (++ring == capacity) ring = 0;
    }
    float sum = 0;
    for (int64_t j = 0; j < count; j++) {
        scores[j] = expf(scores[j] - maxScore);
        sum += scores[j];
    }
    for (int64_t i = 0; i < headDim; i++) out[i] = 0;
    const float inv = 1.0f / sum;
    ring = first % capacity;
    for (int64_t j = 0; j < count; j++) {
        axpy(scores[j] * inv, values + ring * rowStride, out, headDim);
        if (++ring == capacity) ring = 0;
    }
    return 0;
}

#if defined(__x86_64__)
__attribute__((target("avx512f")))
static double stream_avx512(const float *p, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
    }
    double r = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) r += p[i];
    return r;
}

__attribute__((target("avx2")))
static double stream_avx2(const float *p, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    float t[8];
    _mm256_storeu_ps(t, s);
    double r = 0;
    for (int k = 0; k < 8; k++) r += t[k];
    for (; i < n; i++) r += p[i];
    return r;
}
#endif

double ck_stream_sum(const float *p, int64_t n) {
#if defined(__x86_64__)
    int level = ck_active_level();
    if (level == CK_LEVEL_AVX512) return stream_avx512(p, n);
    if (level == CK_LEVEL_AVX2) return stream_avx2(p, n);
#endif
    // Four independent sums so the scalar loop is not bound by one add chain.
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) { s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]; }
    double r = (double)s0 + s1 + s2 + s3;
    for (; i < n; i++) r += p[i];
    return r;
}
