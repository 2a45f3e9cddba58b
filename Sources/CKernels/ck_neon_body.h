// One flavour of the NEON integer kernels, included twice by ck_neon.c (aarch64 only):
//   CK_NT          function attribute of the flavour (empty, or the dotprod target)
//   CK_NN(x)       name of x in this flavour
//   CK_NN(dot32)   int32x4 lanes whose sum is the exact integer dot of 32 int8 pairs (w0|w1, a0|a1)
//   CK_NN(dot16)   the same for 16 pairs
// Everything after the lane sums is the same source in both flavours and follows the scalar
// twin (ck_scalar.c): the same exact integer sum per block (per super-block for the K-quants),
// then the same float expression in the same order. So the two flavours return bit-identical
// floats, and each is the scalar twin's float arithmetic over the same integers.

static CK_NT float CK_NN(dot_q8_0)(const void *w, const void *act, int64_t n) {
    const blk_q8_0 *b = w;
    const ck_q8a *a = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int32_t s = vaddvq_s32(CK_NN(dot32)(vld1q_s8(b[i].qs), vld1q_s8(b[i].qs + 16), vld1q_s8(a[i].q), vld1q_s8(a[i].q + 16)));
        acc += (float)s * (ck_half_to_float(ck_ld16(&b[i].d)) * a[i].d);
    }
    return acc;
}

static CK_NT float CK_NN(dot_q4_0)(const void *w, const void *act, int64_t n) {
    const blk_q4_0 *b = w;
    const ck_q8a *a = act;
    const uint8x16_t m4 = vdupq_n_u8(0xF);
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        uint8x16_t q = vld1q_u8(b[i].qs);
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(q, m4));  // values 0-15
        int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));  // values 16-31
        int32_t s = vaddvq_s32(CK_NN(dot32)(lo, hi, vld1q_s8(a[i].q), vld1q_s8(a[i].q + 16)));
        float d = ck_half_to_float(ck_ld16(&b[i].d));
        acc += (float)s * (d * a[i].d);
        corr += d * a[i].d * (float)a[i].sum;
    }
    return acc - 8.0f * corr;
}

static CK_NT float CK_NN(dot_q5_0)(const void *w, const void *act, int64_t n) {
    const blk_q5_0 *b = w;
    const ck_q8a *a = act;
    static const uint8_t bitsel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t sel = vld1q_u8(bitsel), m4 = vdupq_n_u8(0xF), b4 = vdupq_n_u8(0x10);
    float acc = 0.0f, corr = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        uint32_t qh = ck_ld32(b[i].qh);
        // Byte j of each half gets bit j of qh (low half) or bit j+16 (high half).
        uint8x16_t h0 = vcombine_u8(vdup_n_u8((uint8_t)qh), vdup_n_u8((uint8_t)(qh >> 8)));
        uint8x16_t h1 = vcombine_u8(vdup_n_u8((uint8_t)(qh >> 16)), vdup_n_u8((uint8_t)(qh >> 24)));
        h0 = vandq_u8(vtstq_u8(h0, sel), b4);
        h1 = vandq_u8(vtstq_u8(h1, sel), b4);
        uint8x16_t q = vld1q_u8(b[i].qs);
        int8x16_t lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, m4), h0));
        int8x16_t hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), h1));
        int32_t s = vaddvq_s32(CK_NN(dot32)(lo, hi, vld1q_s8(a[i].q), vld1q_s8(a[i].q + 16)));
        float d = ck_half_to_float(ck_ld16(&b[i].d));
        acc += (float)s * (d * a[i].d);
        corr += d * a[i].d * (float)a[i].sum;
    }
    return acc - 16.0f * corr;
}

