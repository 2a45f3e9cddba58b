// Multi-token (prefill) path for the K-quants Q4_K and Q6_K at the AVX-512 VNNI level: each
// weight super-block is decoded ONCE per matmul (nibbles / six-bit values as unsigned bytes,
// the reduced-lane scale vector, the min/offset multipliers, the f16 scales as floats) into a
// per-thread L1 scratch, then dotted with every token, four tokens per pass.
//
// Bit-identical, per token, to the one-token kernels dot_q4_K_512 / dot_q6_K_512 in
// ck_x86_body.h (batch invariance, issue 6). Per super-block those kernels form, per 64-value
// chunk c, p_c = vpdpbusd(0, u_c, a.q[64c..]) (exact int32), sum the four chunks down to 16
// lanes with red4 (lane 4k + c = chunk c's 128-bit lane k), multiply by the weight scale of
// each lane (mullo), and then do, in this order, with ad = a.d[0..7]:
//   s = float(P) * ad[sub]            sub = CK_RED4_SUB (lane 4k + c -> sub-block 2c + (k >> 1))
//   Q4_K: acc  = fma(d, s, acc); accm = fma(dmin, ad * float(kmins), accm)   (accm: 8 lanes)
//         result = reduce_add(acc) - hsum8(accm)
//   Q6_K: acc = fma(d, s, acc); acco = fma(d, ad * float(off), acco)
//         result = reduce_add(acc) - 32 * hsum8(acco)
// The code below performs exactly these float operations on exactly these lane values; only
// the weight-side decoding (unsigned bytes, the permuted weight scales) is hoisted out of the
// token loop, and the integer lanes are formed without red4: red4's lane 4k + c is the sum of
// dwords 4k..4k+3 of p_c (16 products: chunk c's 128-bit lane k). Both operands are stored
// transposed per 128-bit lane (kg_transpose: vector i's dword 4k + c = chunk c's dword 4k + i,
// the weights once per row and matmul, the activations once per token and matmul, in place in
// the matmul's own activation scratch), so four chained vpdpbusd put exactly those 16 products
// into lane 4k + c. Integer sums are exact, so the lanes equal red4's: nine shuffles and adds
// per (row, token, super-block) fewer.
// hsum8 is the same sequence as ck_x86_body.h's (halves, movehl, movehdup), and
// _mm512_reduce_add_ps the same intrinsic. Tested with == in KGemmTests.
#include <stdlib.h>
#include "ck_internal.h"

// GEMMA_NODE_KGEMM=0 turns the path off (A/B measurements): matmul then runs the one-token
// kernel per (row, token), which gives the same bits.
#if defined(__x86_64__)  // only the x86 paths read it
static int kgemm_disabled(void) {
    static int cached = -1;
    return ck_env_off("GEMMA_NODE_KGEMM", &cached);
}
#endif

// Rows decoded together: a pass of four tokens then reuses their activations (320 bytes per
// token and super-block, from L2 for long prompts) across this many rows from L1 (8 measured
// alike). Longer rows get fewer rows per tile, so the decoded tile stays within KG_TILE_BYTES.
#define KG_ROW_TILE 4
#define KG_TILE_BYTES (24 * 1024)

// One decoded super-block (256 values), 384 bytes, 64-aligned:
//   u[i]   [64] uint8: vpdpbusd's unsigned operands, transposed (kg_transpose) from the
//          chunks c (Q4_K: nibbles of qs[32c..32c+31], low then high; Q6_K: the six-bit values
//          of half c/2, values 64(c&1).. of that half), which go with activation bytes
//          a.q[64c..64c+63] (transposed the same way by ck_gemmk_prepare);
//   sc32   [16] int32: the weight scale of red4's lane 4k + c (Q4_K: sc[2c + (k >> 1)];
//          Q6_K: scales[4c + k]);
//   w16    [16] int16: Q4_K: mins m0,m0,m1,m1,...,m7,m7 (kmins operand); Q6_K: the 16 scales;
//   d, dmin: f16 scales as floats (exact conversions).
typedef struct {
    uint8_t u[4][64];
    int32_t sc32[16];
    int16_t w16[16];
    float d, dmin;
    uint8_t pad[24];
} ck_ksb;
_Static_assert(sizeof(ck_ksb) == 384, "ck_ksb");

