// Multi-token (prefill) paths at the AVX2 level for the default model's block formats (Q8_0,
// Q5_0, Q4_K, Q6_K): each weight row is decoded ONCE per matmul into a per-thread L1 scratch
// (unsigned weight bytes exactly as the one-token kernel feeds them to vpmaddubsw, the per-lane
// int16 scales, the f16 scales as floats), then dotted with every token.
//
// Bit-identical, per token, to the AVX2 one-token kernels (ck_x86_body.h's dot_q8_0, dot_q4_K,
// dot_q6_K built with CK_VNNI 0, and ck_q5.c's ck_q5_0_dot_avx2; batch invariance, issue 6):
// - the int32 lanes are formed by the same instructions on the same bytes (vpmaddubsw, then
//   vpmaddwd with ones or with the lane's int16 scale), and integer sums of them are exact, so
//   hoisting the weight decoding or adding chunks in another order cannot change a lane;
// - the float operations are the same, in the same order, on the same values:
//   Q8_0: block j goes into accumulator j % 4 for j < 4 * (nb / 4), the tail blocks into
//     accumulator 0, acc = fma(set1(d * a.d), float(p), acc), result
//     hsum8((acc0 + acc1) + (acc2 + acc3))  (CK_BLOCKS4);
//   Q5_0: the pair form of ck_q5.c (blocks 2p and 2p + 1 in the two halves of one vector, lanes
//     of eight products, acc[p & 1] = fma(d_w * d_a per half, float(lanes), acc[p & 1]), result
//     hsum8(acc0 + acc1)), from the decoded pair (the same lo and hi bytes, the same d);
//   Q4_K / Q6_K (one activation scale a.d[j] per sub-block j of 32 values): the lanes of
//     sub-blocks 4g..4g+3 as hsub4 sums them (here from weights and activations stored
//     transposed per group, g2_transpose4, so four vpmaddwd products added give the same
//     lanes; the weight scales ride in vpmaddwd before the sum, the one-token kernels multiply
//     after it: the same integers), s = 0, then for g = 0, 1
//     s = fma(a.d[4g..4g+3] twice, float(hsub4_g), s);
//     Q4_K: acc = fma(set1(d), s, acc); accm = fma(set1(dmin), a.d[0..7] * float(kmins), accm);
//     result hsum8(acc) - hsum8(accm);
//     Q6_K: s = fnmadd(32, a.d[0..7] * float(off), s); acc = fma(set1(d), s, acc); hsum8(acc).
//   d and dmin are exact f16 -> f32 conversions, whichever instruction converts them; hsum8 is
//   ck_x86_body.h's sequence. No fast-math, so clang neither contracts nor reassociates.
// Tested with == against ck_dot at the AVX2 level in GemmTests and KGemmTests.
#include <stdlib.h>
#include "ck_internal.h"

// Rows decoded together; a tile stays within G2_TILE_BYTES of L1.
#define G2_ROW_TILE 8
#define G2_TILE_BYTES (24 * 1024)

// One decoded K-quant super-block (256 values), 384 bytes, 32-aligned:
//   u[256]: unsigned weights (Q4_K: sub-block 2c = the low nibbles of qs[32c..32c+31], 2c + 1
//           the high ones; Q6_K: the six-bit values), each group g of four sub-blocks (128
//           bytes, 4g..4g+3) stored transposed by g2_transpose4 (vector i's dword 4h + L =
//           sub-block 4g + L's dword 4h + i), as ck_gemm2_prepare stores the activations;
//   scg[g][16]: the int16 vpmaddwd operand of group g: in dword 4h + L (both halves) the
//           scale of values 16h..16h+15 of sub-block 4g + L (Q4_K: its scale; Q6_K:
//           scales[2(4g + L) + h]);
//   w16[16]: Q4_K: mins m0,m0,m1,m1,...,m7,m7 (kmins operand); Q6_K: the 16 scales;
//   d, dmin: f16 scales as floats.
typedef struct {
    uint8_t u[256];
    int16_t scg[2][16];
    int16_t w16[16];
    float d, dmin;
    uint8_t pad[24];
} g2_ksb;
_Static_assert(sizeof(g2_ksb) == 384, "g2_ksb");

