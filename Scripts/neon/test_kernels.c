// NEON kernels against their scalar twins, for Scripts/test_neon.sh (cross-compiled for aarch64,
// run under qemu-aarch64). Plain C twin of the kernel checks in
// Tests/GemmaKernelsTests/KernelTests.swift, which cannot run here (no Swift for aarch64).
//
// Tolerance rule (the same as KernelTests.swift). Let a = x quantized per block to int8
// (d_b = max|x| / 127 over the block of 32 values: the K-quants' inputs too have one scale per 32), W = max_i |w_i| over the row,
// S = sum_i (|w_i| + W) |x_i|.
// * NEON vs scalar C (same quantized activations): |neon - scalar| <= 3e-4 S. Both form the same
//   exact integer sums per block and may differ only in the order (or fusing) of f32 operations.
// * Scalar C and NEON vs a double-precision reference on the exact x (dequantized here, not by
//   the library): adds the activation rounding bound sum_i |w_i| d_b(i) / 2.
// Bit-identical (==) where the code says so:
// * the dot-product flavour (vdotq_s32) vs the widening-multiply flavour of every NEON kernel
//   (ck_neon.c: same integer sums, same float code), on CPUs that have the instruction;
// * ck_matmul (1, 2, 3 threads, 1-9 tokens, strides) vs ck_dot of each row and token at the same
//   level (batch invariance), and ck_matmul_q8_0_split vs ck_dot on the GGML rows;
// * ck_quantize_act_at(NEON) vs ck_quantize_act; formats without a NEON kernel vs scalar C.
//
// Usage: test_kernels [--expect-dotprod 0|1]. Prints "N passed, N failed"; exit 1 on failure.
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ck_internal.h"

