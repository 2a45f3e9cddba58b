// Micro-benchmark support (not used by the engine): times matmuls over synthetic weights so
// kernels and activation schemes can be compared in GB/s of weights streamed. Compiled with
// the kernel flags (-O2/-O3) in every configuration, so a debug `swift test` measures
// optimised kernels.
#include <stdlib.h>
#include "ck_internal.h"

static uint64_t bench_rng(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// Fills `bytes` of `type` blocks with random quants and finite scales of about 2^-8.
static void fill(uint32_t type, uint8_t *p, size_t bytes) {
    uint64_t s = 42;
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t r = bench_rng(&s);
        memcpy(p + i, &r, 8);
    }
    int bb = ck_block_bytes(type);
    uint16_t scale = ck_float_to_half(1.0f / 256.0f);
    for (size_t o = 0; o + (size_t)bb <= bytes; o += (size_t)bb) {
        switch (type) {
        case CK_F32: { float v = (float)(p[o] % 17) / 16.0f - 0.5f; memcpy(p + o, &v, 4); break; }
        case CK_F16: memcpy(p + o, &scale, 2); break;
        case CK_BF16: { uint16_t b = 0x3c00 | (p[o] & 0x7f); memcpy(p + o, &b, 2); break; }
        case CK_Q6_K: memcpy(p + o + 208, &scale, 2); break;
        case CK_Q4_1: case CK_Q5_1: case CK_Q4_K: case CK_Q5_K:
            memcpy(p + o + 2, &scale, 2);  // fallthrough: d at 0 too
            /* fall through */
        default: memcpy(p + o, &scale, 2); break;
        }
    }
}

double ck_bench_matmul(int level, uint32_t type, int64_t rows, int64_t cols, int threads,
                       int64_t tokens, int reps, int f32_scheme) {
    int bs = ck_block_size(type);
    if (bs == 0 || cols % bs) return -1;
    size_t row_bytes = (size_t)(cols / bs) * (size_t)ck_block_bytes(type);
    uint8_t *w = NULL;
    if (posix_memalign((void **)&w, 64, row_bytes * (size_t)rows)) return -1;
    fill(type, w, row_bytes * (size_t)rows);
    float *x = malloc(sizeof(float) * (size_t)(cols * tokens));
    float *y = malloc(sizeof(float) * (size_t)(rows * tokens));
    uint64_t s = 7;
    for (int64_t i = 0; i < cols * tokens; i++) x[i] = (float)(bench_rng(&s) % 2001) / 1000.0f - 1.0f;
    ck_pool *pool = ck_pool_create(threads);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {  // first run warms caches and page tables
        double t0 = ck_now();
        if (f32_scheme) {
            for (int64_t t = 0; t < tokens; t++)
                for (int64_t i = 0; i < rows; i++)
                    y[t * rows + i] = ck_dot_q8_0_f32(level, w + (size_t)i * row_bytes, x + t * cols, cols);
        } else {
            ck_matmul(pool, level, type, w, row_bytes, rows, cols, x, cols, tokens, y, rows);
        }
        double dt = ck_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    volatile float sink = y[0];
    (void)sink;
    ck_pool_destroy(pool);
    free(w); free(x); free(y);
    return best;
}