#if defined(__x86_64__)
#include <immintrin.h>

#define KG_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define KG_INLINE static inline __attribute__((always_inline)) KG_TARGET

// The same lane maps as ck_x86_body.h's CK_RED4_SUB / CK_RED4_GRP.
#define KG_SUB _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7)
#define KG_GRP _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)

// 4 x 4 dword transpose in every 128-bit lane: out[i] dword 4k + c = in[c] dword 4k + i.
KG_INLINE void kg_transpose(__m512i v[4]) { CK_TRANSPOSE4_EPI32(_mm512, __m512i, v); }

static KG_TARGET void kg_decode_q4_K(const blk_q4_K *b, int64_t nsb, ck_ksb *o) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t i = 0; i < nsb; i++) {
        uint8_t sc[8], m[8];
        ck_kscales8(b[i].scales, sc, m);
        __m512i scv = _mm512_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sc));
        __m512i u[4];
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            u[c] = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), m4);
        }
        kg_transpose(u);
        for (int c = 0; c < 4; c++) _mm512_store_si512((__m512i *)o[i].u[c], u[c]);
        _mm512_store_si512((__m512i *)o[i].sc32, _mm512_permutexvar_epi32(KG_SUB, scv));
        __m128i mm = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)m));
        _mm256_store_si256((__m256i *)o[i].w16, _mm256_set_m128i(_mm_unpackhi_epi16(mm, mm), _mm_unpacklo_epi16(mm, mm)));
        o[i].d = ck_h2f_f16c(&b[i].d);
        o[i].dmin = ck_h2f_f16c(&b[i].dmin);
    }
}

static KG_TARGET void kg_decode_q6_K(const blk_q6_K *b, int64_t nsb, ck_ksb *o) {
    for (int64_t i = 0; i < nsb; i++) {
        __m512i u[4];
        for (int h = 0; h < 2; h++) ck_q6_K_half_512(&b[i], h, &u[2 * h], &u[2 * h + 1]);
        kg_transpose(u);
        for (int c = 0; c < 4; c++) _mm512_store_si512((__m512i *)o[i].u[c], u[c]);
        __m128i sc8 = _mm_loadu_si128((const __m128i *)b[i].scales);
        _mm512_store_si512((__m512i *)o[i].sc32, _mm512_permutexvar_epi32(KG_GRP, _mm512_cvtepi8_epi32(sc8)));
        _mm256_store_si256((__m256i *)o[i].w16, _mm256_cvtepi8_epi16(sc8));
        o[i].d = ck_h2f_f16c(&b[i].d);
        o[i].dmin = 0;
    }
}

// One token's scaled float sum s of a decoded super-block (see the header); u and a->q are
// both transposed.
KG_INLINE __m512 kg_sum(const __m512i u[4], __m512i sc32, __m512i sub, const ck_q8k *a, __m256 *ad) {
    *ad = _mm256_loadu_ps(a->d);
    __m512i p = _mm512_setzero_si512();
    for (int i = 0; i < 4; i++) p = _mm512_dpbusd_epi32(p, u[i], _mm512_loadu_si512(a->q + 64 * i));
    __m512i ps = _mm512_mullo_epi32(p, sc32);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(ps), _mm512_permutexvar_ps(sub, _mm512_castps256_ps512(*ad)));
}