static int passed, failed;
static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void check(int ok, const char *fmt, ...) {
    if (ok) { passed++; return; }
    if (failed++ < 40) {
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL: ");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
}

// ---- random data (SplitMix64, fixed seeds)

static uint64_t rng_state;
static uint64_t rnext(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float runiform(void) { return (float)(rnext() >> 40) / 16777216.0f; }
static float rnormal(void) {
    float u = runiform(), v = runiform();
    if (u < 1e-7f) u = 1e-7f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}
static float bf16_to_float(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static const uint32_t all_types[] = {CK_F32, CK_F16, CK_BF16, CK_Q8_0, CK_Q4_0, CK_Q4_1, CK_Q5_0, CK_Q5_1, CK_Q4_K, CK_Q5_K, CK_Q6_K};
static const char *type_name(uint32_t t) {
    switch (t) {
    case CK_F32: return "f32"; case CK_F16: return "f16"; case CK_BF16: return "bf16";
    case CK_Q8_0: return "q8_0"; case CK_Q4_0: return "q4_0"; case CK_Q4_1: return "q4_1";
    case CK_Q5_0: return "q5_0"; case CK_Q5_1: return "q5_1"; case CK_Q4_K: return "q4_K";
    case CK_Q5_K: return "q5_K"; case CK_Q6_K: return "q6_K"; default: return "?";
    }
}
static int neon_has(uint32_t t) {  // formats ck_neon.c has kernels for
    return t == CK_F32 || t == CK_F16 || t == CK_BF16 || t == CK_Q8_0 || t == CK_Q4_0 || t == CK_Q5_0 ||
           t == CK_Q4_K || t == CK_Q6_K;
}
static size_t row_bytes(uint32_t t, int64_t cols) { return (size_t)(cols / ck_block_size(t)) * (size_t)ck_block_bytes(t); }

static void put_half(uint8_t *p, float v) { uint16_t h = ck_float_to_half(v); memcpy(p, &h, 2); }
static float scale(void) { return (runiform() * 2 - 1) * ldexpf(1.0f, -12 + (int)(rnext() % 10)); }

/// A random row, as randomRow in KernelTests.swift: random bytes with finite f16 scales of
/// varied size. fill >= 0: every quant byte is `fill` instead (extreme values for the
/// integer-range checks).
static void random_row(uint32_t t, int64_t cols, uint8_t *w, int fill) {
    size_t rb = row_bytes(t, cols);
    for (size_t i = 0; i < rb; i++) w[i] = fill >= 0 ? (uint8_t)fill : (uint8_t)rnext();
    if (t == CK_F32) { for (int64_t i = 0; i < cols; i++) { float v = rnormal(); memcpy(w + 4 * i, &v, 4); } return; }
    if (t == CK_F16) { for (int64_t i = 0; i < cols; i++) put_half(w + 2 * i, rnormal()); return; }
    if (t == CK_BF16) { for (int64_t i = 0; i < cols; i++) { uint16_t b = to_bf16(rnormal()); memcpy(w + 2 * i, &b, 2); } return; }
    int bb = ck_block_bytes(t);
    for (int64_t b = 0; b < cols / ck_block_size(t); b++) {
        uint8_t *o = w + b * bb;
        switch (t) {
        case CK_Q8_0: case CK_Q4_0: case CK_Q5_0: put_half(o, scale()); break;
        case CK_Q4_1: case CK_Q5_1: case CK_Q4_K: case CK_Q5_K: put_half(o, scale()); put_half(o + 2, scale()); break;
        case CK_Q6_K: put_half(o + 208, scale()); break;
        }
    }
}

// ---- reference: dequantize (written from the GGML block layouts, independent of ck_scalar.c)

static float h2f(const uint8_t *p) { return ck_half_to_float(ck_ld16(p)); }

static void dequant(uint32_t t, const uint8_t *w, int64_t cols, float *out) {
    int bb = ck_block_bytes(t);
    for (int64_t b = 0; b < cols / ck_block_size(t); b++) {
        const uint8_t *p = w + b * bb;
        float *o = out + b * ck_block_size(t);
        switch (t) {
        case CK_F32: memcpy(o, p, 4); break;
        case CK_F16: o[0] = h2f(p); break;
        case CK_BF16: o[0] = bf16_to_float(ck_ld16(p)); break;
        case CK_Q8_0: for (int j = 0; j < 32; j++) o[j] = h2f(p) * (float)(int8_t)p[2 + j]; break;
        case CK_Q4_0: case CK_Q4_1: {
            const uint8_t *qs = p + (t == CK_Q4_0 ? 2 : 4);
            float d = h2f(p), m = t == CK_Q4_1 ? h2f(p + 2) : 0.0f;
            for (int j = 0; j < 16; j++) {
                int lo = qs[j] & 15, hi = qs[j] >> 4;
                o[j] = t == CK_Q4_0 ? d * (float)(lo - 8) : d * (float)lo + m;
                o[j + 16] = t == CK_Q4_0 ? d * (float)(hi - 8) : d * (float)hi + m;
            }
            break;
        }
        case CK_Q5_0: case CK_Q5_1: {
            int off = t == CK_Q5_0 ? 2 : 4;
            float d = h2f(p), m = t == CK_Q5_1 ? h2f(p + 2) : 0.0f;
            uint32_t qh = ck_ld32(p + off);
            const uint8_t *qs = p + off + 4;
            for (int j = 0; j < 16; j++) {
                int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4, hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                o[j] = t == CK_Q5_0 ? d * (float)(lo - 16) : d * (float)lo + m;
                o[j + 16] = t == CK_Q5_0 ? d * (float)(hi - 16) : d * (float)hi + m;
            }
            break;
        }
        case CK_Q4_K: case CK_Q5_K: {
            float d = h2f(p), dmin = h2f(p + 2);
            const uint8_t *sc = p + 4, *qh = p + 16, *qs = p + (t == CK_Q4_K ? 16 : 48);
            for (int j = 0; j < 8; j++) {
                uint8_t s, m;
                ck_kscale(sc, j, &s, &m);
                for (int l = 0; l < 32; l++) {
                    int q = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 15;
                    if (t == CK_Q5_K) q |= ((qh[l] >> j) & 1) << 4;
                    o[32 * j + l] = d * (float)s * (float)q - dmin * (float)m;
                }
            }
            break;
        }
        case CK_Q6_K: {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float d = h2f(p + 208);
            for (int h = 0; h < 2; h++)
                for (int l = 0; l < 32; l++) {
                    int q[4] = {(ql[64 * h + l] & 15) | ((qh[32 * h + l] >> 0) & 3) << 4,
                                (ql[64 * h + l + 32] & 15) | ((qh[32 * h + l] >> 2) & 3) << 4,
                                (ql[64 * h + l] >> 4) | ((qh[32 * h + l] >> 4) & 3) << 4,
                                (ql[64 * h + l + 32] >> 4) | ((qh[32 * h + l] >> 6) & 3) << 4};
                    for (int k = 0; k < 4; k++) {
                        int idx = 128 * h + l + 32 * k;
                        o[idx] = d * (float)sc[idx / 16] * (float)(q[k] - 32);
                    }
                }
            break;
        }
        }
    }
}

typedef struct { double s, qb, ref; } bounds;

static bounds row_bounds(uint32_t t, const uint8_t *w, const float *x, int64_t cols) {
    float *wf = malloc(sizeof(float) * (size_t)cols);
    dequant(t, w, cols, wf);
    double wmax = 0, s = 0, qb = 0, ref = 0;
    for (int64_t i = 0; i < cols; i++) wmax = fmax(wmax, fabs(wf[i]));
    for (int64_t i = 0; i < cols; i++) {
        s += (fabs(wf[i]) + wmax) * fabs(x[i]);
        ref += (double)wf[i] * (double)x[i];
    }
    int bs = ck_block_size(t) > 1 ? 32 : 1;  // one activation scale per 32 values
    if (bs > 1)
        for (int64_t b = 0; b < cols / bs; b++) {
            double amax = 0;
            for (int64_t i = b * bs; i < (b + 1) * bs; i++) amax = fmax(amax, fabs(x[i]));
            for (int64_t i = b * bs; i < (b + 1) * bs; i++) qb += fabs(wf[i]) * amax / 127 / 2;
        }
    free(wf);
    return (bounds){s, qb, ref};
}

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

// ---- checks

static int n_sizes(uint32_t t, const int64_t **sizes) {
    static const int64_t s1[] = {1, 7, 15, 16, 17, 33, 63, 64, 65, 100, 640, 1023, 2048};
    static const int64_t s32[] = {32, 64, 96, 224, 1056, 2048};
    static const int64_t s256[] = {256, 512, 768, 1280, 2048};
    switch (ck_block_size(t)) {
    case 1: *sizes = s1; return 13;
    case 32: *sizes = s32; return 6;
    default: *sizes = s256; return 5;
    }
}

static int dotprod_cpu, bit_same[2], compared[2];  // [0] float formats, [1] NEON integer kernels

/// One row and activation vector through every path ck_dot offers on this CPU.
static void dot_case(uint32_t t, int64_t cols, const uint8_t *w, const float *x, const char *what) {
    const char *tn = type_name(t);
    bounds bd = row_bounds(t, w, x, cols);
    void *act = malloc(ck_act_row_bytes(t, cols) + 1);
    void *act2 = malloc(ck_act_row_bytes(t, cols) + 1);
    check(ck_quantize_act(t, x, cols, act) == 0, "%s cols %lld: quantize", tn, (long long)cols);
    memset(act2, 0xEE, ck_act_row_bytes(t, cols));
    ck_quantize_act_at(CK_LEVEL_NEON, t, x, cols, act2);
    check(memcmp(act, act2, ck_act_row_bytes(t, cols)) == 0, "%s cols %lld %s: ck_quantize_act_at(NEON) differs", tn, (long long)cols, what);
    free(act2);

    float sc = ck_dot(CK_LEVEL_SCALAR, t, w, act, cols);
    float ne = ck_dot(CK_LEVEL_NEON, t, w, act, cols);
    double tol = 3e-4 * bd.s;
    check(fabs((double)sc - bd.ref) <= bd.qb + tol, "%s cols %lld %s: scalar %.9g vs reference %.9g (qb %.3g, S %.3g)",
          tn, (long long)cols, what, sc, bd.ref, bd.qb, bd.s);
    check(fabs((double)ne - bd.ref) <= bd.qb + tol, "%s cols %lld %s: neon %.9g vs reference %.9g (qb %.3g, S %.3g)",
          tn, (long long)cols, what, ne, bd.ref, bd.qb, bd.s);
    check(fabs((double)ne - (double)sc) <= tol, "%s cols %lld %s: neon %.9g vs scalar %.9g (S %.3g)",
          tn, (long long)cols, what, ne, sc, bd.s);
    if (neon_has(t)) {
        compared[ck_block_size(t) > 1]++;
        bit_same[ck_block_size(t) > 1] += same_bits(ne, sc);
    }
    if (!neon_has(t)) {
        check(same_bits(ne, sc), "%s cols %lld %s: scalar fallback %.9g vs scalar %.9g", tn, (long long)cols, what, ne, sc);
    } else {
        ck_dot_fn mull = ck_neon_kernel_flavour(t, 0);
        float m = mull(w, act, cols);
        check(fabs((double)m - (double)sc) <= tol, "%s cols %lld %s: neon (vmull) %.9g vs scalar %.9g", tn, (long long)cols, what, m, sc);
        if (dotprod_cpu) {
            float d = ck_neon_kernel_flavour(t, 1)(w, act, cols);
            check(same_bits(d, m), "%s cols %lld %s: vdotq flavour %.9g != vmull flavour %.9g", tn, (long long)cols, what, d, m);
        }
    }
    if (t == CK_Q8_0) {  // activation scheme (a): f32 x, no activation rounding
        float fs = ck_dot_q8_0_f32(CK_LEVEL_SCALAR, w, x, cols), fn = ck_dot_q8_0_f32(CK_LEVEL_NEON, w, x, cols);
        check(fabs((double)fn - bd.ref) <= tol && fabs((double)fs - bd.ref) <= tol,
              "q8_0 f32 cols %lld %s: neon %.9g scalar %.9g reference %.9g", (long long)cols, what, fn, fs, bd.ref);
    }
    free(act);
}

static void test_dots(void) {
    for (size_t k = 0; k < sizeof all_types / sizeof *all_types; k++) {
        uint32_t t = all_types[k];
        rng_state = 100 + t;
        const int64_t *sizes;
        int ns = n_sizes(t, &sizes);
        for (int si = 0; si < ns; si++) {
            int64_t cols = sizes[si];
            uint8_t *w = malloc(row_bytes(t, cols));
            float *x = malloc(sizeof(float) * (size_t)cols);
            for (int trial = 0; trial < 3; trial++) {
                // Activations of varied scale per block, as real hidden states are.
                for (int64_t i = 0; i < cols; i++) x[i] = rnormal() * (float)(1 << ((i / 32 + trial) % 6));
                random_row(t, cols, w, -1);
                dot_case(t, cols, w, x, "random");
            }
            if (ck_block_size(t) > 1) {
                // Extreme quants against full-scale activations (every a = +-127): the widest
                // integer sums the kernels must hold (Q8_0 -128 * -127 pairs in int16, etc.).
                static const int fills[] = {0x00, 0x80, 0xFF, 0x7F};
                for (int f = 0; f < 4; f++)
                    for (int sign = -1; sign <= 1; sign += 2) {
                        for (int64_t i = 0; i < cols; i++) x[i] = (float)sign * (i % 3 == 2 ? -1.0f : 1.0f) * (f < 2 ? 1.0f : -1.0f);
                        random_row(t, cols, w, fills[f]);
                        dot_case(t, cols, w, x, fills[f] == 0x00 ? "fill 00" : fills[f] == 0x80 ? "fill 80" : fills[f] == 0xFF ? "fill FF" : "fill 7F");
                    }
            }
            free(w);
            free(x);
        }
        check(ck_level_has_kernel(CK_LEVEL_NEON, t) == neon_has(t), "%s: ck_level_has_kernel(NEON) = %d", type_name(t),
              ck_level_has_kernel(CK_LEVEL_NEON, t));
    }
}

/// ck_matmul equals ck_dot per (row, token) bit for bit, whatever the threads, tokens, strides.
static void test_matmul(void) {
    ck_pool *pools[3] = {ck_pool_create(1), ck_pool_create(2), ck_pool_create(3)};
    for (size_t k = 0; k < sizeof all_types / sizeof *all_types; k++) {
        uint32_t t = all_types[k];
        int64_t cols = ck_block_size(t) == 256 ? 512 : 96, rows = 37;
        rng_state = 99 + t;
        size_t rb = row_bytes(t, cols);
        uint8_t *w = malloc(rb * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) random_row(t, cols, w + r * rb, -1);
        static const int64_t token_counts[] = {1, 2, 3, 4, 5, 8, 9};
        for (int ti = 0; ti < 7; ti++) {
            int64_t T = token_counts[ti], xs = cols + 5, ys = rows + 3;
            float *x = malloc(sizeof(float) * (size_t)(T * xs));
            float *y = malloc(sizeof(float) * (size_t)(T * ys));
            for (int64_t i = 0; i < T * xs; i++) x[i] = rnormal();
            for (int p = 0; p < 3; p++)
                for (int level = CK_LEVEL_SCALAR; level <= CK_LEVEL_NEON; level += CK_LEVEL_NEON) {
                    for (int64_t i = 0; i < T * ys; i++) y[i] = NAN;
                    int rc = ck_matmul(pools[p], level, t, w, rb, rows, cols, x, xs, T, y, ys);
                    int bad = 0;
                    void *act = malloc(ck_act_row_bytes(t, cols));
                    for (int64_t tok = 0; tok < T; tok++) {
                        ck_quantize_act(t, x + tok * xs, cols, act);
                        for (int64_t r = 0; r < rows; r++)
                            bad += !same_bits(y[tok * ys + r], ck_dot(level, t, w + r * rb, act, cols));
                        for (int64_t r = rows; r < ys && tok * ys + r < T * ys; r++) bad += !isnan(y[tok * ys + r]);
                    }
                    free(act);
                    check(rc == 0 && bad == 0, "matmul %s tokens %lld threads %d level %d: rc %d, %d outputs differ",
                          type_name(t), (long long)T, p + 1, level, rc, bad);
                }
            free(x);
            free(y);
        }
        free(w);
    }
    // Q8_0 split layout (LM head) at NEON: the GGML rows' ck_dot, bit for bit.
    for (int p = 0; p < 3; p++) {
        int64_t cols = 96, rows = 37, T = 3;
        size_t rb = row_bytes(CK_Q8_0, cols);
        rng_state = 7;
        uint8_t *w = malloc(rb * (size_t)rows), *ws = malloc(rb * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) random_row(CK_Q8_0, cols, w + r * rb, -1);
        memcpy(ws, w, rb * (size_t)rows);
        ck_q8_0_split_rows(ws, rb, rows, cols, 1);
        float x[3 * 96], y[3 * 37];
        for (int i = 0; i < 3 * 96; i++) x[i] = rnormal();
        int rc = ck_matmul_q8_0_split(pools[p], CK_LEVEL_NEON, ws, rb, rows, cols, x, cols, T, y, rows);
        int bad = 0;
        uint8_t act[3 * 40];
        for (int64_t tok = 0; tok < T; tok++) {
            ck_quantize_act(CK_Q8_0, x + tok * cols, cols, act);
            for (int64_t r = 0; r < rows; r++) bad += !same_bits(y[tok * rows + r], ck_dot(CK_LEVEL_NEON, CK_Q8_0, w + r * rb, act, cols));
        }
        ck_q8_0_split_rows(ws, rb, rows, cols, 0);
        check(rc == 0 && bad == 0 && memcmp(w, ws, rb * (size_t)rows) == 0, "q8_0 split matmul threads %d: rc %d, %d differ", p + 1, rc, bad);
        free(w);
        free(ws);
    }
    for (int p = 0; p < 3; p++) ck_pool_destroy(pools[p]);
}

/// Every index covered exactly once over many back-to-back pool runs.
static _Atomic int hits[1001];
static void hit_task(void *ctx, int64_t b, int64_t e, int thread) {
    int threads = *(int *)ctx;
    for (int64_t i = b; i < e; i++) atomic_fetch_add_explicit(&hits[i], thread >= 0 && thread < threads ? 1 : 1000, memory_order_relaxed);
}
static void test_pool(void) {
    static const int tc[] = {1, 2, 3, 5};
    static const int64_t counts[] = {0, 1, 2, 7, 100, 1001};
    for (int a = 0; a < 4; a++) {
        int threads = tc[a];
        ck_pool *pool = ck_pool_create(threads);
        check(ck_pool_threads(pool) == threads, "pool threads %d", threads);
        for (int c = 0; c < 6; c++)
            for (int64_t grain = 1; grain <= 16; grain += 15) {
                for (int i = 0; i < 1001; i++) atomic_store(&hits[i], 0);
                for (int rep = 0; rep < 20; rep++) ck_pool_run(pool, hit_task, &threads, counts[c], grain);
                int ok = 1;
                for (int64_t i = 0; i < counts[c]; i++) ok &= atomic_load(&hits[i]) == 20;
                check(ok, "pool threads %d count %lld grain %lld", threads, (long long)counts[c], (long long)grain);
            }
        ck_pool_destroy(pool);
    }
}

/// Runs of 2 chunks alternating with runs of 64, back to back (ck_pool.c's header: a worker
/// holding the finished run's ticket used to claim a chunk of the next run, which then ran twice;
/// under qemu that showed as a crash or a hang about once in 15 driver runs). A hang here is
/// caught by test_neon.sh's timeout.
static long stress_state[2 + 64];  // [0] the current run, [1] chunks out of their run, [2..] hits
static void stress_task(void *ctx, int64_t b, int64_t e, int thread) {
    (void)ctx; (void)thread;
    long run = __atomic_load_n(&stress_state[0], __ATOMIC_RELAXED);
    if (e > (run % 2 == 0 ? 2 : 64)) __atomic_fetch_add(&stress_state[1], 1, __ATOMIC_RELAXED);
    for (int64_t i = b; i < e; i++) __atomic_fetch_add(&stress_state[2 + i], 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&stress_state[0], __ATOMIC_RELAXED) != run) __atomic_fetch_add(&stress_state[1], 1, __ATOMIC_RELAXED);
}
static void test_pool_few_then_many(void) {
    const long runs = 20000;
    for (int threads = 2; threads <= 3; threads++) {
        ck_pool *pool = ck_pool_create(threads);
        memset(stress_state, 0, sizeof stress_state);
        for (long run = 0; run < runs; run++) {
            __atomic_store_n(&stress_state[0], run, __ATOMIC_RELAXED);
            ck_pool_run(pool, stress_task, NULL, run % 2 == 0 ? 2 : 64, 1);
        }
        int wrong = 0;
        for (int i = 0; i < 64; i++) wrong += stress_state[2 + i] != (i < 2 ? runs : runs / 2);
        check(wrong == 0 && stress_state[1] == 0, "pool threads %d, few then many chunks: %d indices wrong, %ld chunks out of their run",
              threads, wrong, stress_state[1]);
        ck_pool_destroy(pool);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // whole lines out even if the run is killed (test_neon.sh's timeout)
    int expect = -1;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--expect-dotprod")) expect = atoi(argv[i + 1]);
    dotprod_cpu = ck_neon_dotprod(0);
    printf("best level %d (NEON = %d), CPU dot product: %s, kernels use it: %s\n", ck_best_level(), CK_LEVEL_NEON,
           dotprod_cpu ? "yes" : "no", ck_neon_dotprod(1) ? "yes" : "no");
    check(ck_best_level() == CK_LEVEL_NEON, "best level %d, want NEON", ck_best_level());
    if (expect >= 0) check(dotprod_cpu == expect, "CPU dot product %d, expected %d", dotprod_cpu, expect);
    test_dots();
    test_matmul();
    test_pool();
    test_pool_few_then_many();
    printf("NEON bit-identical to scalar C (information; the rule is 3e-4 S): float formats %d of %d, "
           "integer kernels %d of %d\n", bit_same[0], compared[0], bit_same[1], compared[1]);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
