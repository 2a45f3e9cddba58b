// Prefill GEMM for the symmetric 32-block formats (Q8_0, Q5_0) at the AVX-512 VNNI level: each
// weight row is decoded ONCE per matmul into 64-value block pairs (quants, scales, an integer
// correction) in a per-thread L1 scratch, then dotted with every token. Activations are laid
// out once per matmul with their scales spread over the lanes: for Q8_0 as unsigned bytes
// a + 128 (its weights are signed), for Q5_0 as the signed a (its weights q are unsigned).
//
// Bit-identical, per token, to the one-token kernels dot_q8_0_512 / dot_q5_0_512 (batch
// invariance): every int32 lane holds the same exact sum of four products as there (Q8_0:
// sum((a + 128) w) - 128 sum(w) over the lane's four bytes = sum(a w); Q5_0: vpdpbusd of
// unsigned q and signed a started from the -16 sum(a) seed in lanes 0 and 8, the very
// instruction its one-token kernel uses), and the float
// operations are the same in the same order: scale = d_w * d_a per lane, fma(scale,
// float(p), acc) with pair k into accumulator k & 1, then reduce_add(acc0 + acc1).
#include <stdlib.h>
#include "ck_internal.h"

#if defined(__x86_64__)  // only the x86 paths read them
// GEMMA_NODE_GEMM=0 turns the path off.
static int getenv_gemm_disabled(void) {
    static int cached = -1;
    return ck_env_off("GEMMA_NODE_GEMM", &cached);
}
#endif

// Rows decoded together: each pass of four tokens then reuses those tokens' activation pairs
// (192 bytes per token and 64 values, from L2 for long prompts) across this many rows from L1
// (8: 2-7% faster than 4 in a harness at 2048 x 640, T = 128; 8 rows of 640 columns decode to
// 15 KiB, which stays in L1 with four tokens' 7.5 KiB of activations). Longer rows (bigger
// models) get fewer rows per tile, so the decoded tile stays within G_TILE_BYTES of L1.
#define G_ROW_TILE 8
#define G_TILE_BYTES (24 * 1024)

#if defined(__x86_64__)
#include <immintrin.h>

#define CK_G_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

typedef struct { uint8_t au[64]; float as[16]; int32_t seed[16]; } ck_pair_act;  // 192 bytes
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

static CK_G_TARGET void g_prepare_act(uint32_t type, const uint8_t *act, size_t act_stride, int64_t tokens, int64_t pairs,
                                      ck_pair_act *out) {
    for (int64_t t = 0; t < tokens; t++) {
        const ck_q8a *a = (const ck_q8a *)(act + t * act_stride);
        for (int64_t j = 0; j < pairs; j++) {
            ck_pair_act *o = &out[t * pairs + j];
            // Q8_0: unsigned a + 128 against the signed weights; Q5_0: signed a as is, the
            // weights q (0..31) are vpdpbusd's unsigned side, exactly as in dot_q5_0_512.
            __m512i v = g_two32(a[2 * j].q, a[2 * j + 1].q);
            if (type != CK_Q5_0) v = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
            _mm512_store_si512((__m512i *)o->au, v);
            _mm512_store_ps(o->as, g_two_scales(a[2 * j].d, a[2 * j + 1].d));
            // Q5_0's one-token kernel seeds lanes 0 and 8 with -16 * sum(a) of each block.
            __m512i seed = type == CK_Q5_0
                ? _mm512_mask_set1_epi32(_mm512_maskz_set1_epi32(0x0001, -16 * a[2 * j].sum), 0x0100, -16 * a[2 * j + 1].sum)
                : _mm512_setzero_si512();
            _mm512_store_si512((__m512i *)o->seed, seed);
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
            w = g_q5_0_two(&b[0], &b[1]);  // unsigned q 0..31, as the one-token kernel multiplies
            d0 = g_h2f(&b[0].d); d1 = g_h2f(&b[1].d);
        } else {
            const blk_q8_0 *b = (const blk_q8_0 *)row + 2 * j;
            w = g_two32(b[0].qs, b[1].qs);
            d0 = g_h2f(&b[0].d); d1 = g_h2f(&b[1].d);
        }
        _mm512_store_si512((__m512i *)pw[j].w, w);
        _mm512_store_ps(pw[j].ws, g_two_scales(d0, d1));
        if (type != CK_Q5_0) {
            // -128 * (sum of the lane's four w): removes the +128 of the activations lane by lane.
            __m512i lane_sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w);
            _mm512_store_si512((__m512i *)pw[j].negc, _mm512_mullo_epi32(lane_sums, _mm512_set1_epi32(-128)));
        }
    }
}