// Decoded bytes per row (rounded up to 32: every row of a tile starts aligned): K-quants nsb
// records; Q5_0 per pair of blocks lo and hi (ck_q5_unpack2_avx2, 64 bytes), then two floats
// per pair (d of both blocks; a missing odd last block has d = 0); Q8_0 |w| and w (64 bytes)
// per block, then the floats.
static size_t g2_row_bytes(uint32_t type, int64_t cols) {
    size_t n;
    switch (type) {
    case CK_Q4_K: case CK_Q6_K: n = (size_t)(cols / 256) * sizeof(g2_ksb); break;
    case CK_Q5_0: n = (size_t)((cols / 32 + 1) / 2) * 72; break;
    case CK_Q8_0: n = (size_t)(cols / 32) * 68; break;
    default: return 0;
    }
    return (n + 31) & ~(size_t)31;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define G2_TARGET __attribute__((target("avx2,fma,f16c")))
#define G2_INLINE static inline __attribute__((always_inline)) G2_TARGET


// ---- decoding (once per row and matmul)

// 4 x 4 dword transpose in both 128-bit lanes: out[i] dword 4h + L = in[L] dword 4h + i. With
// weights and activations both stored this way, lane 4h + L of the four vpmaddubsw/vpmaddwd
// products of a group, added, is the exact sum of sub-block 4g + L's values 16h..16h+15: the
// lane hsub4 forms from untransposed operands (ck_x86_body.h), without its shuffles.
G2_INLINE void g2_transpose4(__m256i v[4]) { CK_TRANSPOSE4_EPI32(_mm256, __m256i, v); }

static G2_TARGET void g2_decode_q4_K(const blk_q4_K *b, int64_t nsb, g2_ksb *o) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < nsb; i++) {
        uint8_t sc[8], m[8];
        ck_kscales8(b[i].scales, sc, m);
        for (int g = 0; g < 2; g++) {
            __m256i v[4];
            for (int k = 0; k < 2; k++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(b[i].qs + 64 * g + 32 * k));
                v[2 * k] = _mm256_and_si256(q, m4);
                v[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            }
            g2_transpose4(v);
            for (int k = 0; k < 4; k++) _mm256_store_si256((__m256i *)(o[i].u + 128 * g + 32 * k), v[k]);
            for (int e = 0; e < 16; e++) o[i].scg[g][e] = sc[4 * g + (e >> 1) % 4];
        }
        for (int j = 0; j < 8; j++) o[i].w16[2 * j] = o[i].w16[2 * j + 1] = m[j];
        o[i].d = ck_h2f_f16c(&b[i].d);
        o[i].dmin = ck_h2f_f16c(&b[i].dmin);
    }
}

static G2_TARGET void g2_decode_q6_K(const blk_q6_K *b, int64_t nsb, g2_ksb *o) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    for (int64_t i = 0; i < nsb; i++) {
        const int8_t *s = b[i].scales;
        for (int h = 0; h < 2; h++) {  // the one-token kernel's q[0..3] of half h: group h
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            __m256i v[4];
            v[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            v[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            g2_transpose4(v);
            for (int k = 0; k < 4; k++) _mm256_store_si256((__m256i *)(o[i].u + 128 * h + 32 * k), v[k]);
            // dword 4hh + L of half hh (values 16hh.. of sub-block 4h + L): scales[2(4h + L) + hh]
            for (int e = 0; e < 16; e++) o[i].scg[h][e] = s[2 * (4 * h + (e >> 1) % 4) + (e >> 3)];
        }
        for (int j = 0; j < 16; j++) o[i].w16[j] = s[j];
        o[i].d = ck_h2f_f16c(&b[i].d);
        o[i].dmin = 0;
    }
}

// Q5_0: per pair of blocks the one-token kernel's lo and hi (ck_q5_unpack2_avx2), then d of
// both blocks as floats (an odd last block pairs with zero bytes and d = 0, as there).
static G2_TARGET void g2_decode_q5_0(const blk_q5_0 *b, int64_t nb, uint8_t *o) {
    const int64_t pairs = (nb + 1) / 2;
    float *d = (float *)(o + 64 * pairs);
    for (int64_t p = 0; p < pairs; p++) {
        const int full = 2 * p + 1 < nb;
        __m256i v, lo, hi;
        __m128i x = ck_q5_load2_avx2((const uint8_t *)&b[2 * p], full, &v);
        ck_q5_unpack2_avx2(x, v, &lo, &hi);
        _mm256_store_si256((__m256i *)(o + 64 * p), lo);
        _mm256_store_si256((__m256i *)(o + 64 * p + 32), hi);
        d[2 * p] = ck_h2f_f16c(&b[2 * p].d);
        d[2 * p + 1] = full ? ck_h2f_f16c(&b[2 * p + 1].d) : 0.0f;
    }
}

// Q8_0: |w| (the unsigned operand), then w (its signs go onto the activations), then d.
static G2_TARGET void g2_decode_q8_0(const blk_q8_0 *b, int64_t nb, uint8_t *o) {
    float *d = (float *)(o + 64 * nb);
    for (int64_t j = 0; j < nb; j++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)b[j].qs);
        _mm256_store_si256((__m256i *)(o + 64 * j), _mm256_sign_epi8(w, w));
        _mm256_store_si256((__m256i *)(o + 64 * j + 32), w);
        d[j] = ck_h2f_f16c(&b[j].d);
    }
}