// Q4_K: sub-block j (32 values) is the low (j even) or high (j odd) nibbles of qs[32 (j/2) ..];
// per sub-block sc_j dot_j and m_j (bsums[2j] + bsums[2j+1]) are exact int32 (|.| <= 63 * 32 *
// 15 * 127), scaled by the sub-block's activation scale a.d[j] in the scalar twin's order.
static CK_NT float CK_NN(dot_q4_K)(const void *w, const void *act, int64_t n) {
    const blk_q4_K *b = w;
    const ck_q8k *a = act;
    const uint8x16_t m4 = vdupq_n_u8(0xF);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        uint8_t sc[8], m[8];
        ck_kscales8(b[i].scales, sc, m);
        float fq = 0.0f, fm = 0.0f;
        for (int k = 0; k < 4; k++) {
            const uint8_t *qs = b[i].qs + 32 * k;
            const int8_t *q = a[i].q + 64 * k;
            uint8x16_t q0 = vld1q_u8(qs), q1 = vld1q_u8(qs + 16);
            int32x4_t lo = CK_NN(dot32)(vreinterpretq_s8_u8(vandq_u8(q0, m4)), vreinterpretq_s8_u8(vandq_u8(q1, m4)),
                                        vld1q_s8(q), vld1q_s8(q + 16));
            int32x4_t hi = CK_NN(dot32)(vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), vreinterpretq_s8_u8(vshrq_n_u8(q1, 4)),
                                        vld1q_s8(q + 32), vld1q_s8(q + 48));
            for (int h = 0; h < 2; h++) {
                const int j = 2 * k + h;
                fq += a[i].d[j] * (float)(sc[j] * vaddvq_s32(h ? hi : lo));
                fm += a[i].d[j] * (float)(m[j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]));
            }
        }
        acc += ck_half_to_float(ck_ld16(&b[i].d)) * fq - ck_half_to_float(ck_ld16(&b[i].dmin)) * fm;
    }
    return acc;
}

// Q6_K: each half (128 values) is ql[64] (low nibbles) and qh[32] (two high bits); value l,
// l + 32, l + 64, l + 96 take ql[l] & 15, ql[l + 32] & 15, ql[l] >> 4, ql[l + 32] >> 4 with bits
// 0-1, 2-3, 4-5, 6-7 of qh[l]. Group g of 16 values has the int8 scale scales[8h + g]; the six-bit
// value minus 32 fits int8, so per sub-block of 32 values (two groups) the scaled sum is an exact
// int32, scaled by the sub-block's activation scale a.d[j] as in the scalar twin.
static CK_NT float CK_NN(dot_q6_K)(const void *w, const void *act, int64_t n) {
    const blk_q6_K *b = w;
    const ck_q8k *a = act;
    const uint8x16_t m4 = vdupq_n_u8(0xF), m3 = vdupq_n_u8(3);
    const int8x16_t off = vdupq_n_s8(32);
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        float f = 0.0f;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *q = a[i].q + 128 * h, *sc = b[i].scales + 8 * h;
            uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16), l2 = vld1q_u8(ql + 32), l3 = vld1q_u8(ql + 48);
            uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
            uint8x16_t u[8];
            u[0] = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(h0, m3), 4));
            u[1] = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(h1, m3), 4));
            u[2] = vorrq_u8(vandq_u8(l2, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h0, 2), m3), 4));
            u[3] = vorrq_u8(vandq_u8(l3, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h1, 2), m3), 4));
            u[4] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h0, 4), m3), 4));
            u[5] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h1, 4), m3), 4));
            u[6] = vorrq_u8(vshrq_n_u8(l2, 4), vshlq_n_u8(vshrq_n_u8(h0, 6), 4));
            u[7] = vorrq_u8(vshrq_n_u8(l3, 4), vshlq_n_u8(vshrq_n_u8(h1, 6), 4));
            for (int g = 0; g < 8; g += 2) {  // sub-block 4h + g/2: groups g, g + 1
                int32x4_t p0 = CK_NN(dot16)(vsubq_s8(vreinterpretq_s8_u8(u[g]), off), vld1q_s8(q + 16 * g));
                int32x4_t p1 = CK_NN(dot16)(vsubq_s8(vreinterpretq_s8_u8(u[g + 1]), off), vld1q_s8(q + 16 * g + 16));
                int t = vaddvq_s32(vmlaq_n_s32(vmulq_n_s32(p0, sc[g]), p1, sc[g + 1]));
                f += a[i].d[4 * h + g / 2] * (float)t;
            }
        }
        acc += ck_half_to_float(ck_ld16(&b[i].d)) * f;
    }
    return acc;
}

static ck_dot_fn CK_NN(kernel)(uint32_t type) {
    switch (type) {
    case CK_Q8_0: return CK_NN(dot_q8_0);
    case CK_Q4_0: return CK_NN(dot_q4_0);
    case CK_Q5_0: return CK_NN(dot_q5_0);
    case CK_Q4_K: return CK_NN(dot_q4_K);
    case CK_Q6_K: return CK_NN(dot_q6_K);
    default: return 0;
    }
}
