// Q5_0 decode kernels with the activation side laid out once per matmul, bit-identical to the
// one-token kernels of their level: AVX-512 VBMI (Ice Lake and later) to dot_q5_0_512, AVX2 to
// ck_q5_0_dot_avx2 (defined here too: the AVX2 level's pair form, below).
//
// Q5_0 is a third of the default model's layer bytes (q, k, gate, up) and its one-token kernel
// spent ~35 instructions per block pair: 13 to unpack the weights and the rest rebuilding the
// same activation vectors, scales and -16 * sum(a) seeds for every row. Here the activation side
// is laid out once per matmul (ck_q5pre: 64 bytes of a, 16 lane scales, 16 lane seeds per block
// pair), and the two weight blocks come from one masked 44-byte load: vpermb places the 16 quant
// bytes of each block twice (low nibbles for values 0-15, high for 16-31), the fifth bits come
// from the two qh words as one 64-bit mask, and vpermw spreads the two f16 scales over their
// eight lanes each. Everything the result depends on is as in dot_q5_0_512: the same int32
// lanes (four products each, seeded with -16 * sum(a) in lanes 0 and 8), the same scale per
// lane (d_w * d_a, one float product), fma into accumulator (pair & 1), then
// reduce_add(acc0 + acc1). So decode, batched decode and the prefill GEMM (ck_gemm.c, built to
// match dot_q5_0_512) keep giving bit-identical logits.
//
// AVX2: Q5_0 is computed in pair form at this level, by every path (ck_q5_0_dot_avx2 below for
// one token and any block count, q5pre2_dot with the activations laid out, and the prefill GEMM
// in ck_gemm_avx2.c), so they stay bit-identical to each other:
// - blocks go in pairs (2p, 2p + 1), A in the low 128-bit half of every vector, B in the high
//   one (a row's odd last block pairs with zeros); lo = values 0-15 of A | of B, hi = values
//   16-31 (ck_q5_unpack2_avx2, unsigned u = nibble | fifth bit << 4);
// - int32 lane l of a block (lanes 0-3 of its half) = the sum of u * a over its values
//   4l..4l+3 and 16+4l..16+4l+3: vpmaddubsw of lo and of hi, added as int16 (two pair sums of
//   u <= 31 and |a| <= 128 stay below 2^14), then one vpmaddwd with ones, plus -16 * sum(a) in
//   lane 0 (values are u - 16);
// - scale per lane d_w * d_a (one float product), acc[p & 1] = fma(scale, float(lanes),
//   acc[p & 1]), result hsum8(acc0 + acc1).
// Earlier each block's 32 values went through its own vpmaddwd, conversion and fma (eight
// lanes of four products); adding lo's and hi's products as int16 first halves those three
// per pair: the laid-out kernel read 18.6-20.8 GB/s L2-resident on Zen 5 against 16.7-18.8.
#include <stdlib.h>
#include "ck_internal.h"

typedef struct { int8_t a[64]; float as[16]; int32_t seed[16]; } ck_q5pre;  // 192 bytes

// AVX2: one ck_q5pre2 (ck_internal.h) per block pair, the odd last block paired with zeros.
size_t ck_q5pre_bytes(int level, int64_t cols) {
    if (level == CK_LEVEL_AVX2) return (size_t)((cols / 32 + 1) / 2) * sizeof(ck_q5pre2);
    return (size_t)(cols / 64) * sizeof(ck_q5pre);
}

#if defined(__x86_64__)
#include <immintrin.h>

#define CK_Q5_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))

#define CK_Q5_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

// GEMMA_NODE_Q5PRE=0 turns both decode paths off (A/B runs; the AVX2 prefill GEMM reads the
// laid-out form regardless). VBMI: the AVX-512 level, whole block pairs. AVX2: any whole number
// of blocks (an odd last block as in ck_q5_0_dot_avx2).
int ck_q5pre_applies(int level, uint32_t type, int64_t cols) {
    static int off = -1, vbmi = -1;
    if (vbmi < 0) {
        __builtin_cpu_init();
        vbmi = __builtin_cpu_supports("avx512vbmi") != 0;
    }
    if (type != CK_Q5_0 || cols <= 0 || ck_env_off("GEMMA_NODE_Q5PRE", &off) || !ck_level_supported(level)) return 0;
    if (level == CK_LEVEL_AVX512) return vbmi && cols % 64 == 0;
    if (level == CK_LEVEL_AVX2) return cols % 32 == 0;
    return 0;
}