// N tokens (1..4, a compile-time constant after inlining) times one decoded row.
KG_INLINE void kg_dot_q4_K(const ck_ksb *sb, int64_t nsb, const uint8_t *act, size_t stride, int N, float *out) {
    const __m512i sub = KG_SUB;
    __m512 acc[4];
    __m256 accm[4];
    for (int t = 0; t < N; t++) { acc[t] = _mm512_setzero_ps(); accm[t] = _mm256_setzero_ps(); }
    for (int64_t i = 0; i < nsb; i++) {
        __m512i u[4];
        for (int c = 0; c < 4; c++) u[c] = _mm512_load_si512(sb[i].u[c]);
        const __m512i sc32 = _mm512_load_si512(sb[i].sc32);
        const __m256i md = _mm256_load_si256((const __m256i *)sb[i].w16);
        const __m512 d = _mm512_set1_ps(sb[i].d);
        const __m256 dmin = _mm256_set1_ps(sb[i].dmin);
        for (int t = 0; t < N; t++) {
            const ck_q8k *a = (const ck_q8k *)(act + (size_t)t * stride) + i;
            __m256 ad;
            const __m512 s = kg_sum(u, sc32, sub, a, &ad);
            acc[t] = _mm512_fmadd_ps(d, s, acc[t]);
            __m256i km = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), md);
            accm[t] = _mm256_fmadd_ps(dmin, _mm256_mul_ps(ad, _mm256_cvtepi32_ps(km)), accm[t]);
        }
    }
    for (int t = 0; t < N; t++) out[t] = _mm512_reduce_add_ps(acc[t]) - ck_hsum8_avx(accm[t]);
}

KG_INLINE void kg_dot_q6_K(const ck_ksb *sb, int64_t nsb, const uint8_t *act, size_t stride, int N, float *out) {
    const __m512i sub = KG_SUB;
    __m512 acc[4];
    __m256 acco[4];
    for (int t = 0; t < N; t++) { acc[t] = _mm512_setzero_ps(); acco[t] = _mm256_setzero_ps(); }
    for (int64_t i = 0; i < nsb; i++) {
        __m512i u[4];
        for (int c = 0; c < 4; c++) u[c] = _mm512_load_si512(sb[i].u[c]);
        const __m512i sc32 = _mm512_load_si512(sb[i].sc32);
        const __m256i sc16 = _mm256_load_si256((const __m256i *)sb[i].w16);
        const __m512 d = _mm512_set1_ps(sb[i].d);
        for (int t = 0; t < N; t++) {
            const ck_q8k *a = (const ck_q8k *)(act + (size_t)t * stride) + i;
            __m256 ad;
            const __m512 s = kg_sum(u, sc32, sub, a, &ad);
            __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), sc16);
            acc[t] = _mm512_fmadd_ps(d, s, acc[t]);
            acco[t] = _mm256_fmadd_ps(_mm512_castps512_ps256(d), _mm256_mul_ps(ad, _mm256_cvtepi32_ps(off)), acco[t]);
        }
    }
    for (int t = 0; t < N; t++) out[t] = _mm512_reduce_add_ps(acc[t]) - 32.0f * ck_hsum8_avx(acco[t]);
}

// One decoded row times N tokens starting at token t0; results to y[(t0 + k) * y_stride + r].
#define KG_PASS(fmt, N)                                                                          \
    static KG_TARGET void kg_pass_##fmt##_##N(const ck_ksb *s, int64_t nsb, const uint8_t *act, size_t stride, \
                                              float *y, int64_t y_stride) {                       \
        float out[4];                                                                            \
        kg_dot_##fmt(s, nsb, act, stride, N, out);                                               \
        for (int k = 0; k < N; k++) y[k * y_stride] = out[k];                                    \
    }
KG_PASS(q4_K, 1) KG_PASS(q4_K, 2) KG_PASS(q4_K, 3) KG_PASS(q4_K, 4)
KG_PASS(q6_K, 1) KG_PASS(q6_K, 2) KG_PASS(q6_K, 3) KG_PASS(q6_K, 4)
#undef KG_PASS

typedef void (*kg_pass_fn)(const ck_ksb *, int64_t, const uint8_t *, size_t, float *, int64_t);

