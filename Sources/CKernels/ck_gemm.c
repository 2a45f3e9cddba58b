// Prefill GEMM for the symmetric 32-block formats (Q8_0, Q5_0) at the AVX-512 VNNI level: each
// weight row is decoded ONCE per matmul into signed int8 pairs of blocks (plus scales and the
// integer correction below) in a per-thread L1 scratch, then dotted with every token. The
// activations are laid out once per matmul as unsigned bytes a + 128 with their scales spread
// over the lanes, so the inner loop per token and 64 values is one vpdpbusd, one convert, one
// multiply and one FMA. sum((a + 128) w) = sum(a w) + 128 sum(w): the -128 sum(w) of each block
// seeds the integer accumulator, so the integer dot is exact, as in the four-token kernels.
#include <stdlib.h>
#include "ck_internal.h"

// GEMMA_NODE_GEMM=0 turns the path off (A/B measurements).
static int getenv_gemm_disabled(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *e = getenv("GEMMA_NODE_GEMM");
        cached = e && e[0] == '0';
    }
    return cached;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define CK_G_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

typedef struct { uint8_t au[64]; float as[16]; } ck_pair_act;            // 128 bytes
typedef struct { int8_t w[64]; float ws[16]; int32_t negc[16]; } ck_pair_w;  // 192 bytes

static inline CK_G_TARGET __m512 g_two_scales(float s0, float s1) {
    return _mm512_mask_broadcastss_ps(_mm512_set1_ps(s0), 0xFF00, _mm_set_ss(s1));
}

static inline CK_G_TARGET __m512i g_two32(const void *p0, const void *p1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p0)),
                              _mm256_loadu_si256((const __m256i *)p1), 1);
}

static inline CK_G_TARGET float g_h2f(const uint16_t *p) { return _cvtsh_ss(ck_ld16(p)); }

// Two Q5_0 blocks as 64 unsigned q (0..31), block 0 in bytes 0-31 (same order as the activations).
static inline CK_G_TARGET __m512i g_q5_0_two(const blk_q5_0 *b0, const blk_q5_0 *b1) {
    __m256i x = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)b1->qs), _mm_loadu_si128((const __m128i *)b0->qs));
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(x), _mm256_srli_epi16(x, 4), 1);
    v = _mm512_and_si512(_mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(0x0F));
    uint64_t hb = (uint64_t)ck_ld32(b0->qh) | (uint64_t)ck_ld32(b1->qh) << 32;
    return _mm512_or_si512(v, _mm512_maskz_mov_epi8((__mmask64)hb, _mm512_set1_epi8(0x10)));
}

static CK_G_TARGET void g_prepare_act(const uint8_t *act, size_t act_stride, int64_t tokens, int64_t pairs,
                                      ck_pair_act *out) {
    for (int64_t t = 0; t < tokens; t++) {
        const ck_q8a *a = (const ck_q8a *)(act + t * act_stride);
        for (int64_t j = 0; j < pairs; j++) {
            __m512i v = _mm512_xor_si512(g_two32(a[2 * j].q, a[2 * j + 1].q), _mm512_set1_epi8((char)0x80));
            _mm512_store_si512((__m512i *)out[t * pairs + j].au, v);
            _mm512_store_ps(out[t * pairs + j].as, g_two_scales(a[2 * j].d, a[2 * j + 1].d));
        }
    }
}

static CK_G_TARGET void g_decode_row(uint32_t type, const uint8_t *row, int64_t pairs, ck_pair_w *pw) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t j = 0; j < pairs; j++) {
        __m512i w;
        float d0, d1;
        if (type == CK_Q5_0) {
            const blk_q5_0 *b = (const blk_q5_0 *)row + 2 * j;
            w = _mm512_sub_epi8(g_q5_0_two(&b[0], &b[1]), _mm512_set1_epi8(16));
            d0 = g_h2f(&b[0].d); d1 = g_h2f(&b[1].d);
        } else {
            const blk_q8_0 *b = (const blk_q8_0 *)row + 2 * j;
            w = g_two32(b[0].qs, b[1].qs);
            d0 = g_h2f(&b[0].d); d1 = g_h2f(&b[1].d);
        }
        __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w);  // sums of four w
        int32_t s0 = _mm512_mask_reduce_add_epi32(0x00FF, s), s1 = _mm512_mask_reduce_add_epi32(0xFF00, s);
        _mm512_store_si512((__m512i *)pw[j].w, w);
        _mm512_store_ps(pw[j].ws, g_two_scales(d0, d1));
        _mm512_store_si512((__m512i *)pw[j].negc,
                           _mm512_mask_set1_epi32(_mm512_maskz_set1_epi32(0x0001, -128 * s0), 0x0100, -128 * s1));
    }
}

