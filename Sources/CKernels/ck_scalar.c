// Portable scalar C kernels: half conversions, activation quantization and one dot product
// per weight format. They are the fallback on CPUs without SIMD kernels and the twin the SIMD
// kernels are tested against (same quantized activations, same integer block sums).
#include <math.h>
#include "ck_internal.h"

float ck_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        // Zero or subnormal: man * 2^-24 is exact in f32.
        float f = (float)man * 5.9604644775390625e-8f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ck_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00 | (uint16_t)((ax >> 13) & 0x1FF);  // quiet NaN
    if (ax >= 0x477FF000u) return sign | 0x7C00;  // rounds to infinity (>= 65520)
    if (ax >= 0x38800000u) {                      // normal half
        uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);
        return sign | (uint16_t)((r >> 13) - (112u << 10));
    }
    uint32_t e = ax >> 23;
    if (e == 0) return sign;  // f32 subnormal: far below the half range
    uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    uint32_t s = 126 - e;  // value = m * 2^(e-150); half units are 2^-24
    if (s > 24) return sign;
    uint32_t h = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return sign | (uint16_t)h;
}

int ck_block_size(uint32_t type) {
    switch (type) {
    case CK_F32: case CK_F16: case CK_BF16: return 1;
    case CK_Q4_0: case CK_Q4_1: case CK_Q5_0: case CK_Q5_1: case CK_Q8_0: return 32;
    case CK_Q4_K: case CK_Q5_K: case CK_Q6_K: return 256;
    default: return 0;
    }
}

int ck_block_bytes(uint32_t type) {
    switch (type) {
    case CK_F32: return 4;
    case CK_F16: case CK_BF16: return 2;
    case CK_Q4_0: return 18;
    case CK_Q4_1: return 20;
    case CK_Q5_0: return 22;
    case CK_Q5_1: return 24;
    case CK_Q8_0: return 34;
    case CK_Q4_K: return 144;
    case CK_Q5_K: return 176;
    case CK_Q6_K: return 210;
    default: return 0;
    }
}

size_t ck_act_row_bytes(uint32_t type, int64_t cols) {
    int bs = ck_block_size(type);
    if (bs == 0 || cols < 0 || cols % bs != 0) return 0;
    if (bs == 1) return (size_t)cols * 4;
    if (bs == 32) return (size_t)(cols / 32) * sizeof(ck_q8a);
    return (size_t)(cols / 256) * sizeof(ck_q8k);  // 320 bytes per 256 values
}

// Round to nearest even by the 1.5 * 2^23 trick (exact for |v| < 2^22; here |v| <= 127 + tiny),
// which compilers vectorise, unlike nearbyintf's libm call. Clamped to +-127 so the
// activation is never -128 (the SIMD sign tricks rely on that).
static inline int8_t q8(float v) {
    float r = (v + 12582912.0f) - 12582912.0f;
    r = r > 127.0f ? 127.0f : r;
    r = r < -127.0f ? -127.0f : r;
    return (int8_t)r;
}

int ck_quantize_act(uint32_t type, const float *x, int64_t cols, void *out) {
    int bs = ck_block_size(type);
    if (bs == 0 || cols % bs != 0) return -1;
    if (bs == 1) {
        memcpy(out, x, (size_t)cols * 4);
        return 0;
    }
    if (bs == 32) {
        ck_q8a *o = out;
        for (int64_t b = 0; b < cols / 32; b++, x += 32) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                o[b].q[j] = q8(x[j] * id);
                sum += o[b].q[j];
            }
            o[b].d = d;
            o[b].sum = sum;
        }
        return 0;
    }
    ck_q8k *o = out;
    for (int64_t b = 0; b < cols / 256; b++) {
        for (int c = 0; c < 8; c++, x += 32) {  // one scale per 32 values, as ck_q8a
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            for (int j = 0; j < 32; j++) o[b].q[32 * c + j] = q8(x[j] * id);
            o[b].d[c] = d;
        }
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += o[b].q[16 * g + j];
            o[b].bsums[g] = (int16_t)sum;
        }
    }
    return 0;
}

// ---- plain float formats (activation = f32 x)

static float dot_f32(const void *w, const void *act, int64_t n) {
    const float *a = w, *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc += a[i] * x[i];
    return acc;
}

static float dot_f16(const void *w, const void *act, int64_t n) {
    const uint16_t *a = w;
    const float *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc += ck_half_to_float(a[i]) * x[i];
    return acc;
}

static float dot_bf16(const void *w, const void *act, int64_t n) {
    const uint16_t *a = w;
    const float *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)a[i] << 16;
        float v;
        memcpy(&v, &bits, 4);
        acc += v * x[i];
    }
    return acc;
}

// ---- 32-blocks times ck_q8a

static float dot_q8_0(const void *w, const void *act, int64_t n) {
    const blk_q8_0 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int s = 0;
        for (int j = 0; j < 32; j++) s += b[i].qs[j] * a[i].q[j];
        acc += (float)s * (ck_half_to_float(ck_ld16(&b[i].d)) * a[i].d);
    }
    return acc;
}

static float dot_q4_0(const void *w, const void *act, int64_t n) {
    const blk_q4_0 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += (b[i].qs[j] & 0xF) * a[i].q[j] + (b[i].qs[j] >> 4) * a[i].q[j + 16];
        float d = ck_half_to_float(ck_ld16(&b[i].d));
        acc += (float)s * (d * a[i].d);
        corr += d * a[i].d * (float)a[i].sum;
    }
    return acc - 8.0f * corr;
}