// ---- dots of one decoded row with N tokens (N a compile-time constant after inlining)

// Super-block i of a decoded K-quant row against N tokens: each token's q8_K block (a[t], its
// quant bytes transposed by ck_gemm2_prepare) and the float sum over the eight sub-blocks j of
// a.d[j] * (the exact int32 lanes of unsigned values x activations x sub-block scale), as the
// one-token kernels form it: per group g of four sub-blocks the lanes q (L, 4 + L: sub-block
// 4g + L, values 0-15 and 16-31) are the sum of the four transposed vectors' vpmaddwd
// products (what hsub4 gives from untransposed ones), s[t] = fma(a.d[4g..4g+3] twice, float(q),
// s[t]) from 0 for g = 0, 1; Q4_K and Q6_K differ only in what they do with it afterwards.
G2_INLINE void g2_ksb_sums(const g2_ksb *sb, const uint8_t *act, size_t stride, int64_t i, int N,
                           const ck_q8k *a[4], __m256 s[4]) {
    for (int t = 0; t < N; t++) { a[t] = (const ck_q8k *)(act + (size_t)t * stride) + i; s[t] = _mm256_setzero_ps(); }
    for (int g = 0; g < 2; g++) {
        const __m256i sc = _mm256_load_si256((const __m256i *)sb->scg[g]);
        __m256i u[4];
        for (int k = 0; k < 4; k++) u[k] = _mm256_load_si256((const __m256i *)(sb->u + 128 * g + 32 * k));
        for (int t = 0; t < N; t++) {
            const int8_t *q = a[t]->q + 128 * g;
            __m256i p[4];
            for (int k = 0; k < 4; k++)
                p[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(u[k], _mm256_loadu_si256((const __m256i *)(q + 32 * k))), sc);
            __m256i qs = _mm256_add_epi32(_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3]));
            s[t] = _mm256_fmadd_ps(_mm256_broadcast_ps((const __m128 *)&a[t]->d[4 * g]), _mm256_cvtepi32_ps(qs), s[t]);
        }
    }
}

G2_INLINE void g2_dot_q4_K(const g2_ksb *sb, int64_t nsb, const uint8_t *act, size_t stride, int N, float *out) {
    __m256 acc[4], accm[4];
    for (int t = 0; t < N; t++) { acc[t] = _mm256_setzero_ps(); accm[t] = _mm256_setzero_ps(); }
    for (int64_t i = 0; i < nsb; i++) {
        const ck_q8k *a[4];
        __m256 s[4];
        g2_ksb_sums(&sb[i], act, stride, i, N, a, s);
        const __m256i md = _mm256_load_si256((const __m256i *)sb[i].w16);
        const __m256 d = _mm256_set1_ps(sb[i].d), dmin = _mm256_set1_ps(sb[i].dmin);
        for (int t = 0; t < N; t++) {
            acc[t] = _mm256_fmadd_ps(d, s[t], acc[t]);
            __m256i km = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[t]->bsums), md);
            accm[t] = _mm256_fmadd_ps(dmin, _mm256_mul_ps(_mm256_loadu_ps(a[t]->d), _mm256_cvtepi32_ps(km)), accm[t]);
        }
    }
    for (int t = 0; t < N; t++) out[t] = ck_hsum8_avx(acc[t]) - ck_hsum8_avx(accm[t]);
}

