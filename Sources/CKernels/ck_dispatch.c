// Runtime kernel selection (cpuid once, GEMMA_NODE_KERNELS override) and the matmul driver:
// activations are quantized once per call into the pool's scratch, then output rows are handed
// out to the pool in chunks; each weight row is read once and reused for every token.
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>
#include "ck_internal.h"
#if defined(__x86_64__)
#include <cpuid.h>
#endif

void *ck_pool_scratch(ck_pool *p, size_t bytes);

static pthread_once_t level_once = PTHREAD_ONCE_INIT;
static int best_level = CK_LEVEL_SCALAR;
static _Atomic int active_level = CK_LEVEL_SCALAR;

static void detect(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        best_level = CK_LEVEL_AVX2;
    if (best_level == CK_LEVEL_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
        best_level = CK_LEVEL_AVX512;
#elif defined(__aarch64__)
    best_level = CK_LEVEL_NEON;
#endif
    int level = best_level;
    const char *env = getenv("GEMMA_NODE_KERNELS");
    if (env) {
        if (!strcasecmp(env, "scalar")) level = CK_LEVEL_SCALAR;
        else if (!strcasecmp(env, "avx2")) level = CK_LEVEL_AVX2;
        else if (!strcasecmp(env, "avx512")) level = CK_LEVEL_AVX512;
        else if (!strcasecmp(env, "neon")) level = CK_LEVEL_NEON;
        // Not ck_level_supported(): it calls ck_best_level(), which waits on this same
        // pthread_once and would deadlock. Levels up to best_level are supported (x86); NEON
        // only where it is the best level.
        int ok = level == CK_LEVEL_SCALAR || level == best_level ||
                 (level == CK_LEVEL_AVX2 && best_level == CK_LEVEL_AVX512);
        if (!ok) level = best_level;
    }
    atomic_store(&active_level, level);
}

// The software prefetch distance of the generic one-token row loop (K-quants, GGML-layout
// Q8_0, float formats): none by default, GEMMA_NODE_PREFETCH_GENERIC=bytes to set one. The
// prefetch there was measured to slow decode: on the AMD EPYC (Zen 4) machine, a synthetic
// gemma-3-4b Q4_K_M at 1 thread went from 4.8-5.5 to 6.0-6.6 tok/s without it, 2 ranks x 1 thread
// from 7.8-9.0 to 9.7-11.8, AVX2 1 thread 4.2-5.0 -> 4.7-5.7, the default model unchanged; the
// hardware prefetchers already stream those long rows. The split Q8_0 LM head and the Q5_0
// path keep ck_prefetch_bytes (measured to help there, session 3, docs/KERNELS.md).
static size_t ck_prefetch_generic_bytes(void) {
    static _Atomic long cached = -1;
    long v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("GEMMA_NODE_PREFETCH_GENERIC");
        v = e && *e ? atol(e) : 0;
        if (v < 0) v = 0;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (size_t)v;
}

// The default prefetch distance: 4 KiB, one page ahead (2-8 KiB measured alike on an Intel
// Xeon, nothing better than 4 KiB on the AMD EPYC Zen 4 machine), except 8 KiB on AMD family
// 26 (Zen 5), where one core streams ~37 GB/s and so needs more bytes in flight: decode on the
// default model was faster with 8 KiB in 17 of 18 alternating pairs, median x1.06, 12 KiB
// alike, 16 KiB and 2 KiB slower (docs/KERNELS.md).
static long default_prefetch_bytes(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    // "AuthenticAMD" in ebx, edx, ecx of leaf 0; the family in leaf 1 (base, plus the extended
    // family when the base is 15).
    if (__get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u &&
        __get_cpuid(1, &a, &b, &c, &d)) {
        unsigned family = (a >> 8) & 0xf;
        if (family == 0xf) family += (a >> 20) & 0xff;
        if (family >= 0x1a) return 8192;
    }
#endif
    return 4096;
}

size_t ck_prefetch_bytes(void) {
    static _Atomic long cached = -1;
    long v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("GEMMA_NODE_PREFETCH");
        v = e && *e ? atol(e) : default_prefetch_bytes();
        if (v < 0) v = 0;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (size_t)v;
}

int ck_best_level(void) {
    pthread_once(&level_once, detect);
    return best_level;
}

int ck_level_supported(int level) {
    int best = ck_best_level();
    switch (level) {
    case CK_LEVEL_SCALAR: return 1;
    case CK_LEVEL_AVX2: return best == CK_LEVEL_AVX2 || best == CK_LEVEL_AVX512;
    case CK_LEVEL_AVX512: return best == CK_LEVEL_AVX512;
    case CK_LEVEL_NEON: return best == CK_LEVEL_NEON;
    default: return 0;
    }
}

int ck_active_level(void) {
    pthread_once(&level_once, detect);
    return atomic_load(&active_level);
}

int ck_set_active_level(int level) {
    pthread_once(&level_once, detect);
    if (level == CK_LEVEL_AUTO || !ck_level_supported(level)) level = best_level;
    atomic_store(&active_level, level);
    return level;
}

static ck_dot_fn level_kernel(int level, uint32_t type) {
    switch (level) {
    case CK_LEVEL_AVX2: return ck_avx2_kernel(type);
    case CK_LEVEL_AVX512: return ck_avx512_kernel(type);
    case CK_LEVEL_NEON: return ck_neon_kernel(type);
    default: return 0;
    }
}

int ck_level_has_kernel(int level, uint32_t type) {
    return level != CK_LEVEL_SCALAR && level_kernel(level, type) != 0;
}

static ck_dot_fn kernel(int level, uint32_t type) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
    if (!ck_level_supported(level)) level = CK_LEVEL_SCALAR;
    ck_dot_fn f = level_kernel(level, type);
    return f ? f : ck_scalar_kernel(type);
}

