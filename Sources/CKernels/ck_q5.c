// Q5_0 decode kernel for AVX-512 VBMI (Ice Lake and later), bit-identical to dot_q5_0_512.
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
#include <stdlib.h>
#include "ck_internal.h"

typedef struct { int8_t a[64]; float as[16]; int32_t seed[16]; } ck_q5pre;  // 192 bytes

size_t ck_q5pre_bytes(int64_t cols) { return (size_t)(cols / 64) * sizeof(ck_q5pre); }

#if defined(__x86_64__)
#include <immintrin.h>

#define CK_Q5_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))

// GEMMA_NODE_Q5PRE=0 turns the path off (A/B runs).
int ck_q5pre_applies(int level, uint32_t type, int64_t cols) {
    static int off = -1, vbmi = -1;
    if (vbmi < 0) {
        __builtin_cpu_init();
        vbmi = __builtin_cpu_supports("avx512vbmi") != 0;
    }
    return vbmi && !ck_env_off("GEMMA_NODE_Q5PRE", &off) && type == CK_Q5_0 && level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512) &&
           cols > 0 && cols % 64 == 0;
}

void ck_q5pre_prepare(const void *act, int64_t cols, void *out) {
    const ck_q8a *a = act;
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

CK_Q5_TARGET float ck_q5pre_dot(const void *w, const void *pre, int64_t cols) {
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
#else
int ck_q5pre_applies(int level, uint32_t type, int64_t cols) { (void)level; (void)type; (void)cols; return 0; }
void ck_q5pre_prepare(const void *act, int64_t cols, void *out) { (void)act; (void)cols; (void)out; }
float ck_q5pre_dot(const void *w, const void *pre, int64_t cols) { (void)w; (void)pre; (void)cols; return __builtin_nanf(""); }
#endif
