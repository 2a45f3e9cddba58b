// C kernels for gemma-node: per-format dot products (scalar, AVX2, AVX-512/VNNI, NEON) with
// runtime CPU dispatch, activation quantization, a persistent thread pool and the matmul
// driver. Swift reaches these through GemmaKernels; nothing here knows about models.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set levels. CK_LEVEL_AUTO asks for the best one the CPU supports.
enum {
    CK_LEVEL_SCALAR = 0,
    CK_LEVEL_AVX2 = 1,
    CK_LEVEL_AVX512 = 2,
    CK_LEVEL_NEON = 3,
    CK_LEVEL_AUTO = -1,
};

/// Best level this CPU supports (cpuid is read once).
int ck_best_level(void);
/// Level used by ck_matmul: GEMMA_NODE_KERNELS (scalar|avx2|avx512|neon|auto) if set, else best.
int ck_active_level(void);
/// Forces the level used by ck_matmul (clamped to what the CPU supports); returns the level set.
int ck_set_active_level(int level);
/// 1 when `level` can run on this CPU.
int ck_level_supported(int level);
/// 1 when `level` has a SIMD kernel of its own for GGML type `type` (else it falls back to scalar C).
int ck_level_has_kernel(int level, uint32_t type);

/// Bytes of one prepared activation row for a weight of GGML type `type` and `cols` columns:
/// int8 blocks (see ck_quantize_act) for block formats, cols*4 for f32/f16/bf16 (x as is).
/// Returns 0 for an unknown type or cols not a whole number of blocks.
size_t ck_act_row_bytes(uint32_t type, int64_t cols);
/// Prepares x[0..cols) for dot products with weights of `type`: for 32-blocks, per block
/// {f32 d, i32 sum(q), i8 q[32]}; for 256-blocks (K-quants), per block {f32 d[8],
/// i16 bsums[16], i8 q[256]} (320 bytes) with one scale d[j] per 32 values; q = round(x/d),
/// d = max|x|/127 over the 32 values. f32/f16/bf16: copies x. Returns 0 on success.
int ck_quantize_act(uint32_t type, const float *x, int64_t cols, void *out);
/// As ck_quantize_act with the SIMD code of `level` (CK_LEVEL_AUTO = active); the output is
/// bit-identical at every level.
int ck_quantize_act_at(int level, uint32_t type, const float *x, int64_t cols, void *out);
/// Dot product of one weight row (GGML `type`, `cols` values) with a prepared activation row,
/// using the kernels of `level` (CK_LEVEL_AUTO = active level). NaN for an unknown type.
float ck_dot(int level, uint32_t type, const void *wrow, const void *act, int64_t cols);
/// Q8_0 weight row times an f32 vector, dequantizing in registers (activation scheme (a),
/// kept for measurement; the matmul uses quantized activations).
float ck_dot_q8_0_f32(int level, const void *wrow, const float *x, int64_t cols);

/// IEEE half -> float and float -> half (round to nearest even), portable C.
float ck_half_to_float(uint16_t h);
uint16_t ck_float_to_half(float f);

/// Persistent worker pool: `threads - 1` workers plus the calling thread.
typedef struct ck_pool ck_pool;
typedef void (*ck_task_fn)(void *ctx, int64_t begin, int64_t end, int thread);
ck_pool *ck_pool_create(int threads);
void ck_pool_destroy(ck_pool *pool);
int ck_pool_threads(const ck_pool *pool);
/// Runs fn over [0, count) in chunks of `grain` items, handed out dynamically; returns when all
/// are done. Calls must not nest or overlap on one pool.
void ck_pool_run(ck_pool *pool, ck_task_fn fn, void *ctx, int64_t count, int64_t grain);

/// y[t*yStride + r] = dot(W[r, :], x[t*xStride ...]) for r < rows, t < tokens, at `level`
/// (CK_LEVEL_AUTO = active). W rows are `rowBytes` apart. Uses the pool's scratch for the
/// quantized activations (grown on first use, then reused). Returns 0, or -1 for a bad type/shape,
/// -2 when scratch memory cannot be allocated.
int ck_matmul(ck_pool *pool, int level, uint32_t type, const void *w, size_t rowBytes,
              int64_t rows, int64_t cols, const float *x, int64_t xStride, int64_t tokens,
              float *y, int64_t yStride);

