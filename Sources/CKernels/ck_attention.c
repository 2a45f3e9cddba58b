// Attention of one query head over a run of cached positions (scores, softmax, weighted sum
// of values) whose rows are f32, f16 or q8_0 (the KV cache's type), the cache's row
// conversions, and a streaming read used to measure memory bandwidth. Portable C twins plus
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

// ---- f16 and q8_0 cache rows (`--kv-type`): q.k reuses the weight kernels that read f16 or
// Q8_0 rows against an f32 vector (dot_f16_*, ck_q8_0_f32_*); the weighted V sum converts each
// row in registers. The scalar functions are the twins the SIMD ones are tested against.

static void axpy_f16_scalar(float w, const void *row, float *o, int64_t n) {
    const uint8_t *v = row;
    for (int64_t i = 0; i < n; i++) o[i] += w * ck_half_to_float(ck_ld16(v + 2 * i));
}

// Each block adds (w * d) * q: the block's scale folded into the weight once, in every path.
static void axpy_q8_0_scalar(float w, const void *row, float *o, int64_t n) {
    const blk_q8_0 *b = row;
    for (int64_t i = 0; i < n / 32; i++, o += 32) {
        const float wd = w * ck_half_to_float(ck_ld16(&b[i].d));
        for (int j = 0; j < 32; j++) o[j] += wd * (float)b[i].qs[j];
    }
}

static float dot_q8_0_scalar_kv(const void *row, const void *q, int64_t n) { return ck_q8_0_f32_scalar(row, q, n); }

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c")))
static void axpy_f16_avx2(float w, const void *row, float *o, int64_t n) {
    const uint8_t *v = row;
    __m256 wv = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + 2 * i)));
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o + i)));
    }
    for (; i < n; i++) o[i] += w * ck_half_to_float(ck_ld16(v + 2 * i));
}

__attribute__((target("avx2,fma,f16c")))
static void axpy_q8_0_avx2(float w, const void *row, float *o, int64_t n) {
    const blk_q8_0 *b = row;
    for (int64_t i = 0; i < n / 32; i++, o += 32) {
        __m256 wd = _mm256_set1_ps(w * ck_half_to_float(ck_ld16(&b[i].d)));
        for (int j = 0; j < 32; j += 8) {
            __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + j))));
            _mm256_storeu_ps(o + j, _mm256_fmadd_ps(wd, x, _mm256_loadu_ps(o + j)));
        }
    }
}

__attribute__((target("avx512f")))
static void axpy_f16_avx512(float w, const void *row, float *o, int64_t n) {
    const uint8_t *v = row;
    __m512 wv = _mm512_set1_ps(w);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v + 2 * i)));
        _mm512_storeu_ps(o + i, _mm512_fmadd_ps(wv, x, _mm512_loadu_ps(o + i)));
    }
    for (; i < n; i++) o[i] += w * ck_half_to_float(ck_ld16(v + 2 * i));
}

__attribute__((target("avx512f")))
static void axpy_q8_0_avx512(float w, const void *row, float *o, int64_t n) {
    const blk_q8_0 *b = row;
    for (int64_t i = 0; i < n / 32; i++, o += 32) {
        __m512 wd = _mm512_set1_ps(w * ck_half_to_float(ck_ld16(&b[i].d)));
        __m512 x0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs)));
        __m512 x1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16))));
        _mm512_storeu_ps(o, _mm512_fmadd_ps(wd, x0, _mm512_loadu_ps(o)));
        _mm512_storeu_ps(o + 16, _mm512_fmadd_ps(wd, x1, _mm512_loadu_ps(o + 16)));
    }
}

static float dot_q8_0_avx2_kv(const void *row, const void *q, int64_t n) { return ck_q8_0_f32_avx2(row, q, n); }
static float dot_q8_0_avx512_kv(const void *row, const void *q, int64_t n) { return ck_q8_0_f32_avx512(row, q, n); }
#endif

static float dot_f32_scalar_kv(const void *row, const void *q, int64_t n) { return dot_scalar(q, row, n); }
static void axpy_f32_scalar_kv(float w, const void *row, float *o, int64_t n) { axpy_scalar(w, row, o, n); }
#if defined(__x86_64__)
static float dot_f32_avx2_kv(const void *row, const void *q, int64_t n) { return dot_avx2(q, row, n); }
static void axpy_f32_avx2_kv(float w, const void *row, float *o, int64_t n) { axpy_avx2(w, row, o, n); }
static float dot_f32_avx512_kv(const void *row, const void *q, int64_t n) { return dot_avx512(q, row, n); }
static void axpy_f32_avx512_kv(float w, const void *row, float *o, int64_t n) { axpy_avx512(w, row, o, n); }
#endif

typedef float (*kv_dot_fn)(const void *row, const void *q, int64_t n);
typedef void (*kv_axpy_fn)(float w, const void *row, float *o, int64_t n);

int64_t ck_kv_row_bytes(int type, int64_t n) {
    switch (type) {
    case CK_F32: return n > 0 ? 4 * n : -1;
    case CK_F16: return n > 0 ? 2 * n : -1;
    case CK_Q8_0: return n > 0 && n % 32 == 0 ? n / 32 * (int64_t)sizeof(blk_q8_0) : -1;
    default: return -1;
    }
}

// Kernels of `level` for cache rows of `type`. NEON runs the scalar twins (as for f32 rows).
static int kv_kernels(int level, int type, kv_dot_fn *dot, kv_axpy_fn *axpy) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
    if (!ck_level_supported(level)) level = CK_LEVEL_SCALAR;
    int x512 = 0, x2 = 0;