// R decoded rows (1 or 2, `pairs` records apart) times N tokens (1..4); both compile-time
// constants after inlining. Per (row, token) and pair exactly the one-token kernel's lane sums
// and float ops (see the file comment); Q8_0 has no seed (all zero), so its dpbusd starts from
// the correction alone: the same int32 lanes. With two rows each token's activation vectors are
// loaded once for both (session 12: pp128 x1.17 at 1 thread, docs/KERNELS.md); the operations
// per (row, token) do not depend on R, so the outputs are the same bit for bit.
static inline __attribute__((always_inline)) CK_G_TARGET void g_dot(int q5, const ck_pair_w *pw, int R, int64_t pairs,
                                                                     const ck_pair_act *acts, int N, float out[2][4]) {
    __m512 acc[2][2][4];  // [row][pair & 1][token]: pair j goes to acc(j & 1), as in the one-token kernel
    for (int r = 0; r < R; r++)
        for (int k = 0; k < N; k++) acc[r][0][k] = acc[r][1][k] = _mm512_setzero_ps();
    // Pairs two at a time so the accumulator of each pair is known at compile time and stays in
    // a register (indexing by j & 1 at run time kept them on the stack).
#define G_STEP(jj, P)                                                                                     \
    {                                                                                                     \
        __m512i wv[2];                                                                                    \
        __m512 ws[2];                                                                                     \
        for (int r = 0; r < R; r++) {                                                                     \
            wv[r] = _mm512_load_si512((const __m512i *)pw[r * pairs + (jj)].w);                           \
            ws[r] = _mm512_load_ps(pw[r * pairs + (jj)].ws);                                              \
        }                                                                                                 \
        for (int k = 0; k < N; k++) {                                                                     \
            const ck_pair_act *a = acts + k * pairs + (jj);                                               \
            const __m512i au = _mm512_load_si512((const __m512i *)a->au);                                 \
            const __m512 as = _mm512_load_ps(a->as);                                                      \
            for (int r = 0; r < R; r++) {                                                                 \
                __m512i p = q5 ? _mm512_dpbusd_epi32(_mm512_load_si512((const __m512i *)a->seed), wv[r], au) \
                               : _mm512_dpbusd_epi32(_mm512_load_si512((const __m512i *)pw[r * pairs + (jj)].negc), au, wv[r]); \
                acc[r][P][k] = _mm512_fmadd_ps(_mm512_mul_ps(ws[r], as), _mm512_cvtepi32_ps(p), acc[r][P][k]); \
            }                                                                                             \
        }                                                                                                 \
    }
    int64_t j = 0;
    for (; j + 2 <= pairs; j += 2) {
        G_STEP(j, 0)
        G_STEP(j + 1, 1)
    }
    if (j < pairs) G_STEP(j, 0)
#undef G_STEP
    for (int r = 0; r < R; r++)
        for (int k = 0; k < N; k++) out[r][k] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0][k], acc[r][1][k]));
}

// R decoded rows (consecutive, `pairs` records apart) times N tokens starting at token t0;
// results to y[k * y_stride + r].
#define G_PASS(fmt, Q5, R, N)                                                                                \
    static CK_G_TARGET void g_pass##R##_##fmt##_##N(const ck_pair_w *pw, int64_t pairs, const ck_pair_act *acts, \
                                                   float *y, int64_t y_stride) {                             \
        float out[2][4];                                                                                     \
        g_dot(Q5, pw, R, pairs, acts, N, out);                                                               \
        for (int r = 0; r < R; r++)                                                                          \
            for (int k = 0; k < N; k++) y[k * y_stride + r] = out[r][k];                                     \
    }
G_PASS(q8_0, 0, 1, 1) G_PASS(q8_0, 0, 1, 4) G_PASS(q5_0, 1, 1, 1) G_PASS(q5_0, 1, 1, 4)
G_PASS(q8_0, 0, 2, 4) G_PASS(q5_0, 1, 2, 4)
#undef G_PASS

// GEMMA_NODE_GEMM_2ROWS=0 falls back to one row per pass.
static int g_two_rows(void) {
    static int cached = -1;
    return !ck_env_off("GEMMA_NODE_GEMM_2ROWS", &cached);
}