/// Monotonic clock in seconds (benchmarks).
double ck_now(void);

/// Benchmark: best-of-`reps` seconds for one matmul of a synthetic [rows, cols] `type` weight
/// times `tokens` activations on `threads` threads at `level`. f32_scheme = 1 times Q8_0 with f32
/// activations dequantized in registers (scheme (a)) instead of quantized activations. -1 on error.
double ck_bench_matmul(int level, uint32_t type, int64_t rows, int64_t cols, int threads,
                       int64_t tokens, int reps, int f32_scheme);


/// One query head's attention over cached positions first...last (inclusive, at most `capacity`
/// of them): scores[j] = q.k(first+j) * scale (soft-capped when softcap > 0), softmax,
/// out = sum_j w_j v(first+j). keys/values point at ring index 0 of this head; position p lives
/// at ring index p % capacity, rows `rowStride` floats apart. `scores` holds last-first+1
/// floats. Returns 0, or -1 for bad sizes. Level AUTO = active.
int ck_attention_head(int level, const float *q, const float *keys, const float *values, int64_t headDim,
                      int64_t rowStride, int64_t capacity, int64_t first, int64_t last, float scale,
                      float softcap, float *scores, float *out);

/// ck_attention_head over cache rows of GGML type `type`: CK F32 (0), F16 (1) or Q8_0 (8,
/// llama.cpp's block_q8_0: per 32 values an f16 scale d and 32 int8, value = d * q). Rows are
/// `rowBytes` bytes apart; keys/values point at ring index 0 of this head. q.k and the weighted
/// V sum read the stored type directly. -1 for an unknown type, a head dim the type cannot hold
/// (Q8_0: not a multiple of 32) or bad sizes.
int ck_attention_head_kv(int level, int type, const float *q, const void *keys, const void *values, int64_t headDim,
                         int64_t rowBytes, int64_t capacity, int64_t first, int64_t last, float scale,
                         float softcap, float *scores, float *out);
/// Bytes of one cache row of n values of `type` (F32, F16, Q8_0), -1 when the type cannot hold n.
int64_t ck_kv_row_bytes(int type, int64_t n);
/// Stores n floats as one cache row of `type`: F16 rounds to nearest even and saturates at
/// +-65504; Q8_0 per block d = f16(max|x| / 127), q = round(x / d) (the f16 d, so |x - d q| <= d/2).
/// Returns 0, or -1 as ck_kv_row_bytes.
int ck_kv_store(int type, const float *x, int64_t n, void *out);
/// Reads one cache row of `type` back as n floats. Returns 0, or -1 as ck_kv_row_bytes.
int ck_kv_load(int type, const void *row, int64_t n, float *out);

/// Sum of n floats (64-byte aligned) read sequentially at the active level: a streaming read
/// for measuring memory bandwidth (the result only keeps the loads alive).
double ck_stream_sum(const float *p, int64_t n);


/// g[i] = gelu_tanh(g[i]) * u[i] for i < n (Gemma's MLP), at `level` (AUTO = active).
void ck_gelu_mul(int level, float *g, const float *u, int64_t n);
/// v[i] = cap * tanh(v[i] / cap) (final-logit soft-cap); SIMD levels within cap * 6e-7 (plus
/// 1e-6 relative) of tanh, the portable twin is libm tanhf.
void ck_softcap(int level, float *v, int64_t n, float cap);
/// Returns the allocator's free heap memory to the kernel (glibc malloc_trim; a no-op elsewhere).
void ck_release_free_heap(void);


/// Q8_0 "split" row layout (LM head): per row the nb = cols/32 f16 scales, then the nb*32 int8
/// quants, in the row's usual bytes. Converts `rows` rows in place (to_split 1: GGML -> split,
/// 0: back).
void ck_q8_0_split_rows(void *w, size_t rowBytes, int64_t rows, int64_t cols, int to_split);
/// ck_matmul for a Q8_0 matrix in the split layout (same quantized activations as ck_matmul).
int ck_matmul_q8_0_split(ck_pool *pool, int level, const void *w, size_t rowBytes, int64_t rows, int64_t cols,
                         const float *x, int64_t xStride, int64_t tokens, float *y, int64_t yStride);

#ifdef __cplusplus
}
#endif
