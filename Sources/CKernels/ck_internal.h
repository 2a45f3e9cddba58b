// Private declarations shared by the kernel files: GGML block layouts, activation blocks,
// small inline helpers and the per-level kernel tables.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "include/ckernels.h"

enum {
    CK_F32 = 0, CK_F16 = 1, CK_Q4_0 = 2, CK_Q4_1 = 3, CK_Q5_0 = 6, CK_Q5_1 = 7, CK_Q8_0 = 8,
    CK_Q4_K = 12, CK_Q5_K = 13, CK_Q6_K = 14, CK_BF16 = 30,
};

// GGML weight blocks (GEMMA_SPEC.md 7.2). Fields are read with memcpy-style loads because a
// row of 34-, 18- or 210-byte blocks gives no alignment guarantees beyond 2 bytes.
typedef struct { uint16_t d; int8_t qs[32]; } blk_q8_0;
typedef struct { uint16_t d; uint8_t qs[16]; } blk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } blk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_1;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } blk_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } blk_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } blk_q6_K;
_Static_assert(sizeof(blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(blk_q4_K) == 144, "q4_K");
_Static_assert(sizeof(blk_q5_K) == 176, "q5_K");
_Static_assert(sizeof(blk_q6_K) == 210, "q6_K");

// Activation blocks. 32-blocks carry sum(q) so the constant offsets of Q4_0/Q5_0 (-8, -16)
// become one integer correction and the minimum of Q4_1/Q5_1 one multiply per block.
// K-quant inputs (Q4_K, Q5_K, Q6_K) come per 256 values, quantized in eight blocks of 32 with
// one scale each (d[j] for values 32j..32j+31, the same rule and values as ck_q8a's), so one
// outlier coarsens the step of 31 other values, not 255 (docs/FIDELITY.md: half the distance
// from f32 truth). They carry sums of each 16 values (bsums) for the K-quant minimums and
// Q6_K's -32 offset. The 256 int8 values are contiguous and 64-byte aligned within the block
// (320 = 5 * 64 bytes), so the 512-bit kernels load 64 of them at once.
typedef struct { float d; int32_t sum; int8_t q[32]; } ck_q8a;
typedef struct { float d[8]; int16_t bsums[16]; int8_t q[256]; } ck_q8k;
_Static_assert(sizeof(ck_q8a) == 40, "q8a");
_Static_assert(sizeof(ck_q8k) == 320, "q8k");

/// Dot of one weight row with a prepared activation row of n values.
typedef float (*ck_dot_fn)(const void *w, const void *act, int64_t n);

static inline uint16_t ck_ld16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ck_ld32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t ck_ld64(const void *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/// A/B knob: 1 when the environment sets `name` to something starting with '0' (the path it
/// names is then off), read once into *cached (start it at -1). Racing first readers store the
/// same value.
static inline int ck_env_off(const char *name, int *cached) {
    if (*cached < 0) {
        const char *e = getenv(name);
        *cached = e && e[0] == '0';
    }
    return *cached;
}

/// 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block.
static inline void ck_kscale(const uint8_t *s, int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/// All eight 6-bit scales and mins of a Q4_K/Q5_K block at once, with 32-bit word operations
/// (same values as ck_kscale: bytes 0-3 hold the low 6 bits of scales 0-3, bytes 4-7 of mins
/// 0-3, bytes 8-11 the low 4 bits of scales/mins 4-7 whose top 2 bits are the top bits of
/// bytes 0-7).
static inline void ck_kscales8(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
    uint32_t w0 = ck_ld32(s), w1 = ck_ld32(s + 4), w2 = ck_ld32(s + 8);
    uint32_t sc_lo = w0 & 0x3f3f3f3fu, m_lo = w1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    memcpy(sc, &sc_lo, 4); memcpy(sc + 4, &sc_hi, 4);
    memcpy(m, &m_lo, 4); memcpy(m + 4, &m_hi, 4);
}

/// Block size (values) of a GGML type, 0 if unknown.
int ck_block_size(uint32_t type);
/// Bytes per block of a GGML type, 0 if unknown.
int ck_block_bytes(uint32_t type);

ck_dot_fn ck_scalar_kernel(uint32_t type);
ck_dot_fn ck_avx2_kernel(uint32_t type);
ck_dot_fn ck_avx512_kernel(uint32_t type);
ck_dot_fn ck_neon_kernel(uint32_t type);
/// NEON only: 1 when the CPU has the ARMv8.2 dot-product instructions (which = 0), or when the
/// kernels use them (which = 1: the CPU has them and GEMMA_NODE_NEON_DOTPROD is not 0).
int ck_neon_dotprod(int which);
/// NEON kernel of one flavour (dotprod 0: widening multiplies, 1: vdotq_s32; only where the CPU
/// has it), 0 when NEON has none for `type`. Both flavours give bit-identical results.
ck_dot_fn ck_neon_kernel_flavour(uint32_t type, int dotprod);
/// SIMD activation quantizers, bit-identical to ck_quantize_act.
int ck_quant_act_avx2(uint32_t type, const float *x, int64_t cols, void *out);
int ck_quant_act_avx512(uint32_t type, const float *x, int64_t cols, void *out);
float ck_q8_0_f32_scalar(const void *w, const float *x, int64_t n);
float ck_q8_0_f32_avx2(const void *w, const float *x, int64_t n);
float ck_q8_0_f32_avx512(const void *w, const float *x, int64_t n);
float ck_q8_0_f32_neon(const void *w, const float *x, int64_t n);

// Q5_0 decode with activations laid out once per matmul (ck_q5.c): AVX-512 VBMI, bit-identical
// to dot_q5_0_512, and AVX2, bit-identical to ck_q5_0_dot_avx2. Layout: ck_q5pre_bytes(level,
// cols) per token, 64-byte aligned; ck_q5pre_kernel(level) dots a row with it.
/// AVX2 layout, per block pair (2p, 2p+1): aL = a[2p].q[0..15] then a[2p+1].q[0..15]; aH =
/// values 16-31 of each; as = a[2p].d four times, a[2p+1].d four times; seed = -16 * sum(a) in
/// lanes 0 and 4. An odd last block's pair has zeros for the missing block. Read by
/// q5pre2_dot (ck_q5.c) and the prefill GEMM (ck_gemm_avx2.c) alike.
typedef struct { int8_t aL[32], aH[32]; float as[8]; int32_t seed[8]; } ck_q5pre2;  // 128 bytes
int ck_q5pre_applies(int level, uint32_t type, int64_t cols);
size_t ck_q5pre_bytes(int level, int64_t cols);
void ck_q5pre_prepare(int level, const void *act, int64_t cols, void *out);
ck_dot_fn ck_q5pre_kernel(int level);

#if defined(__x86_64__)
#include <immintrin.h>
/// f16 at p to f32 (F16C), and the horizontal sum of 8 floats in the same operation order as
/// ck_x86_body.h's hsum8: shared by the multi-token paths of both x86 levels (ck_gemm_avx2.c,
/// ck_gemm_k.c), which must round exactly as the one-token kernels do.
static inline __attribute__((target("avx2,fma,f16c"))) float ck_h2f_f16c(const void *p) { return _cvtsh_ss(ck_ld16(p)); }
/// 4 x 4 dword transpose in every 128-bit lane of four vectors v[0..3] of type T (__m256i or
/// __m512i; PFX the matching intrinsic prefix, _mm256 or _mm512): afterwards v[i]'s dword
/// 4k + c is the old v[c]'s dword 4k + i. The K-quant prefill paths store weights and
/// activations this way so that multiplies summed lane by lane give the one-token kernels'
/// regrouped lanes (ck_gemm_k.c, ck_gemm_avx2.c).
#define CK_TRANSPOSE4_EPI32(PFX, T, v)                                                  \
    do {                                                                                \
        T ck_t0_ = PFX##_unpacklo_epi32((v)[0], (v)[1]), ck_t1_ = PFX##_unpackhi_epi32((v)[0], (v)[1]); \
        T ck_t2_ = PFX##_unpacklo_epi32((v)[2], (v)[3]), ck_t3_ = PFX##_unpackhi_epi32((v)[2], (v)[3]); \
        (v)[0] = PFX##_unpacklo_epi64(ck_t0_, ck_t2_);                                  \
        (v)[1] = PFX##_unpackhi_epi64(ck_t0_, ck_t2_);                                  \
        (v)[2] = PFX##_unpacklo_epi64(ck_t1_, ck_t3_);                                  \
        (v)[3] = PFX##_unpackhi_epi64(ck_t1_, ck_t3_);                                  \
    } while (0)
/// Q5_0 at the AVX2 level, two blocks per 256-bit vector (ck_q5.c's one-token and laid-out
/// decode kernels, ck_gemm_avx2.c's prefill path, which must see the same bytes). x: the first
/// 8 bytes of block A (d, qh, 2 quant bytes) and of block B in its two 64-bit halves; v: A's 16
/// quant bytes | B's. Out: *lo = values 0-15 of A | of B, *hi = values 16-31 of each, as
/// unsigned u = nibble | fifth bit << 4 (0..31). A missing block B (a row's odd last block) is
/// zero bytes in both x and v, and gives zeros.
static inline __attribute__((always_inline, target("avx2,fma,f16c")))
void ck_q5_unpack2_avx2(__m128i x, __m256i v, __m256i *lo, __m256i *hi) {
    // Byte k of lo's lane (block) takes qh byte k / 8 (x bytes 2, 3 and 10, 11), hi's qh
    // bytes 2, 3 (x bytes 4, 5 and 12, 13); then bit k % 8 of it, as 0x10 or 0.
    const __m256i spread_l = _mm256_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
                                              10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11);
    const __m256i spread_h = _mm256_setr_epi8(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5,
                                              12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
    const __m256i y = _mm256_broadcastsi128_si256(x);
    const __m256i hl = _mm256_and_si256(_mm256_shuffle_epi8(y, spread_l), bit);
    const __m256i hh = _mm256_and_si256(_mm256_shuffle_epi8(y, spread_h), bit);
    *lo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_cmpeq_epi8(hl, bit), b4));
    *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_and_si256(_mm256_cmpeq_epi8(hh, bit), b4));
}
/// The x and v of ck_q5_unpack2_avx2 for the pair whose block A starts at b (B at b + 22);
/// full = 0: A is a row's odd last block, B reads as zeros (nothing past A is touched).
static inline __attribute__((always_inline, target("avx2,fma,f16c")))
__m128i ck_q5_load2_avx2(const uint8_t *b, int full, __m256i *v) {
    if (!full) {
        *v = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(b + 6)));
        return _mm_loadl_epi64((const __m128i *)b);
    }
    *v = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b + 28)), _mm_loadu_si128((const __m128i *)(b + 6)));
    return _mm_insert_epi64(_mm_loadl_epi64((const __m128i *)b), (long long)ck_ld64(b + 22), 1);
}
/// The AVX2 Q5_0 dot in pair form (ck_q5.c): any number of 32-value blocks.
float ck_q5_0_dot_avx2(const void *w, const void *act, int64_t n);
static inline __attribute__((target("avx2,fma,f16c"))) float ck_hsum8_avx(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/// Half h (128 values) of a Q6_K super-block as two vectors of 64 unsigned six-bit values in
/// activation order (*u01: values 0-63 of the half, *u23: 64-127). Shared by the one-token
/// AVX-512 kernel and the multi-token path (ck_gemm_k.c), which must see the same bytes.
static inline __attribute__((always_inline, target("avx2,avx512f,avx512bw")))
void ck_q6_K_half_512(const blk_q6_K *b, int h, __m512i *u01, __m512i *u23) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m512i qhs = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
    *u01 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(qhs, m2), 4));
    *u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qhs, 4), m2), 4));
}
#endif

