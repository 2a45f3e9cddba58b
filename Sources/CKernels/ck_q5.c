// Q5_0 decode kernels with the activation side laid out once per matmul, bit-identical to the
// one-token kernels of their level: AVX-512 VBMI (Ice Lake and later) to dot_q5_0_512, AVX2 to
// dot_q5_0_avx2.
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
// AVX2 (ck_q5pre2, below): dot_q5_0_avx2 spends ~22 instructions per block, a third of them on
// the activation side (the seed from a.sum, the scale product, the broadcast) and 4 on a
// 128-bit split of each block's 16 quant bytes. Here two blocks share one 256-bit vector of
// quant bytes: L = low nibbles (values 0-15 of block 2p | of block 2p+1), H = high nibbles
// (values 16-31 of each), with the activations laid out in that order. Each int32 lane still
// sums the same four products as in dot_q5_0_avx2 (L's lanes are lanes 0-3 of the two blocks,
// H's lanes 4-7), and the accumulators are split the same way: accL01 holds lanes 0-3 of
// dot_q5_0_avx2's acc0 (low half) and of acc1 (high half), accH01 their lanes 4-7, accL23 and
// accH23 those of acc2 and acc3. Every lane sees the same fma with the same scale in the same
// order; at the end acc0..acc3 are put back together and summed as hsum8((acc0 + acc1) +
// (acc2 + acc3)). Bit-identical to dot_q5_0_avx2 and so to the AVX2 prefill path
// (ck_gemm_avx2.c).
#include <stdlib.h>
#include "ck_internal.h"

typedef struct { int8_t a[64]; float as[16]; int32_t seed[16]; } ck_q5pre;  // 192 bytes
// AVX2, per block pair (2p, 2p+1): aL = a[2p].q[0..15] then a[2p+1].q[0..15]; aH = values 16-31
// of each; as = a[2p].d four times, a[2p+1].d four times; seed = -16 * sum(a) in lanes 0 and 4.
typedef struct { int8_t aL[32], aH[32]; float as[8]; int32_t seed[8]; } ck_q5pre2;  // 128 bytes

size_t ck_q5pre_bytes(int level, int64_t cols) {
    return (size_t)(cols / 64) * (level == CK_LEVEL_AVX2 ? sizeof(ck_q5pre2) : sizeof(ck_q5pre));
}

#if defined(__x86_64__)
#include <immintrin.h>

#define CK_Q5_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))

#define CK_Q5_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

// GEMMA_NODE_Q5PRE=0 turns both paths off (A/B runs). VBMI: the AVX-512 level, whole block
// pairs. AVX2: whole groups of four blocks (two pairs per loop step, one per accumulator pair).
int ck_q5pre_applies(int level, uint32_t type, int64_t cols) {
    static int off = -1, vbmi = -1;
    if (vbmi < 0) {
        __builtin_cpu_init();
        vbmi = __builtin_cpu_supports("avx512vbmi") != 0;
    }
    if (type != CK_Q5_0 || cols <= 0 || ck_env_off("GEMMA_NODE_Q5PRE", &off) || !ck_level_supported(level)) return 0;
    if (level == CK_LEVEL_AVX512) return vbmi && cols % 64 == 0;
    if (level == CK_LEVEL_AVX2) return cols % 128 == 0;
    return 0;
}

void ck_q5pre_prepare(int level, const void *act, int64_t cols, void *out) {
    const ck_q8a *a = act;
    if (level == CK_LEVEL_AVX2) {
        ck_q5pre2 *o = out;
        for (int64_t j = 0; j < cols / 64; j++) {
            const ck_q8a *a0 = &a[2 * j], *a1 = &a[2 * j + 1];
            memcpy(o[j].aL, a0->q, 16);
            memcpy(o[j].aL + 16, a1->q, 16);
            memcpy(o[j].aH, a0->q + 16, 16);
            memcpy(o[j].aH + 16, a1->q + 16, 16);
            for (int l = 0; l < 8; l++) {
                o[j].as[l] = l < 4 ? a0->d : a1->d;
                o[j].seed[l] = 0;
            }
            o[j].seed[0] = -16 * a0->sum;
            o[j].seed[4] = -16 * a1->sum;
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

CK_Q5_AVX2_TARGET static float q5pre2_dot(const void *w, const void *pre, int64_t cols) {
    const uint8_t *row = w;
    const ck_q5pre2 *p = pre;
    const int64_t pairs = cols / 64;  // even: ck_q5pre_applies asks for cols % 128 == 0
    // x = the first 8 bytes of each block (d, qh, 2 quant bytes) in its two 64-bit halves,
    // both 128-bit lanes of y. Byte k of L's lane (block) gets qh byte k / 8 (values 0-15: x
    // bytes 2, 3 and 10, 11); H's: qh bytes 2, 3 (x bytes 4, 5 and 12, 13). Then bit k % 8 of
    // it, as 0x10 or 0: dot_q5_0_avx2's bits32 for the same values.
    const __m256i spread_l = _mm256_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
                                              10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11);
    const __m256i spread_h = _mm256_setr_epi8(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5,
                                              12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
    const __m256i d_idx = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);  // halves 0 and 4 of x: the two d
    __m256 accL01 = _mm256_setzero_ps(), accH01 = accL01, accL23 = accL01, accH23 = accL01;
#define Q5_PAIR2(j, accL, accH) {                                                                 \
        const uint8_t *b = row + 44 * (j);                                                       \
        __m128i x = _mm_insert_epi64(_mm_loadl_epi64((const __m128i *)b), (long long)ck_ld64(b + 22), 1); \
        __m256i y = _mm256_broadcastsi128_si256(x);                                              \
        __m256i v = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b + 28)), _mm_loadu_si128((const __m128i *)(b + 6))); \
        __m256i hl = _mm256_and_si256(_mm256_shuffle_epi8(y, spread_l), bit);                   \
        __m256i hh = _mm256_and_si256(_mm256_shuffle_epi8(y, spread_h), bit);                   \
        __m256i qlo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_cmpeq_epi8(hl, bit), b4)); \
        __m256i qhi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_and_si256(_mm256_cmpeq_epi8(hh, bit), b4)); \
        __m256i sl = _mm256_add_epi32(_mm256_load_si256((const __m256i *)p[j].seed),            \
                                      _mm256_madd_epi16(_mm256_maddubs_epi16(qlo, _mm256_load_si256((const __m256i *)p[j].aL)), ones)); \
        __m256i sh = _mm256_madd_epi16(_mm256_maddubs_epi16(qhi, _mm256_load_si256((const __m256i *)p[j].aH)), ones); \
        __m256 sc = _mm256_mul_ps(_mm256_permutevar8x32_ps(_mm256_cvtph_ps(x), d_idx), _mm256_load_ps(p[j].as)); \
        accL = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sl), accL);                                \
        accH = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sh), accH); }
    for (int64_t j = 0; j < pairs; j += 2) { Q5_PAIR2(j, accL01, accH01); Q5_PAIR2(j + 1, accL23, accH23); }
#undef Q5_PAIR2
    __m256 acc0 = _mm256_permute2f128_ps(accL01, accH01, 0x20), acc1 = _mm256_permute2f128_ps(accL01, accH01, 0x31);
    __m256 acc2 = _mm256_permute2f128_ps(accL23, accH23, 0x20), acc3 = _mm256_permute2f128_ps(accL23, accH23, 0x31);
    return ck_hsum8_avx(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

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
