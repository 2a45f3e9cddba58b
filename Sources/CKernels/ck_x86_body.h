// x86 kernel bodies, included twice by ck_x86.c: once for AVX2+FMA (CK_VNNI 0) and once for
// AVX-512 with VNNI (CK_VNNI 1). The integer kernels work on 256-bit vectors in both builds (a
// block is 32 values; the AVX-512 build gets vpdpbusd, mask-register bit expansion and EVEX
// encodings); the float kernels use 512-bit vectors in the AVX-512 build.
// Expects CK_TARGET, CK_NAME(x) and CK_VNNI to be defined.

// u8 x s8 products summed in groups of four into int32 lanes, added to acc.
static inline CK_TARGET __m256i CK_NAME(dot4)(__m256i acc, __m256i u, __m256i s) {
#if CK_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    __m256i p = _mm256_maddubs_epi16(u, s);  // no saturation: |u| <= 128, |s| <= 127, pairs <= 32512
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
#endif
}

// As dot4 from zero, each int32 lane multiplied by the matching lane of sc (int32 scales).
static inline CK_TARGET __m256i CK_NAME(dot4s)(__m256i u, __m256i s, __m256i sc32, __m256i sc16) {
#if CK_VNNI
    (void)sc16;
    return _mm256_mullo_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s), sc32);
#else
    (void)sc32;  // the int16 scale rides along in the pair-adding madd for free
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16);
#endif
}

static inline CK_TARGET float CK_NAME(hsum8)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline CK_TARGET float CK_NAME(h2f)(const void *p) { return _cvtsh_ss(ck_ld16(p)); }

// 16 bytes of nibbles -> 32 bytes: low nibbles in bytes 0..15, high nibbles in bytes 16..31.
static inline CK_TARGET __m256i CK_NAME(nibbles32)(const uint8_t *p) {
    __m128i x = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes: byte i is 0x10 when bit i is set (the fifth bit of Q5 values).
static inline CK_TARGET __m256i CK_NAME(bits32)(const uint8_t *p) {
    uint32_t b = ck_ld32(p);
#if CK_VNNI
    return _mm256_maskz_mov_epi8((__mmask32)b, _mm256_set1_epi8(0x10));
#else
    __m256i v = _mm256_set1_epi32((int)b);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_shuffle_epi8(v, spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
#endif
}

// ---- float formats

#if CK_VNNI
static inline CK_TARGET __m512 CK_NAME(ld_f32)(const void *p) { return _mm512_loadu_ps(p); }
static inline CK_TARGET __m512 CK_NAME(ld_f16)(const void *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline CK_TARGET __m512 CK_NAME(ld_bf16)(const void *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
#define CK_FLOAT_DOT(fmt, esz)                                                                  \
    static CK_TARGET float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) {      \
        const uint8_t *a = w;                                                                   \
        const float *x = act;                                                                   \
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                             \
        int64_t i = 0;                                                                          \
        for (; i + 64 <= n; i += 64) {                                                          \
            s0 = _mm512_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * i), _mm512_loadu_ps(x + i), s0);             \
            s1 = _mm512_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * (i + 16)), _mm512_loadu_ps(x + i + 16), s1);  \
            s2 = _mm512_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * (i + 32)), _mm512_loadu_ps(x + i + 32), s2);  \
            s3 = _mm512_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * (i + 48)), _mm512_loadu_ps(x + i + 48), s3);  \
        }                                                                                       \
        for (; i + 16 <= n; i += 16)                                                            \
            s0 = _mm512_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * i), _mm512_loadu_ps(x + i), s0);   \
        float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3))); \
        return acc + ck_scalar_kernel(CK_##fmt##_ID)(a + esz * i, x + i, n - i);                \
    }
#else
static inline CK_TARGET __m256 CK_NAME(ld_f32)(const void *p) { return _mm256_loadu_ps(p); }
static inline CK_TARGET __m256 CK_NAME(ld_f16)(const void *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline CK_TARGET __m256 CK_NAME(ld_bf16)(const void *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
#define CK_FLOAT_DOT(fmt, esz)                                                                  \
    static CK_TARGET float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) {      \
        const uint8_t *a = w;                                                                   \
        const float *x = act;                                                                   \
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                             \
        int64_t i = 0;                                                                          \
        for (; i + 32 <= n; i += 32) {                                                          \
            s0 = _mm256_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * i), _mm256_loadu_ps(x + i), s0);             \
            s1 = _mm256_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * (i + 8)), _mm256_loadu_ps(x + i + 8), s1);   \
            s2 = _mm256_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * (i + 16)), _mm256_loadu_ps(x + i + 16), s2); \
            s3 = _mm256_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * (i + 24)), _mm256_loadu_ps(x + i + 24), s3); \
        }                                                                                       \
        for (; i + 8 <= n; i += 8)                                                              \
            s0 = _mm256_fmadd_ps(CK_NAME(ld_##fmt)(a + esz * i), _mm256_loadu_ps(x + i), s0);    \
        float acc = CK_NAME(hsum8)(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));  \
        return acc + ck_scalar_kernel(CK_##fmt##_ID)(a + esz * i, x + i, n - i);                \
    }
#endif
CK_FLOAT_DOT(f32, 4)
CK_FLOAT_DOT(f16, 2)
CK_FLOAT_DOT(bf16, 2)
#undef CK_FLOAT_DOT

// ---- 32-blocks times ck_q8a. Two independent accumulators hide the FMA latency.

static CK_TARGET float CK_NAME(dot_q8_0)(const void *w, const void *act, int64_t n) {
    const blk_q8_0 *b = w;
    const ck_q8a *a = act;
    const int64_t nb = n / 32;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[i].q);
        // |w| (unsigned) times a with w's sign: u8 x s8 as the instructions want.
        __m256i p = CK_NAME(dot4)(_mm256_setzero_si256(), _mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw));
        __m256 sc = _mm256_set1_ps(CK_NAME(h2f)(&b[i].d) * a[i].d);
        acc[i & 1] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc[i & 1]);
    }
    return CK_NAME(hsum8)(_mm256_add_ps(acc[0], acc[1]));
}