/// How far ahead of the row being read the decode loops prefetch weights, in bytes (0 = off;
/// GEMMA_NODE_PREFETCH overrides). See ck_prefetch_row.
size_t ck_prefetch_bytes(void);
/// Software prefetch of the row_bytes that lie `ahead` bytes past `row`. A single core's
/// hardware prefetchers stop at every 4 KiB page and keep too few lines in flight: one
/// memory-bound row-by-row dot loop read ~4.3 GB/s of weights against ~9.5 GB/s for a plain
/// streaming read on this machine; prefetching 4 KiB ahead brought it to ~8.5-9 GB/s. Prefetches
/// past the end of the matrix are harmless (they never fault).
static inline void ck_prefetch_row(const uint8_t *row, size_t row_bytes, size_t ahead) {
    if (!ahead) return;
    for (size_t o = 0; o < row_bytes; o += 64) __builtin_prefetch(row + ahead + o, 0, 3);
}

// Prefill GEMM (ck_gemm.c): Q8_0/Q5_0 rows decoded once per matmul, AVX-512 VNNI only.
int ck_gemm_applies(int level, uint32_t type, int64_t cols, int64_t tokens);
size_t ck_gemm_act_bytes(int64_t cols, int64_t tokens);
size_t ck_gemm_row_bytes(int64_t cols);
void ck_gemm_prepare(uint32_t type, const uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols, void *pairs);
void ck_gemm_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                  const void *pairs, int64_t tokens, void *row_scratch, float *y, int64_t y_stride);