static CK_G_TARGET void g_rows(uint32_t type, const uint8_t *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t pairs,
                               const ck_pair_act *acts, int64_t tokens, ck_pair_w *pw, float *y, int64_t y_stride) {
    const int q5 = type == CK_Q5_0;
    const size_t ahead = ck_prefetch_bytes();
    int64_t tile = G_TILE_BYTES / (pairs * (int64_t)sizeof(ck_pair_w));
    tile = tile < 1 ? 1 : tile > G_ROW_TILE ? G_ROW_TILE : tile;
    for (int64_t rt = r0; rt < r1; rt += tile) {
        const int64_t nr = r1 - rt < tile ? r1 - rt : tile;
        for (int64_t k = 0; k < nr; k++) {
            ck_prefetch_row(w + (rt + k) * row_bytes, row_bytes, ahead);  // small batches are memory-bound
            g_decode_row(type, w + (rt + k) * row_bytes, pairs, pw + k * pairs);
        }
        int64_t t = 0;
        for (; t + 4 <= tokens; t += 4) {
            int64_t k = 0;
            if (g_two_rows())
                for (; k + 2 <= nr; k += 2) {
                    float *yo = y + t * y_stride + rt + k;
                    if (q5) g_pass2_q5_0_4(pw + k * pairs, pairs, acts + t * pairs, yo, y_stride);
                    else g_pass2_q8_0_4(pw + k * pairs, pairs, acts + t * pairs, yo, y_stride);
                }
            for (; k < nr; k++) {
                float *yo = y + t * y_stride + rt + k;
                if (q5) g_pass1_q5_0_4(pw + k * pairs, pairs, acts + t * pairs, yo, y_stride);
                else g_pass1_q8_0_4(pw + k * pairs, pairs, acts + t * pairs, yo, y_stride);
            }
        }
        for (; t < tokens; t++)
            for (int64_t k = 0; k < nr; k++) {
                float *yo = y + t * y_stride + rt + k;
                if (q5) g_pass1_q5_0_1(pw + k * pairs, pairs, acts + t * pairs, yo, y_stride);
                else g_pass1_q8_0_1(pw + k * pairs, pairs, acts + t * pairs, yo, y_stride);
            }
    }
}
#endif

int ck_gemm_applies(int level, uint32_t type, int64_t cols, int64_t tokens) {
#if defined(__x86_64__)
    if (getenv_gemm_disabled()) return 0;
    return level == CK_LEVEL_AVX512 && ck_level_supported(CK_LEVEL_AVX512) && (type == CK_Q5_0 || type == CK_Q8_0) &&
           tokens >= 2 && cols > 0 && cols % 64 == 0;
#else
    (void)level; (void)type; (void)cols; (void)tokens;
    return 0;
#endif
}

size_t ck_gemm_act_bytes(int64_t cols, int64_t tokens) { return (size_t)tokens * (size_t)(cols / 64) * 192; }  // sizeof(ck_pair_act)
size_t ck_gemm_row_bytes(int64_t cols) { return (size_t)G_ROW_TILE * (size_t)(cols / 64) * 192; }  // G_ROW_TILE rows

void ck_gemm_prepare(uint32_t type, const uint8_t *act, size_t act_stride, int64_t tokens, int64_t cols, void *pairs) {
#if defined(__x86_64__)
    g_prepare_act(type, act, act_stride, tokens, cols / 64, pairs);
#else
    (void)type; (void)act; (void)act_stride; (void)tokens; (void)cols; (void)pairs;
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

// ---- Q8_0 "split" rows for the LM head: each row stores its nb f16 scales first, then its
// nb * 32 int8 quants, in the same row bytes as GGML's 34-byte blocks. Quants of a block pair
// are then one 64-byte load and 16 scales one vcvtph2ps, which halves the instructions per
// weight byte of the decode dot (the LM head is ~72% of the bytes a token reads).

void ck_q8_0_split_rows(void *w, size_t row_bytes, int64_t rows, int64_t cols, int to_split) {
    const int64_t nb = cols / 32;
    uint8_t tmp[34 * 512];
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = (uint8_t *)w + r * row_bytes;
        uint8_t *buf = nb <= 512 ? tmp : malloc((size_t)nb * 34);
        if (!buf) return;
        memcpy(buf, row, (size_t)nb * 34);
        for (int64_t b = 0; b < nb; b++) {
            if (to_split) {
                memcpy(row + 2 * b, buf + 34 * b, 2);
                memcpy(row + 2 * nb + 32 * b, buf + 34 * b + 2, 32);
            } else {
                memcpy(row + 34 * b, buf + 2 * b, 2);
                memcpy(row + 34 * b + 2, buf + 2 * nb + 32 * b, 32);
            }
        }
        if (buf != tmp) free(buf);
    }
}