static KG_TARGET void kg_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t nsb,
                              const uint8_t *act, size_t act_stride, int64_t tokens, ck_ksb *scratch, float *y,
                              int64_t y_stride) {
    static const kg_pass_fn q4[5] = {0, kg_pass_q4_K_1, kg_pass_q4_K_2, kg_pass_q4_K_3, kg_pass_q4_K_4};
    static const kg_pass_fn q6[5] = {0, kg_pass_q6_K_1, kg_pass_q6_K_2, kg_pass_q6_K_3, kg_pass_q6_K_4};
    const kg_pass_fn *pass = type == CK_Q4_K ? q4 : q6;
    const size_t ahead = ck_prefetch_bytes();
    int64_t tile = KG_TILE_BYTES / (nsb * (int64_t)sizeof(ck_ksb));
    tile = tile < 1 ? 1 : tile > KG_ROW_TILE ? KG_ROW_TILE : tile;
    for (int64_t rt = r0; rt < r1; rt += tile) {
        const int64_t nr = r1 - rt < tile ? r1 - rt : tile;
        for (int64_t k = 0; k < nr; k++) {
            const uint8_t *row = w + (rt + k) * row_bytes;
            ck_prefetch_row(row, row_bytes, ahead);  // small batches are memory-bound as decode is
            if (type == CK_Q4_K) kg_decode_q4_K((const blk_q4_K *)row, nsb, scratch + k * nsb);
            else kg_decode_q6_K((const blk_q6_K *)row, nsb, scratch + k * nsb);
        }
        for (int64_t t = 0; t < tokens; t += 4) {
            const int n = tokens - t < 4 ? (int)(tokens - t) : 4;
            for (int64_t k = 0; k < nr; k++)
                pass[n](scratch + k * nsb, nsb, act + (size_t)t * act_stride, act_stride, y + t * y_stride + rt + k, y_stride);
        }
    }
}
#endif

int ck_gemmk_applies(int level, uint32_t type, int64_t cols, int64_t tokens) {
#if defined(__x86_64__)
    if (kgemm_disabled()) return 0;
    return level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512) && (type == CK_Q4_K || type == CK_Q6_K) &&
           tokens >= 2 && cols > 0 && cols % 256 == 0;
#else
    (void)level; (void)type; (void)cols; (void)tokens;
    return 0;
#endif
}

// The activations' quant bytes transposed in place, per token and super-block, as the decoded
// weights are (kg_transpose); d and bsums stay as they are.
#if defined(__x86_64__)
static KG_TARGET void kg_prepare(uint8_t *act, size_t act_stride, int64_t tokens, int64_t nsb) {
    for (int64_t t = 0; t < tokens; t++) {
        ck_q8k *a = (ck_q8k *)(act + (size_t)t * act_stride);
        for (int64_t i = 0; i < nsb; i++) {
            __m512i v[4];
            for (int c = 0; c < 4; c++) v[c] = _mm512_loadu_si512(a[i].q + 64 * c);
            kg_transpose(v);
            for (int c = 0; c < 4; c++) _mm512_storeu_si512(a[i].q + 64 * c, v[c]);
        }
    }
}
#endif

void ck_gemmk_prepare(uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols) {
#if defined(__x86_64__)
    kg_prepare(act, act_stride, tokens, cols / 256);
#else
    (void)act; (void)act_stride; (void)tokens; (void)cols;
#endif
}

size_t ck_gemmk_row_bytes(int64_t cols) { return (size_t)KG_ROW_TILE * (size_t)(cols / 256) * sizeof(ck_ksb); }

void ck_gemmk_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                   const uint8_t *act, size_t act_stride, int64_t tokens, void *row_scratch, float *y, int64_t y_stride) {
#if defined(__x86_64__)
    kg_rows(type, w, row_bytes, r0, r1, cols / 256, act, act_stride, tokens, row_scratch, y, y_stride);
#else
    (void)type; (void)w; (void)row_bytes; (void)r0; (void)r1; (void)cols; (void)act; (void)act_stride;
    (void)tokens; (void)row_scratch; (void)y; (void)y_stride;
#endif
}