float ck_dot(int level, uint32_t type, const void *wrow, const void *act, int64_t cols) {
    ck_dot_fn f = kernel(level, type);
    int bs = ck_block_size(type);
    if (!f || bs == 0 || cols % bs != 0) return __builtin_nanf("");
    return f(wrow, act, cols);
}

float ck_dot_q8_0_f32(int level, const void *wrow, const float *x, int64_t cols) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
    if (!ck_level_supported(level)) level = CK_LEVEL_SCALAR;
    switch (level) {
    case CK_LEVEL_AVX2: return ck_q8_0_f32_avx2(wrow, x, cols);
    case CK_LEVEL_AVX512: return ck_q8_0_f32_avx512(wrow, x, cols);
    case CK_LEVEL_NEON: return ck_q8_0_f32_neon(wrow, x, cols);
    default: return ck_q8_0_f32_scalar(wrow, x, cols);
    }
}

typedef struct {
    ck_dot_fn fn;
    int level;
    uint32_t type;
    const uint8_t *w;
    size_t row_bytes;
    const uint8_t *act;
    size_t act_stride;  // bytes between tokens' activation rows
    const float *x;
    int64_t x_stride;
    int64_t tokens, cols;
    float *y;
    int64_t y_stride;
    // Prefill GEMM (ck_gemm.c): activation pairs and per-thread row scratch, NULL when unused.
    const void *gemm_act;
    uint8_t *gemm_rows;
    size_t gemm_row_bytes;
    int kgemm;  // multi-token Q4_K/Q6_K path (ck_gemm_k.c); uses gemm_rows as row scratch
    int gemm2;  // multi-token AVX2 path (ck_gemm_avx2.c); uses gemm_rows as row scratch
    // Q5_0 activations laid out for q5dot = ck_q5pre_kernel(level) (ck_q5.c), q5pre_stride bytes per token; NULL when unused.
    const uint8_t *q5pre;
    size_t q5pre_stride;
    ck_dot_fn q5dot;
} mm_ctx;

int ck_quantize_act_at(int level, uint32_t type, const float *x, int64_t cols, void *out) {
    if (level == CK_LEVEL_AUTO) level = ck_active_level();
    if (!ck_level_supported(level)) level = CK_LEVEL_SCALAR;
    switch (level) {
    case CK_LEVEL_AVX2: return ck_quant_act_avx2(type, x, cols, out);
    case CK_LEVEL_AVX512: return ck_quant_act_avx512(type, x, cols, out);
    default: return ck_quantize_act(type, x, cols, out);
    }
}