void ck_q5pre_prepare(int level, const void *act, int64_t cols, void *out) {
    const ck_q8a *a = act;
    if (level == CK_LEVEL_AVX2) {
        ck_q5pre2 *o = out;
        const int64_t nb = cols / 32;
        for (int64_t j = 0; j < (nb + 1) / 2; j++) {
            const ck_q8a *a0 = &a[2 * j], *a1 = 2 * j + 1 < nb ? &a[2 * j + 1] : NULL;
            memset(&o[j], 0, sizeof o[j]);
            memcpy(o[j].aL, a0->q, 16);
            memcpy(o[j].aH, a0->q + 16, 16);
            for (int l = 0; l < 4; l++) o[j].as[l] = a0->d;
            o[j].seed[0] = -16 * a0->sum;
            if (a1) {
                memcpy(o[j].aL + 16, a1->q, 16);
                memcpy(o[j].aH + 16, a1->q + 16, 16);
                for (int l = 4; l < 8; l++) o[j].as[l] = a1->d;
                o[j].seed[4] = -16 * a1->sum;
            }
        }
        return;
    }
    ck_q5pre *o = out;
    for (int64_t j = 0; j < cols / 64; j++) {
        const ck_q8a *a0 = &a[2 * j], *a1 = &a[2 * j + 1];
        memcpy(o[j].a, a0->q, 32);
        memcpy(o[j].a + 32, a1->q, 32);
        for (int l = 0; l < 16; l++) {
            o[j].as[l] = l < 8 ? a0->d : a1->d;
            o[j].seed[l] = 0;
        }
        o[j].seed[0] = -16 * a0->sum;
        o[j].seed[8] = -16 * a1->sum;
    }
}

// One pair of blocks in pair form (see the top of the file); acc += scale * float(lanes).
#define Q5_PAIR2(x, v, aL, aH, seed, as, acc) {                                                 \
        __m256i lo, hi;                                                                          \
        ck_q5_unpack2_avx2(x, v, &lo, &hi);                                                      \
        __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, aL), _mm256_maddubs_epi16(hi, aH)); \
        __m256i s = _mm256_add_epi32(seed, _mm256_madd_epi16(s16, ones));                        \
        __m256 sc = _mm256_mul_ps(_mm256_permutevar8x32_ps(_mm256_cvtph_ps(x), d_idx), as);      \
        acc = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(s), acc); }

CK_Q5_AVX2_TARGET static float q5pre2_dot(const void *w, const void *pre, int64_t cols) {
    const uint8_t *row = w;
    const ck_q5pre2 *p = pre;
    const int64_t nb = cols / 32, full = nb / 2;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i d_idx = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);  // halves 0 and 4 of x: the two d
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
#define Q5_PRE(j, acc) {                                                                         \
        __m256i v;                                                                               \
        __m128i x = ck_q5_load2_avx2(row + 44 * (j), 1, &v);                                     \
        Q5_PAIR2(x, v, _mm256_load_si256((const __m256i *)p[j].aL), _mm256_load_si256((const __m256i *)p[j].aH), \
                 _mm256_load_si256((const __m256i *)p[j].seed), _mm256_load_ps(p[j].as), acc) }
    int64_t j = 0;
    for (; j + 2 <= full; j += 2) { Q5_PRE(j, acc0); Q5_PRE(j + 1, acc1); }
    if (j < full) { Q5_PRE(j, acc0); j++; }
#undef Q5_PRE
    if (nb & 1) {  // the odd last block: its own bytes only (B is zeros in p[j] and here)
        __m256i v;
        __m128i x = ck_q5_load2_avx2(row + 44 * j, 0, &v);
        __m256i aL = _mm256_load_si256((const __m256i *)p[j].aL), aH = _mm256_load_si256((const __m256i *)p[j].aH);
        __m256i seed = _mm256_load_si256((const __m256i *)p[j].seed);
        __m256 as = _mm256_load_ps(p[j].as);
        if (j & 1) Q5_PAIR2(x, v, aL, aH, seed, as, acc1) else Q5_PAIR2(x, v, aL, aH, seed, as, acc0)
    }
    return ck_hsum8_avx(_mm256_add_ps(acc0, acc1));
}

// The one-token AVX2 Q5_0 kernel (ck_kernel's Q5_0 at this level): pair form with the
// activation vectors built per pair from the two ck_q8a blocks.
CK_Q5_AVX2_TARGET float ck_q5_0_dot_avx2(const void *w, const void *act, int64_t n) {
    const uint8_t *row = w;
    const ck_q8a *a = act;
    const int64_t nb = n / 32, full = nb / 2;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i d_idx = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
#define Q5_ONE(j, acc) {                                                                         \
        const ck_q8a *a0 = &a[2 * (j)], *a1 = &a[2 * (j) + 1];                                   \
        __m256i v;                                                                               \
        __m128i x = ck_q5_load2_avx2(row + 44 * (j), 1, &v);                                     \
        __m256i aL = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)a1->q), _mm_loadu_si128((const __m128i *)a0->q)); \
        __m256i aH = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(a1->q + 16)), _mm_loadu_si128((const __m128i *)(a0->q + 16))); \
        __m256i seed = _mm256_setr_epi32(-16 * a0->sum, 0, 0, 0, -16 * a1->sum, 0, 0, 0);       \
        __m256 as = _mm256_set_m128(_mm_set1_ps(a1->d), _mm_set1_ps(a0->d));                     \
        Q5_PAIR2(x, v, aL, aH, seed, as, acc) }
    int64_t j = 0;
    for (; j + 2 <= full; j += 2) { Q5_ONE(j, acc0); Q5_ONE(j + 1, acc1); }
    if (j < full) { Q5_ONE(j, acc0); j++; }