typedef struct {
    int level;
    const uint8_t *w;
    size_t row_bytes;
    int64_t cols, tokens;
    const uint8_t *act;     // GGML q8a activations, act_stride apart (portable fallback)
    size_t act_stride;
    const int8_t *apos, *aneg;  // [tokens][cols] max(a, 0), max(-a, 0)
    const float *adsc;      // [tokens][nb] activation block scales
    float *y;
    int64_t y_stride;
} q8s_ctx;

#if defined(__x86_64__)
static CK_G_TARGET float q8s_dot_512(const uint8_t *row, const int8_t *ap, const int8_t *an, const float *adsc, int64_t nb) {
    const uint16_t *sc = (const uint16_t *)row;
    const int8_t *q = (const int8_t *)(row + 2 * nb);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 16) {
        int64_t left = nb - b < 16 ? nb - b : 16;
        __mmask16 m = (__mmask16)((1u << left) - 1);
        __m512 s16 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sc + b)), _mm512_maskz_loadu_ps(m, adsc + b));
        int64_t pairs = left / 2;
        for (int64_t k = 0; k < pairs; k++) {
            const int64_t o = (b + 2 * k) * 32;
            __m512i w = _mm512_loadu_si512((const void *)(q + o));
            __m512i p = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)(ap + o)), w),
                                         _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)(an + o)), w));
            __m512i idx = _mm512_set1_epi32((int)(2 * k));
            idx = _mm512_mask_add_epi32(idx, 0xFF00, idx, _mm512_set1_epi32(1));
            __m512 s = _mm512_permutexvar_ps(idx, s16);
            if (k & 1) acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc1);
            else acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc0);
        }
        if (left < 16) { b += 2 * pairs; break; }
    }
    float total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; b < nb; b++) {  // odd block count: the last block one value at a time
        int32_t s = 0;
        for (int i = 0; i < 32; i++) s += (int32_t)(ap[b * 32 + i] - an[b * 32 + i]) * q[b * 32 + i];
        total += _cvtsh_ss(sc[b]) * adsc[b] * (float)s;
    }
    return total;
}
#endif

#if defined(__x86_64__)
#define CK_A2_TARGET __attribute__((target("avx2,fma,f16c")))
// f16 -> f32 through a 32-bit vmovd of the half and its neighbour (no false dependency on an
// accumulator; see h2f in ck_x86_body.h). The neighbour is the next scale or the first quants.
static inline CK_A2_TARGET float q8s_h2f_avx2(const uint16_t *p) {
    __m128i v;
    __asm__("vmovd %1, %0" : "=x"(v) : "m"(*(const uint32_t *)p));
    return _mm_cvtss_f32(_mm_cvtph_ps(v));
}

// The AVX2 level's Q8_0 kernel (dot_q8_0_avx2) on a split row: the same instructions in the
// same order, blocks read from the two halves of the row instead of 34-byte blocks, so the
// results are bit-identical to that kernel on the GGML row. (Before, every row was first
// rebuilt in GGML order: a copy of the LM head's 680-byte rows that took ~40% of the LM
// head's time at one thread.) |w| times a with w's sign in u8 x s8 form; four blocks per turn
// into four accumulators, as there.
static CK_A2_TARGET float q8s_dot_avx2(const uint8_t *row, const ck_q8a *a, int64_t nb) {
    const uint16_t *sc = (const uint16_t *)row;
    const int8_t *q = (const int8_t *)(row + 2 * nb);
    const __m256i ones = _mm256_set1_epi16(1);
#define STEP(j, acc) {                                                                        \
        __m256i qw = _mm256_loadu_si256((const __m256i *)(q + 32 * (j)));                     \
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[j].q);                             \
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw)), ones); \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(q8s_h2f_avx2(sc + (j)) * a[j].d), _mm256_cvtepi32_ps(p), acc); }
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) { STEP(i, acc0); STEP(i + 1, acc1); STEP(i + 2, acc2); STEP(i + 3, acc3); }
    for (; i < nb; i++) STEP(i, acc0);