#if defined(__x86_64__)
    x512 = level == CK_LEVEL_AVX512;
    x2 = level == CK_LEVEL_AVX2;
#endif
    (void)x512; (void)x2;
    switch (type) {
    case CK_F32:
        *dot = dot_f32_scalar_kv; *axpy = axpy_f32_scalar_kv;
#if defined(__x86_64__)
        if (x512) { *dot = dot_f32_avx512_kv; *axpy = axpy_f32_avx512_kv; }
        if (x2) { *dot = dot_f32_avx2_kv; *axpy = axpy_f32_avx2_kv; }
#endif
        return 0;
    case CK_F16:
        *dot = ck_scalar_kernel(CK_F16); *axpy = axpy_f16_scalar;
#if defined(__x86_64__)
        if (x512) { *dot = ck_avx512_kernel(CK_F16); *axpy = axpy_f16_avx512; }
        if (x2) { *dot = ck_avx2_kernel(CK_F16); *axpy = axpy_f16_avx2; }
#endif
        return *dot ? 0 : -1;
    case CK_Q8_0:
        *dot = dot_q8_0_scalar_kv; *axpy = axpy_q8_0_scalar;
#if defined(__x86_64__)
        if (x512) { *dot = dot_q8_0_avx512_kv; *axpy = axpy_q8_0_avx512; }
        if (x2) { *dot = dot_q8_0_avx2_kv; *axpy = axpy_q8_0_avx2; }
#endif
        return 0;
    default:
        return -1;
    }
}

int ck_attention_head_kv(int level, int type, const float *q, const void *keys, const void *values, int64_t headDim,
                         int64_t rowBytes, int64_t capacity, int64_t first, int64_t last, float scale,
                         float softcap, float *scores, float *out) {
    const int64_t need = ck_kv_row_bytes(type, headDim);
    if (need < 0 || rowBytes < need || capacity <= 0 || first < 0 || last < first || last - first + 1 > capacity) return -1;
    kv_dot_fn dot;
    kv_axpy_fn axpy;
    if (kv_kernels(level, type, &dot, &axpy) != 0) return -1;
    const uint8_t *k = keys, *v = values;
    const int64_t count = last - first + 1;
    float maxScore = -INFINITY;
    int64_t ring = first % capacity;
    for (int64_t j = 0; j < count; j++) {
        float s = dot(k + ring * rowBytes, q, headDim) * scale;
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
        axpy(scores[j] * inv, v + ring * rowBytes, out, headDim);
        if (++ring == capacity) ring = 0;
    }
    return 0;
}

int ck_attention_head(int level, const float *q, const float *keys, const float *values, int64_t headDim,
                      int64_t rowStride, int64_t capacity, int64_t first, int64_t last, float scale,
                      float softcap, float *scores, float *out) {
    if (headDim <= 0 || rowStride < headDim) return -1;
    return ck_attention_head_kv(level, CK_F32, q, keys, values, headDim, rowStride * 4, capacity, first, last, scale,
                                softcap, scores, out);
}

// ---- Storing into and reading back from cache rows.

int ck_kv_store(int type, const float *x, int64_t n, void *out) {
    if (ck_kv_row_bytes(type, n) < 0) return -1;
    switch (type) {
    case CK_F32:
        memcpy(out, x, (size_t)n * 4);
        return 0;
    case CK_F16: {
        uint8_t *h = out;
        for (int64_t i = 0; i < n; i++) {
            // Saturate: a value past the half range is stored as +-65504, not infinity (an
            // infinite key would make every score NaN).
            float f = x[i];
            if (f > 65504.0f) f = 65504.0f;
            if (f < -65504.0f) f = -65504.0f;
            uint16_t v = ck_float_to_half(f);
            memcpy(h + 2 * i, &v, 2);
        }
        return 0;
    }
    case CK_Q8_0: {
        blk_q8_0 *b = out;
        for (int64_t i = 0; i < n / 32; i++) {
            const float *xb = x + 32 * i;
            float amax = 0;
            for (int j = 0; j < 32; j++) if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]);
            // llama.cpp's block_q8_0: d = amax / 127 stored as f16. The values are divided by
            // that f16 d (not the f32 one) so the error is at most half of the stored step.
            uint16_t dh = ck_float_to_half(amax / 127.0f);
            const float d = ck_half_to_float(dh);
            memcpy(&b[i].d, &dh, 2);
            for (int j = 0; j < 32; j++) {
                float r = d > 0 ? rintf(xb[j] / d) : 0.0f;
                if (r > 127.0f) r = 127.0f;
                if (r < -127.0f) r = -127.0f;
                b[i].qs[j] = (int8_t)r;
            }
        }
        return 0;
    }
    default:
        return -1;
    }
}

int ck_kv_load(int type, const void *row, int64_t n, float *out) {
    if (ck_kv_row_bytes(type, n) < 0) return -1;
    switch (type) {
    case CK_F32:
        memcpy(out, row, (size_t)n * 4);
        return 0;
    case CK_F16: {
        const uint8_t *h = row;
        for (int64_t i = 0; i < n; i++) out[i] = ck_half_to_float(ck_ld16(h + 2 * i));
        return 0;
    }
    case CK_Q8_0: {
        const blk_q8_0 *b = row;
        for (int64_t i = 0; i < n / 32; i++) {
            const float d = ck_half_to_float(ck_ld16(&b[i].d));
            for (int j = 0; j < 32; j++) out[32 * i + j] = d * (float)b[i].qs[j];
        }
        return 0;
    }
    default:
        return -1;
    }
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