static void quant_task(void *c, int64_t t0, int64_t t1, int thread) {
    (void)thread;
    mm_ctx *m = c;
    for (int64_t t = t0; t < t1; t++)
        ck_quantize_act_at(m->level, m->type, m->x + t * m->x_stride, m->cols, (void *)(m->act + t * m->act_stride));
}

// Row by row, every token per row: the row stays in L1 while the tokens' activations stream
// from L2, so a batch of T tokens reads the weights from memory once, not T times. The GEMM
// paths (Q8_0/Q5_0 in ck_gemm.c, Q4_K/Q6_K in ck_gemm_k.c, AVX-512; all four in
// ck_gemm_avx2.c, AVX2) also decode each weight row once per matmul instead of once per token.
static void mm_task(void *c, int64_t r0, int64_t r1, int thread) {
    const mm_ctx *m = c;
    const int64_t T = m->tokens;
    if (m->gemm_act) {
        ck_gemm_rows(m->type, m->w, m->row_bytes, r0, r1, m->cols, m->gemm_act, T,
                     m->gemm_rows + (size_t)thread * m->gemm_row_bytes, m->y, m->y_stride);
        return;
    }
    if (m->kgemm) {
        ck_gemmk_rows(m->type, m->w, m->row_bytes, r0, r1, m->cols, m->act, m->act_stride, T,
                      m->gemm_rows + (size_t)thread * m->gemm_row_bytes, m->y, m->y_stride);
        return;
    }
    if (m->gemm2) {
        ck_gemm2_rows(m->type, m->w, m->row_bytes, r0, r1, m->cols, m->act, m->act_stride, T,
                      m->gemm_rows + (size_t)thread * m->gemm_row_bytes, m->y, m->y_stride);
        return;
    }
    if (m->q5pre) {
        const size_t ahead = ck_prefetch_bytes();
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *wr = m->w + r * m->row_bytes;
            ck_prefetch_row(wr, m->row_bytes, ahead);
            for (int64_t t = 0; t < T; t++) m->y[t * m->y_stride + r] = m->q5dot(wr, m->q5pre + t * m->q5pre_stride, m->cols);
        }
        return;
    }
    if (T == 1) {
        const size_t ahead = ck_prefetch_generic_bytes();
        for (int64_t r = r0; r < r1; r++) {
            ck_prefetch_row(m->w + r * m->row_bytes, m->row_bytes, ahead);
            m->y[r] = m->fn(m->w + r * m->row_bytes, m->act, m->cols);
        }
        return;
    }
    // Batch invariance (issue 6: greedy alone == batched): every token goes through the same
    // one-token kernel `fn` as a decode step, so a token's outputs never depend on its batch.
    // The GEMM paths above reproduce fn bit for bit (the old four-token kernels, within 3e-4 S
    // of fn, were removed).
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = m->w + r * m->row_bytes;
        for (int64_t t = 0; t < T; t++) m->y[t * m->y_stride + r] = m->fn(wr, m->act + t * m->act_stride, m->cols);
    }
}