// Multi-token Q4_K/Q6_K path (ck_gemm_k.c): rows decoded once per matmul, AVX-512 VNNI only,
// bit-identical per token to dot_q4_K_512 / dot_q6_K_512. Activations are the ck_q8k rows,
// their quant bytes transposed in place by ck_gemmk_prepare first (they then serve only this
// path).
int ck_gemmk_applies(int level, uint32_t type, int64_t cols, int64_t tokens);
void ck_gemmk_prepare(uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols);
size_t ck_gemmk_row_bytes(int64_t cols);
void ck_gemmk_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                   const uint8_t *act, size_t act_stride, int64_t tokens, void *row_scratch, float *y, int64_t y_stride);

// Multi-token paths at the AVX2 level (ck_gemm_avx2.c): Q8_0, Q5_0, Q4_K, Q6_K rows decoded once
// per matmul, bit-identical per token to the AVX2 one-token kernels. Activations: Q8_0 the usual
// ck_q8a rows; Q4_K/Q6_K ck_q8k rows after ck_gemm2_prepare; Q5_0 NOT ck_q8a rows but each
// token's ck_q5pre2 pairs (ck_q5pre_prepare(CK_LEVEL_AVX2, ...), act_stride =
// ck_q5pre_bytes(CK_LEVEL_AVX2, cols); ck_matmul lays them out). row_scratch holds
// ck_gemm2_row_bytes(type, cols) per thread.
int ck_gemm2_applies(int level, uint32_t type, int64_t cols, int64_t tokens);
// Q4_K/Q6_K activations: quant bytes transposed in place for this path (a no-op for the others;
// Q5_0's layout is ck_q5pre_prepare's, see above).
void ck_gemm2_prepare(uint32_t type, uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols);
size_t ck_gemm2_row_bytes(uint32_t type, int64_t cols);
void ck_gemm2_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                   const uint8_t *act, size_t act_stride, int64_t tokens, void *row_scratch, float *y, int64_t y_stride);