G2_INLINE void g2_dot_q6_K(const g2_ksb *sb, int64_t nsb, const uint8_t *act, size_t stride, int N, float *out) {
    __m256 acc[4];
    for (int t = 0; t < N; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; i++) {
        const ck_q8k *a[4];
        __m256 s[4];
        g2_ksb_sums(&sb[i], act, stride, i, N, a, s);
        const __m256i sc16 = _mm256_load_si256((const __m256i *)sb[i].w16);
        const __m256 d = _mm256_set1_ps(sb[i].d);
        for (int t = 0; t < N; t++) {
            __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[t]->bsums), sc16);
            __m256 st = _mm256_fnmadd_ps(_mm256_set1_ps(32.0f), _mm256_mul_ps(_mm256_loadu_ps(a[t]->d), _mm256_cvtepi32_ps(off)), s[t]);
            acc[t] = _mm256_fmadd_ps(d, st, acc[t]);
        }
    }
    for (int t = 0; t < N; t++) out[t] = ck_hsum8_avx(acc[t]);
}

// Q5_0 in pair form: decoded pair P (blocks 2P, 2P + 1) against each token's laid-out pair
// (ck_q5pre2, written by ck_q5pre_prepare; an odd last block's pair has zeros for B, as the
// decoded weights and d do), into acc[t][k] (k = P & 1): q5pre2_dot's operations.
#define G2_Q5P(P, k)                                                                            \
    {                                                                                           \
        const __m256i lo = _mm256_load_si256((const __m256i *)(s + 64 * (P)));                  \
        const __m256i hi = _mm256_load_si256((const __m256i *)(s + 64 * (P) + 32));             \
        const __m256 dw = _mm256_set_m128(_mm_set1_ps(dv[2 * (P) + 1]), _mm_set1_ps(dv[2 * (P)])); \
        for (int t = 0; t < N; t++) {                                                           \
            const ck_q5pre2 *pa = (const ck_q5pre2 *)(act + (size_t)t * stride) + (P);          \
            __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)pa->aL)), \
                                           _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)pa->aH))); \
            __m256i q = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)pa->seed), _mm256_madd_epi16(s16, ones)); \
            acc[t][k] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_loadu_ps(pa->as)), _mm256_cvtepi32_ps(q), acc[t][k]); \
        }                                                                                       \
    }

G2_INLINE void g2_dot_q5_0(const uint8_t *s, int64_t nb, const uint8_t *act, size_t stride, int N, float *out) {
    const int64_t pairs = (nb + 1) / 2;
    const float *dv = (const float *)(s + 64 * pairs);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
    for (int t = 0; t < N; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 2 <= pairs; p += 2) { G2_Q5P(p, 0) G2_Q5P(p + 1, 1) }
    if (p < pairs) G2_Q5P(p, 0)
    for (int t = 0; t < N; t++) out[t] = ck_hsum8_avx(_mm256_add_ps(acc[t][0], acc[t][1]));
}
#undef G2_Q5P

// Q8_0: block j of token t into acc[t][j % 4] (tail blocks: acc[t][0]).
#define G2_STEP32(j, k)                                                                         \
    {                                                                                           \
        const __m256i u = _mm256_load_si256((const __m256i *)(s + 64 * (j)));                   \
        const float dw = dv[j];                                                                 \
        for (int t = 0; t < N; t++) {                                                           \
            const ck_q8a *a = (const ck_q8a *)(act + (size_t)t * stride) + (j);                 \
            __m256i qa = _mm256_loadu_si256((const __m256i *)a->q);                             \
            const __m256i w = _mm256_load_si256((const __m256i *)(s + 64 * (j) + 32));          \
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(qa, w)), ones); \
            acc[t][k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a->d), _mm256_cvtepi32_ps(p), acc[t][k]); \
        }                                                                                       \
    }

G2_INLINE void g2_dot_q8_0(const uint8_t *s, int64_t nb, const uint8_t *act, size_t stride, int N, float *out) {
    const float *dv = (const float *)(s + 64 * nb);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][4];
    for (int t = 0; t < N; t++)
        for (int k = 0; k < 4; k++) acc[t][k] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        G2_STEP32(i, 0) G2_STEP32(i + 1, 1) G2_STEP32(i + 2, 2) G2_STEP32(i + 3, 3)
    }
    for (; i < nb; i++) G2_STEP32(i, 0)
    for (int t = 0; t < N; t++)
        out[t] = ck_hsum8_avx(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]), _mm256_add_ps(acc[t][2], acc[t][3])));
}
#undef G2_STEP32