#undef STEP
    __m256 v = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}
#endif

static void q8s_task(void *c, int64_t r0, int64_t r1, int thread) {
    (void)thread;
    const q8s_ctx *m = c;
    const int64_t nb = m->cols / 32;
    const size_t ahead = ck_prefetch_bytes();
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = m->w + r * m->row_bytes;
        ck_prefetch_row(row, m->row_bytes, ahead);
#if defined(__x86_64__)
        if (m->level == CK_LEVEL_AVX512) {
            for (int64_t t = 0; t < m->tokens; t++)
                m->y[t * m->y_stride + r] = q8s_dot_512(row, m->apos + t * m->cols, m->aneg + t * m->cols, m->adsc + t * nb, nb);
            continue;
        }
        if (m->level == CK_LEVEL_AVX2) {
            for (int64_t t = 0; t < m->tokens; t++)
                m->y[t * m->y_stride + r] = q8s_dot_avx2(row, (const ck_q8a *)(m->act + t * m->act_stride), nb);
            continue;
        }
#endif
        // Other levels: rebuild the GGML row and run that level's ordinary kernel.
        uint8_t tmp[34 * 256];
        uint8_t *g = nb <= 256 ? tmp : malloc((size_t)nb * 34);
        if (!g) continue;
        for (int64_t b = 0; b < nb; b++) {
            memcpy(g + 34 * b, row + 2 * b, 2);
            memcpy(g + 34 * b + 2, row + 2 * nb + 32 * b, 32);
        }
        for (int64_t t = 0; t < m->tokens; t++)
            m->y[t * m->y_stride + r] = ck_dot(m->level, CK_Q8_0, g, m->act + t * m->act_stride, m->cols);
        if (g != tmp) free(g);
    }
}

void *ck_pool_scratch(ck_pool *p, size_t bytes);

int ck_matmul_q8_0_split(ck_pool *pool, int level, const void *w, size_t row_bytes, int64_t rows, int64_t cols,
                         const float *x, int64_t x_stride, int64_t tokens, float *y, int64_t y_stride) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
    if (!ck_level_supported(level)) level = ck_best_level();
    if (!pool || cols % 32 != 0 || rows < 0 || tokens < 0) return -1;
    if (rows == 0 || tokens == 0) return 0;
    const int64_t nb = cols / 32;
    size_t arb = ck_act_row_bytes(CK_Q8_0, cols);
    size_t act_bytes = (arb * (size_t)tokens + 63) & ~(size_t)63;
    size_t sign_bytes = ((size_t)tokens * (size_t)cols + 63) & ~(size_t)63;
    size_t sc_bytes = (size_t)tokens * (size_t)nb * 4;
    uint8_t *s = ck_pool_scratch(pool, act_bytes + 2 * sign_bytes + sc_bytes);
    if (!s) return -2;
    int8_t *ap = (int8_t *)(s + act_bytes), *an = (int8_t *)(s + act_bytes + sign_bytes);
    float *adsc = (float *)(s + act_bytes + 2 * sign_bytes);
    for (int64_t t = 0; t < tokens; t++) {
        const ck_q8a *a = (const ck_q8a *)(s + t * arb);
        ck_quantize_act_at(level, CK_Q8_0, x + t * x_stride, cols, (void *)a);
        if (level != CK_LEVEL_AVX512) continue;  // the sign-split copies feed q8s_dot_512 only
        for (int64_t b = 0; b < nb; b++) {
            adsc[t * nb + b] = a[b].d;
            for (int i = 0; i < 32; i++) {
                int8_t v = a[b].q[i];
                ap[t * cols + b * 32 + i] = v > 0 ? v : 0;
                an[t * cols + b * 32 + i] = v < 0 ? (int8_t)-v : 0;
            }
        }
    }
    q8s_ctx m = {level, w, row_bytes, cols, tokens, s, arb, ap, an, adsc, y, y_stride};
    int threads = ck_pool_threads(pool);
    int64_t grain = rows / ((int64_t)threads * 8);
    if (grain < 16) grain = 16;
    if (threads == 1) grain = rows;
    ck_pool_run(pool, q8s_task, &m, rows, grain);
    return 0;
}