// Shared loop for Q4_0/Q4_1/Q5_0/Q5_1: q in 0..15 or 0..31 (unsigned), offset/min handled
// with the activation block sum s.
#define CK_Q32_DOT(fmt, blk, QEXPR, DEXPR, CEXPR, FINISH)                                   \
    static CK_TARGET float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) {  \
        const blk *b = w;                                                                   \
        const ck_q8a *a = act;                                                              \
        const int64_t nb = n / 32;                                                          \
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};                         \
        float corr = 0.0f;                                                                  \
        for (int64_t i = 0; i < nb; i++) {                                                  \
            __m256i u = QEXPR;                                                              \
            __m256i p = CK_NAME(dot4)(_mm256_setzero_si256(), u,                            \
                                      _mm256_loadu_si256((const __m256i *)a[i].q));         \
            float d = CK_NAME(h2f)(&b[i].d);                                                \
            acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(DEXPR), _mm256_cvtepi32_ps(p), acc[i & 1]); \
            corr += CEXPR;                                                                  \
        }                                                                                   \
        float s = CK_NAME(hsum8)(_mm256_add_ps(acc[0], acc[1]));                           \
        return FINISH;                                                                      \
    }
CK_Q32_DOT(q4_0, blk_q4_0, CK_NAME(nibbles32)(b[i].qs), d * a[i].d, d * a[i].s, s - 8.0f * corr)
CK_Q32_DOT(q4_1, blk_q4_1, CK_NAME(nibbles32)(b[i].qs), d * a[i].d,
           CK_NAME(h2f)(&b[i].m) * a[i].s, s + corr)
CK_Q32_DOT(q5_0, blk_q5_0, _mm256_or_si256(CK_NAME(nibbles32)(b[i].qs), CK_NAME(bits32)(b[i].qh)),
           d * a[i].d, d * a[i].s, s - 16.0f * corr)
CK_Q32_DOT(q5_1, blk_q5_1, _mm256_or_si256(CK_NAME(nibbles32)(b[i].qs), CK_NAME(bits32)(b[i].qh)),
           d * a[i].d, CK_NAME(h2f)(&b[i].m) * a[i].s, s + corr)
#undef CK_Q32_DOT

// ---- 256-blocks times ck_q8k

// 8 mins (u8) dotted with the 16 bsums pairwise: lane j = m_j * (bsums[2j] + bsums[2j+1]).
static inline CK_TARGET __m256i CK_NAME(kmins)(const uint8_t m[8], const int16_t *bsums) {
    __m128i mm = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)m));
    __m256i md = _mm256_set_m128i(_mm_unpackhi_epi16(mm, mm), _mm_unpacklo_epi16(mm, mm));
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), md);
}