typedef void (*g2_pass_fn)(const uint8_t *s, int64_t nblk, const uint8_t *act, size_t stride, float *y, int64_t y_stride);

// One decoded row times N tokens; results to y[k * y_stride].
#define G2_PASS(name, CALL, N)                                                                  \
    static G2_TARGET void g2_pass_##name##_##N(const uint8_t *s, int64_t nblk, const uint8_t *act, size_t stride, \
                                               float *y, int64_t y_stride) {                     \
        float out[4];                                                                           \
        CALL;                                                                                   \
        for (int k = 0; k < N; k++) y[k * y_stride] = out[k];                                   \
    }
#define N 1
G2_PASS(q4_K, g2_dot_q4_K((const g2_ksb *)s, nblk, act, stride, N, out), 1)
G2_PASS(q6_K, g2_dot_q6_K((const g2_ksb *)s, nblk, act, stride, N, out), 1)
G2_PASS(q5_0, g2_dot_q5_0(s, nblk, act, stride, N, out), 1)
G2_PASS(q8_0, g2_dot_q8_0(s, nblk, act, stride, N, out), 1)
#undef N
#define N 2
G2_PASS(q4_K, g2_dot_q4_K((const g2_ksb *)s, nblk, act, stride, N, out), 2)
G2_PASS(q6_K, g2_dot_q6_K((const g2_ksb *)s, nblk, act, stride, N, out), 2)
G2_PASS(q5_0, g2_dot_q5_0(s, nblk, act, stride, N, out), 2)
G2_PASS(q8_0, g2_dot_q8_0(s, nblk, act, stride, N, out), 2)
#undef N
#define N 3
G2_PASS(q4_K, g2_dot_q4_K((const g2_ksb *)s, nblk, act, stride, N, out), 3)
G2_PASS(q6_K, g2_dot_q6_K((const g2_ksb *)s, nblk, act, stride, N, out), 3)
G2_PASS(q5_0, g2_dot_q5_0(s, nblk, act, stride, N, out), 3)
#undef N
#define N 4
G2_PASS(q4_K, g2_dot_q4_K((const g2_ksb *)s, nblk, act, stride, N, out), 4)
G2_PASS(q6_K, g2_dot_q6_K((const g2_ksb *)s, nblk, act, stride, N, out), 4)
G2_PASS(q5_0, g2_dot_q5_0(s, nblk, act, stride, N, out), 4)
#undef N
#undef G2_PASS

static G2_TARGET void g2_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                              const uint8_t *act, size_t act_stride, int64_t tokens, uint8_t *scratch, float *y,
                              int64_t y_stride) {
    static const g2_pass_fn q4[5] = {0, g2_pass_q4_K_1, g2_pass_q4_K_2, g2_pass_q4_K_3, g2_pass_q4_K_4};
    static const g2_pass_fn q6[5] = {0, g2_pass_q6_K_1, g2_pass_q6_K_2, g2_pass_q6_K_3, g2_pass_q6_K_4};
    static const g2_pass_fn q5[5] = {0, g2_pass_q5_0_1, g2_pass_q5_0_2, g2_pass_q5_0_3, g2_pass_q5_0_4};
    static const g2_pass_fn q8[3] = {0, g2_pass_q8_0_1, g2_pass_q8_0_2};
    const int kquant = type == CK_Q4_K || type == CK_Q6_K;
    const g2_pass_fn *pass = type == CK_Q4_K ? q4 : type == CK_Q6_K ? q6 : type == CK_Q5_0 ? q5 : q8;
    // Tokens per pass: four for the K-quants and Q5_0 (two accumulators per token), two for
    // Q8_0 (four accumulators per token: the one-token kernel's chains).
    const int maxn = kquant || type == CK_Q5_0 ? 4 : 2;
    const int64_t nblk = kquant ? cols / 256 : cols / 32;
    const size_t dec = g2_row_bytes(type, cols);
    const size_t ahead = ck_prefetch_bytes();
    int64_t tile = (int64_t)(G2_TILE_BYTES / dec);
    tile = tile < 1 ? 1 : tile > G2_ROW_TILE ? G2_ROW_TILE : tile;
    for (int64_t rt = r0; rt < r1; rt += tile) {
        const int64_t nr = r1 - rt < tile ? r1 - rt : tile;
        for (int64_t k = 0; k < nr; k++) {
            const uint8_t *row = w + (rt + k) * row_bytes;
            uint8_t *o = scratch + (size_t)k * dec;
            ck_prefetch_row(row, row_bytes, ahead);  // small batches are memory-bound as decode is
            switch (type) {
            case CK_Q4_K: g2_decode_q4_K((const blk_q4_K *)row, nblk, (g2_ksb *)o); break;
            case CK_Q6_K: g2_decode_q6_K((const blk_q6_K *)row, nblk, (g2_ksb *)o); break;
            case CK_Q5_0: g2_decode_q5_0((const blk_q5_0 *)row, nblk, o); break;
            default: g2_decode_q8_0((const blk_q8_0 *)row, nblk, o); break;
            }
        }
        for (int64_t t = 0; t < tokens; t += maxn) {
            const int n = tokens - t < maxn ? (int)(tokens - t) : maxn;
            for (int64_t k = 0; k < nr; k++)
                pass[n](scratch + (size_t)k * dec, nblk, act + (size_t)t * act_stride, act_stride, y + t * y_stride + rt + k, y_stride);
        }
    }
}
#endif