#undef Q5_ONE
    if (nb & 1) {  // the odd last block: pair j with zeros, accumulator j & 1
        const ck_q8a *a0 = &a[2 * j];
        __m256i v;
        __m128i x = ck_q5_load2_avx2(row + 44 * j, 0, &v);
        __m256i aL = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)a0->q));
        __m256i aH = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(a0->q + 16)));
        __m256i seed = _mm256_setr_epi32(-16 * a0->sum, 0, 0, 0, 0, 0, 0, 0);
        __m256 as = _mm256_set_m128(_mm_setzero_ps(), _mm_set1_ps(a0->d));
        if (j & 1) Q5_PAIR2(x, v, aL, aH, seed, as, acc1) else Q5_PAIR2(x, v, aL, aH, seed, as, acc0)
    }
    return ck_hsum8_avx(_mm256_add_ps(acc0, acc1));
}
#undef Q5_PAIR2

CK_Q5_TARGET static float q5pre_dot(const void *w, const void *pre, int64_t cols) {
    const uint8_t *row = w;
    const ck_q5pre *p = pre;
    const int64_t pairs = cols / 64;
    // Byte k of the 64 values: block k / 32's quant byte (k & 15); blocks start at 0 and 22,
    // each with d (2 bytes) and qh (4 bytes) before its 16 quant bytes.
    const __m512i qs_idx = _mm512_set_epi8(
        43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28,
        43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28,
        21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
        21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6);
    const __m256i d_idx = _mm256_set_epi16(11, 11, 11, 11, 11, 11, 11, 11, 0, 0, 0, 0, 0, 0, 0, 0);
    const __mmask64 high_half = 0xFFFF0000FFFF0000ull;  // values 16-31 of each block: high nibbles
    const __m512i m4 = _mm512_set1_epi8(0x0F), b4 = _mm512_set1_epi8(0x10);
    // Two named accumulators, pairs taken two at a time: indexing an array by (j & 1) made the
    // compiler keep both in memory, a store and a reload around every FMA (a dependency chain
    // through store forwarding; the loop ran at 19.6 GB/s L2-resident on Zen 5, now 27.5, same
    // results).
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
#define Q5_PAIR(j, acc) {                                                                          \
        const uint8_t *b = row + 44 * (j);                                                       \
        __m512i raw = _mm512_maskz_loadu_epi8(0x00000FFFFFFFFFFFull, b);                         \
        __m512i q = _mm512_permutexvar_epi8(qs_idx, raw);                                        \
        q = _mm512_and_si512(_mm512_mask_blend_epi8(high_half, q, _mm512_srli_epi16(q, 4)), m4); \
        __mmask64 hb = (__mmask64)((uint64_t)ck_ld32(b + 2) | (uint64_t)ck_ld32(b + 24) << 32);  \
        q = _mm512_mask_add_epi8(q, hb, q, b4);  /* q <= 15 here: adding 16 sets the fifth bit */ \
        __m512 dw = _mm512_cvtph_ps(_mm256_permutexvar_epi16(d_idx, _mm512_castsi512_si256(raw))); \
        __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512((const void *)p[j].seed), q, _mm512_load_si512((const void *)p[j].a)); \
        __m512 sc = _mm512_mul_ps(dw, _mm512_load_ps(p[j].as));                                  \
        acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc); }
    int64_t j = 0;
    for (; j + 2 <= pairs; j += 2) { Q5_PAIR(j, acc0); Q5_PAIR(j + 1, acc1); }
    if (j < pairs) Q5_PAIR(j, acc0);  // an odd last pair: even index, accumulator 0
#undef Q5_PAIR
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

ck_dot_fn ck_q5pre_kernel(int level) { return level == CK_LEVEL_AVX2 ? q5pre2_dot : q5pre_dot; }
#else
int ck_q5pre_applies(int level, uint32_t type, int64_t cols) { (void)level; (void)type; (void)cols; return 0; }
void ck_q5pre_prepare(int level, const void *act, int64_t cols, void *out) { (void)level; (void)act; (void)cols; (void)out; }
ck_dot_fn ck_q5pre_kernel(int level) { (void)level; return 0; }
#endif