static CK_G_TARGET void g_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t pairs,
                               const ck_pair_act *acts, int64_t tokens, ck_pair_w *pw, float *y, int64_t y_stride) {
    for (int64_t r = r0; r < r1; r++) {
        g_decode_row(type, w + r * row_bytes, pairs, pw);
        int64_t t = 0;
        for (; t + 4 <= tokens; t += 4) {
            __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            const ck_pair_act *a0 = acts + t * pairs, *a1 = a0 + pairs, *a2 = a1 + pairs, *a3 = a2 + pairs;
            for (int64_t j = 0; j < pairs; j++) {
                __m512i wv = _mm512_load_si512((const __m512i *)pw[j].w);
                __m512i nc = _mm512_load_si512((const __m512i *)pw[j].negc);
                __m512 ws = _mm512_load_ps(pw[j].ws);
#define G_TOKEN(a, acc)                                                                                   \
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(nc, _mm512_load_si512((const __m512i *)a[j].au), wv)), \
                                      _mm512_mul_ps(ws, _mm512_load_ps(a[j].as)), acc);
                G_TOKEN(a0, acc0) G_TOKEN(a1, acc1) G_TOKEN(a2, acc2) G_TOKEN(a3, acc3)
            }
            y[t * y_stride + r] = _mm512_reduce_add_ps(acc0);
            y[(t + 1) * y_stride + r] = _mm512_reduce_add_ps(acc1);
            y[(t + 2) * y_stride + r] = _mm512_reduce_add_ps(acc2);
            y[(t + 3) * y_stride + r] = _mm512_reduce_add_ps(acc3);
        }
        for (; t < tokens; t++) {
            __m512 acc0 = _mm512_setzero_ps();
            const ck_pair_act *a0 = acts + t * pairs;
            for (int64_t j = 0; j < pairs; j++) {
                __m512i wv = _mm512_load_si512((const __m512i *)pw[j].w);
                __m512i nc = _mm512_load_si512((const __m512i *)pw[j].negc);
                __m512 ws = _mm512_load_ps(pw[j].ws);
                G_TOKEN(a0, acc0)
            }
            y[t * y_stride + r] = _mm512_reduce_add_ps(acc0);
        }
#undef G_TOKEN
    }
}
#endif

int ck_gemm_applies(int level, uint32_t type, int64_t cols, int64_t tokens) {
#if defined(__x86_64__)
    if (getenv_gemm_disabled()) return 0;
    return level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512) && (type == CK_Q5_0 || type == CK_Q8_0) &&
           tokens >= 8 && cols > 0 && cols % 64 == 0;
#else
    (void)level; (void)type; (void)cols; (void)tokens;
    return 0;
#endif
}

size_t ck_gemm_act_bytes(int64_t cols, int64_t tokens) { return (size_t)tokens * (size_t)(cols / 64) * 128; }
size_t ck_gemm_row_bytes(int64_t cols) { return (size_t)(cols / 64) * 192; }

void ck_gemm_prepare(const uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols, void *pairs) {
#if defined(__x86_64__)
    g_prepare_act(act, act_stride, tokens, cols / 64, pairs);
#else
    (void)act; (void)act_stride; (void)tokens; (void)cols; (void)pairs;
#endif
}

void ck_gemm_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                  const void *pairs, int64_t tokens, void *row_scratch, float *y, int64_t y_stride) {
#if defined(__x86_64__)
    g_rows(type, w, row_bytes, r0, r1, cols / 64, pairs, tokens, row_scratch, y, y_stride);
#else
    (void)type; (void)w; (void)row_bytes; (void)r0; (void)r1; (void)cols; (void)pairs; (void)tokens;
    (void)row_scratch; (void)y; (void)y_stride;
#endif
}