int ck_matmul(ck_pool *pool, int level, uint32_t type, const void *w, size_t row_bytes,
              int64_t rows, int64_t cols, const float *x, int64_t x_stride, int64_t tokens,
              float *y, int64_t y_stride) {
    ck_dot_fn fn = kernel(level, type);
    size_t arb = ck_act_row_bytes(type, cols);
    if (!fn || arb == 0 || rows < 0 || tokens < 0) return -1;
    if (rows == 0 || tokens == 0) return 0;
    mm_ctx m = {fn, level, type, w, row_bytes, NULL, 0, x, x_stride, tokens, cols, y, y_stride,
                NULL, NULL, 0, 0, 0, NULL, 0, NULL};
    int threads = pool ? ck_pool_threads(pool) : 1;
    if (ck_block_size(type) == 1) {
        m.act = (const uint8_t *)x;  // plain float weights read x directly
        m.act_stride = (size_t)x_stride * 4;
    } else {
        if (!pool) return -2;
        const int lv = level == CK_LEVEL_AUTO ? ck_active_level() : level;
        int gemm = ck_gemm_applies(lv, type, cols, tokens);
        int kgemm = !gemm && ck_gemmk_applies(lv, type, cols, tokens);
        int gemm2 = !gemm && !kgemm && ck_gemm2_applies(lv, type, cols, tokens);
        int q5pre = !gemm && !kgemm && !gemm2 && ck_q5pre_applies(lv, type, cols);
        // AVX2 Q5_0 prefill reads the activations laid out as for q5pre (ck_gemm_avx2.c).
        int gemm2_q5 = gemm2 && type == CK_Q5_0;
        size_t act_bytes = (arb * (size_t)tokens + 63) & ~(size_t)63;
        size_t pair_bytes = gemm ? ck_gemm_act_bytes(cols, tokens)
                            : q5pre || gemm2_q5 ? ck_q5pre_bytes(lv, cols) * (size_t)tokens : 0;
        size_t row_bytes_g = gemm    ? ck_gemm_row_bytes(cols)
                             : kgemm ? ck_gemmk_row_bytes(cols)
                             : gemm2 ? ck_gemm2_row_bytes(type, cols)
                                     : 0;
        uint8_t *s = ck_pool_scratch(pool, act_bytes + pair_bytes + row_bytes_g * (size_t)threads);
        if (!s) return -2;
        m.act = s;
        m.act_stride = arb;
        if (tokens >= 8) ck_pool_run(pool, quant_task, &m, tokens, 1);
        else quant_task(&m, 0, tokens, 0);
        if (gemm) {
            ck_gemm_prepare(type, s, arb, tokens, cols, s + act_bytes);
            m.gemm_act = s + act_bytes;
            m.gemm_rows = s + act_bytes + pair_bytes;
            m.gemm_row_bytes = row_bytes_g;
        }
        if (q5pre || gemm2_q5) {  // Q5_0 activations laid out once per matmul (ck_q5.c)
            const size_t pb = ck_q5pre_bytes(lv, cols);
            for (int64_t t = 0; t < tokens; t++) ck_q5pre_prepare(lv, s + t * arb, cols, s + act_bytes + (size_t)t * pb);
            if (q5pre) {
                m.q5pre = s + act_bytes;
                m.q5pre_stride = pb;
                m.q5dot = ck_q5pre_kernel(lv);
            } else {  // the AVX2 prefill path reads them in place of the ck_q8a rows
                m.act = s + act_bytes;
                m.act_stride = pb;
            }
        }
        if (gemm2) {
            ck_gemm2_prepare(type, s, arb, tokens, cols);  // K-quants: the path's transposed layout
            m.gemm2 = 1;
            m.gemm_rows = s + act_bytes + pair_bytes;
            m.gemm_row_bytes = row_bytes_g;
        }
        if (kgemm) {
            ck_gemmk_prepare(s, arb, tokens, cols);  // the path's transposed activation layout
            m.kgemm = 1;
            m.gemm_rows = s + act_bytes;
            m.gemm_row_bytes = row_bytes_g;
        }
    }
    // One token (decode): about 8 chunks per thread for load balance when a core is shared or
    // slower, but at least 16 rows per chunk so the atomic counter stays off the profile. A
    // batch (prefill) makes each row cost `tokens` dot products, so 8 chunks per thread left
    // the other thread idle for half a chunk on average at the end of every matmul: ~32 per
    // thread, in whole 8-row tiles of the GEMM paths. Which rows a chunk holds never changes a
    // row's result.
    int64_t grain;
    if (tokens >= 8) {
        grain = (rows / ((int64_t)threads * 32) + 7) & ~(int64_t)7;
        if (grain < 8) grain = 8;
    } else {
        grain = rows / ((int64_t)threads * 8);
        if (grain < 16) grain = 16;
    }
    if (threads == 1) grain = rows;
    ck_pool_run(pool, mm_task, &m, rows, grain);
    return 0;
}