int ck_gemm2_applies(int level, uint32_t type, int64_t cols, int64_t tokens) {
#if defined(__x86_64__)
    // GEMMA_NODE_GEMM=0 / GEMMA_NODE_KGEMM=0 turn the 32-block / K-quant paths off as at the
    // AVX-512 level (A/B measurements; matmul then gives the same bits through the one-token loop).
    static int gemm_off = -1, kgemm_off = -1;
    if (level != CK_LEVEL_AVX2 || !ck_level_supported(CK_LEVEL_AVX2) || tokens < 2 || cols <= 0) return 0;
    if (type == CK_Q4_K || type == CK_Q6_K) return !ck_env_off("GEMMA_NODE_KGEMM", &kgemm_off) && cols % 256 == 0;
    if (type == CK_Q5_0 || type == CK_Q8_0) return !ck_env_off("GEMMA_NODE_GEMM", &gemm_off) && cols % 32 == 0;
    return 0;
#else
    (void)level; (void)type; (void)cols; (void)tokens;
    return 0;
#endif
}

// K-quant activations: each token's quant bytes transposed in place per group of four
// sub-blocks, as the decoded weights are (g2_transpose4); d and bsums stay as they are.
#if defined(__x86_64__)
static G2_TARGET void g2_prepare(uint8_t *act, size_t act_stride, int64_t tokens, int64_t nsb) {
    for (int64_t t = 0; t < tokens; t++) {
        ck_q8k *a = (ck_q8k *)(act + (size_t)t * act_stride);
        for (int64_t i = 0; i < nsb; i++)
            for (int g = 0; g < 2; g++) {
                __m256i v[4];
                for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_si256((const __m256i *)(a[i].q + 128 * g + 32 * k));
                g2_transpose4(v);
                for (int k = 0; k < 4; k++) _mm256_storeu_si256((__m256i *)(a[i].q + 128 * g + 32 * k), v[k]);
            }
    }
}
#endif

void ck_gemm2_prepare(uint32_t type, uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols) {
#if defined(__x86_64__)
    if (type == CK_Q4_K || type == CK_Q6_K) g2_prepare(act, act_stride, tokens, cols / 256);
#else
    (void)type; (void)act; (void)act_stride; (void)tokens; (void)cols;
#endif
}

size_t ck_gemm2_row_bytes(uint32_t type, int64_t cols) {
    size_t dec = g2_row_bytes(type, cols);
    size_t tile = dec ? G2_TILE_BYTES / dec : 1;
    tile = tile < 1 ? 1 : tile > G2_ROW_TILE ? G2_ROW_TILE : tile;
    return (tile * dec + 63) & ~(size_t)63;
}

void ck_gemm2_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                   const uint8_t *act, size_t act_stride, int64_t tokens, void *row_scratch, float *y, int64_t y_stride) {
#if defined(__x86_64__)
    g2_rows(type, w, row_bytes, r0, r1, cols, act, act_stride, tokens, row_scratch, y, y_stride);
#else
    (void)type; (void)w; (void)row_bytes; (void)r0; (void)r1; (void)cols; (void)act; (void)act_stride;
    (void)tokens; (void)row_scratch; (void)y; (void)y_stride;
#endif
}