static float dot_q4_1(const void *w, const void *act, int64_t n) {
    const blk_q4_1 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += (b[i].qs[j] & 0xF) * a[i].q[j] + (b[i].qs[j] >> 4) * a[i].q[j + 16];
        acc += (float)s * (ck_half_to_float(ck_ld16(&b[i].d)) * a[i].d);
        corr += ck_half_to_float(ck_ld16(&b[i].m)) * a[i].d * (float)a[i].sum;
    }
    return acc + corr;
}

static inline int q5_dot(const uint8_t *qs, uint32_t qh, const int8_t *q) {
    int s = 0;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0xF) | (int)((qh >> j) & 1u) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
        s += lo * q[j] + hi * q[j + 16];
    }
    return s;
}

static float dot_q5_0(const void *w, const void *act, int64_t n) {
    const blk_q5_0 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int s = q5_dot(b[i].qs, ck_ld32(b[i].qh), a[i].q);
        float d = ck_half_to_float(ck_ld16(&b[i].d));
        acc += (float)s * (d * a[i].d);
        corr += d * a[i].d * (float)a[i].sum;
    }
    return acc - 16.0f * corr;
}

static float dot_q5_1(const void *w, const void *act, int64_t n) {
    const blk_q5_1 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int s = q5_dot(b[i].qs, ck_ld32(b[i].qh), a[i].q);
        acc += (float)s * (ck_half_to_float(ck_ld16(&b[i].d)) * a[i].d);
        corr += ck_half_to_float(ck_ld16(&b[i].m)) * a[i].d * (float)a[i].sum;
    }
    return acc + corr;
}

// ---- 256-blocks times ck_q8k (eight activation scales a->d[j], one per 32 values)

// One Q4_K or Q5_K super-block (same scales and minimums; Q5_K adds a fifth bit per value
// from qh, NULL for Q4_K) times its activations: per sub-block j of 32 values the exact
// integers sc_j * sum(q * a) and m_j * (bsums[2j] + bsums[2j+1]) (|.| < 2^23, exact in f32),
// each scaled by the sub-block's activation scale a->d[j], then
// d * sum_j a.d_j sc_j s_j - dmin * sum_j a.d_j m_j bsum_j.
static inline float dot_k45_block(uint16_t d, uint16_t dmin, const uint8_t *scales, const uint8_t *qs_all,
                                  const uint8_t *qh, const ck_q8k *a) {
    float fq = 0.0f, fm = 0.0f;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        ck_kscale(scales, j, &sc, &m);
        const uint8_t *qs = qs_all + 32 * (j / 2);
        int shift = 4 * (j & 1), s = 0;
        for (int l = 0; l < 32; l++) {
            int q = (qs[l] >> shift) & 0xF;
            if (qh) q |= ((qh[l] >> j) & 1) << 4;
            s += q * a->q[32 * j + l];
        }
        fq += a->d[j] * (float)(sc * s);
        fm += a->d[j] * (float)(m * (a->bsums[2 * j] + a->bsums[2 * j + 1]));
    }
    return ck_half_to_float(d) * fq - ck_half_to_float(dmin) * fm;
}

static float dot_q4_K(const void *w, const void *act, int64_t n) {
    const blk_q4_K *b = w;
    const ck_q8k *a = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++)
        acc += dot_k45_block(ck_ld16(&b[i].d), ck_ld16(&b[i].dmin), b[i].scales, b[i].qs, NULL, &a[i]);
    return acc;
}

static float dot_q5_K(const void *w, const void *act, int64_t n) {
    const blk_q5_K *b = w;
    const ck_q8k *a = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++)
        acc += dot_k45_block(ck_ld16(&b[i].d), ck_ld16(&b[i].dmin), b[i].scales, b[i].qs, b[i].qh, &a[i]);
    return acc;
}

static float dot_q6_K(const void *w, const void *act, int64_t n) {
    const blk_q6_K *b = w;
    const ck_q8k *a = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        int32_t grp[16] = {0};
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *q = a[i].q + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q0 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q1 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q2 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q3 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                grp[8 * h + (l) / 16] += q0 * q[l];
                grp[8 * h + (l + 32) / 16] += q1 * q[l + 32];
                grp[8 * h + (l + 64) / 16] += q2 * q[l + 64];
                grp[8 * h + (l + 96) / 16] += q3 * q[l + 96];
            }
        }
        // Per sub-block j of 32 values: the exact integer sum of its two 16-value groups,
        // scaled by the sub-block's activation scale.
        float f = 0.0f;
        for (int j = 0; j < 8; j++)
            f += a[i].d[j] * (float)(b[i].scales[2 * j] * grp[2 * j] + b[i].scales[2 * j + 1] * grp[2 * j + 1]);
        acc += ck_half_to_float(ck_ld16(&b[i].d)) * f;
    }
    return acc;
}

float ck_q8_0_f32_scalar(const void *w, const float *x, int64_t n) {
    const blk_q8_0 *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        float s = 0.0f;
        for (int j = 0; j < 32; j++) s += (float)b[i].qs[j] * x[32 * i + j];
        acc += s * ck_half_to_float(ck_ld16(&b[i].d));
    }
    return acc;
}

ck_dot_fn ck_scalar_kernel(uint32_t type) {
    switch (type) {
    case CK_F32: return dot_f32;
    case CK_F16: return dot_f16;
    case CK_BF16: return dot_bf16;
    case CK_Q8_0: return dot_q8_0;
    case CK_Q4_0: return dot_q4_0;
    case CK_Q4_1: return dot_q4_1;
    case CK_Q5_0: return dot_q5_0;
    case CK_Q5_1: return dot_q5_1;
    case CK_Q4_K: return dot_q4_K;
    case CK_Q5_K: return dot_q5_K;
    case CK_Q6_K: return dot_q6_K;
    default: return 0;
    }
}