#define CK_K45_DOT(fmt, blk, HAS_QH)                                                         \
    static CK_TARGET float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) {   \
        const blk *b = w;                                                                    \
        const ck_q8k *a = act;                                                               \
        const int64_t nb = n / 256;                                                          \
        const __m256i m4 = _mm256_set1_epi8(0x0F);                                           \
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();                        \
        for (int64_t i = 0; i < nb; i++) {                                                   \
            uint8_t sc[8], m[8];                                                             \
            for (int j = 0; j < 8; j++) ck_kscale(b[i].scales, j, &sc[j], &m[j]);            \
            __m256i sumi = _mm256_setzero_si256();                                           \
            __m256i qh = HAS_QH ? _mm256_loadu_si256((const __m256i *)QH_PTR) : _mm256_setzero_si256(); \
            for (int c = 0; c < 4; c++) {                                                    \
                __m256i q = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));         \
                __m256i lo = _mm256_and_si256(q, m4);                                        \
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);                  \
                if (HAS_QH) {                                                                \
                    const __m256i one = _mm256_set1_epi8(1);                                 \
                    __m128i s0 = _mm_cvtsi32_si128(2 * c), s1 = _mm_cvtsi32_si128(2 * c + 1); \
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s0), one), 4)); \
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s1), one), 4)); \
                }                                                                            \
                __m256i a0 = _mm256_loadu_si256((const __m256i *)(a[i].q + 64 * c));         \
                __m256i a1 = _mm256_loadu_si256((const __m256i *)(a[i].q + 64 * c + 32));    \
                sumi = _mm256_add_epi32(sumi, CK_NAME(dot4s)(lo, a0, _mm256_set1_epi32(sc[2 * c]), _mm256_set1_epi16(sc[2 * c]))); \
                sumi = _mm256_add_epi32(sumi, CK_NAME(dot4s)(hi, a1, _mm256_set1_epi32(sc[2 * c + 1]), _mm256_set1_epi16(sc[2 * c + 1]))); \
            }                                                                                \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[i].d) * a[i].d), _mm256_cvtepi32_ps(sumi), acc); \
            accm = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[i].dmin) * a[i].d),         \
                                   _mm256_cvtepi32_ps(CK_NAME(kmins)(m, a[i].bsums)), accm);  \
        }                                                                                    \
        return CK_NAME(hsum8)(acc) - CK_NAME(hsum8)(accm);                                   \
    }
#define QH_PTR b[i].qs
CK_K45_DOT(q4_K, blk_q4_K, 0)
#undef QH_PTR
#define QH_PTR b[i].qh
CK_K45_DOT(q5_K, blk_q5_K, 1)
#undef QH_PTR
#undef CK_K45_DOT

static CK_TARGET float CK_NAME(dot_q6_K)(const void *w, const void *act, int64_t n) {
    const blk_q6_K *b = w;
    const ck_q8k *a = act;
    const int64_t nb = n / 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const int8_t *sc = b[i].scales;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                // 32 values = two groups of 16 with their own scales (int32 lanes 0-3 and 4-7).
                int s0 = sc[8 * h + 2 * k], s1 = sc[8 * h + 2 * k + 1];
                __m256i sc32 = _mm256_set_m128i(_mm_set1_epi32(s1), _mm_set1_epi32(s0));
                __m256i sc16 = _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
                __m256i av = _mm256_loadu_si256((const __m256i *)(a[i].q + 128 * h + 32 * k));
                sumi = _mm256_add_epi32(sumi, CK_NAME(dot4s)(q[k], av, sc32, sc16));
            }
        }
        // q - 32: subtract 32 * sum_g scale_g * bsum_g.
        __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[i].bsums),
                                        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc)));
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[i].d) * a[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return CK_NAME(hsum8)(acc);
}

// ---- activation scheme (a): Q8_0 weights times f32 x, dequantized in registers.
float CK_TARGET CK_NAME(ck_q8_0_f32)(const void *w, const float *x, int64_t n) {
    const blk_q8_0 *b = w;
    const int64_t nb = n / 32;
#if CK_VNNI
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < nb; i++, x += 32) {
        __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs)));
        __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16))));
        __m512 p = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(x)));
        if (i & 1) acc1 = _mm512_fmadd_ps(_mm512_set1_ps(CK_NAME(h2f)(&b[i].d)), p, acc1);
        else acc0 = _mm512_fmadd_ps(_mm512_set1_ps(CK_NAME(h2f)(&b[i].d)), p, acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < nb; i++, x += 32) {
        __m256 p0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)b[i].qs))), _mm256_loadu_ps(x));
        __m256 p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + 8)))), _mm256_loadu_ps(x + 8));
        p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + 16)))), _mm256_loadu_ps(x + 16), p0);
        p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + 24)))), _mm256_loadu_ps(x + 24), p1);
        __m256 d = _mm256_set1_ps(CK_NAME(h2f)(&b[i].d));
        acc0 = _mm256_fmadd_ps(d, p0, acc0);
        acc1 = _mm256_fmadd_ps(d, p1, acc1);
    }
    return CK_NAME(hsum8)(_mm256_add_ps(acc0, acc1));
#endif
}

ck_dot_fn CK_NAME(ck_kernel)(uint32_t type) {
    switch (type) {
    case CK_F32: return CK_NAME(dot_f32);
    case CK_F16: return CK_NAME(dot_f16);
    case CK_BF16: return CK_NAME(dot_bf16);
    case CK_Q8_0: return CK_NAME(dot_q8_0);
    case CK_Q4_0: return CK_NAME(dot_q4_0);
    case CK_Q4_1: return CK_NAME(dot_q4_1);
    case CK_Q5_0: return CK_NAME(dot_q5_0);
    case CK_Q5_1: return CK_NAME(dot_q5_1);
    case CK_Q4_K: return CK_NAME(dot_q4_K);
    case CK_Q5_K: return CK_NAME(dot_q5_K);
    case CK_Q6_K: return CK_NAME(dot_q6_K);
    default: return 0;
    }
}
