// x86 kernel bodies, included twice by ck_x86.c: once for AVX2+FMA (CK_VNNI 0) and once for
// AVX-512 with VNNI (CK_VNNI 1). The AVX-512 build adds 512-bit kernels for the default model's
// formats (F32/F16/BF16, Q8_0, Q5_0, Q4_K, Q6_K); its other integer kernels are the 256-bit
// bodies with vpdpbusd, mask-register bit expansion and EVEX encodings.
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

static inline CK_TARGET float CK_NAME(hsum8)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// f16 -> f32 from memory. Not _cvtsh_ss (or movd of a 16-bit load): compilers turn those into
// vpinsrw into whatever register is at hand, a false dependency that chained every block's
// scale to an accumulator's FMA (measured: half speed). A 32-bit load (vmovd, no input
// dependency) of the half and its neighbour, converted, lane 0. h2f_end is for a half that
// ends a block (Q6_K's d): it loads the two bytes before instead and takes lane 1.
static inline CK_TARGET __m128i CK_NAME(ld32x)(const void *p) {
    __m128i v;
    __asm__("vmovd %1, %0" : "=x"(v) : "m"(*(const uint32_t *)p));  // opaque: stays a vmovd
    return v;
}
static inline CK_TARGET float CK_NAME(h2f)(const void *p) {
    return _mm_cvtss_f32(_mm_cvtph_ps(CK_NAME(ld32x)(p)));
}
static inline CK_TARGET float CK_NAME(h2f_end)(const void *p) {
    __m128 v = _mm_cvtph_ps(CK_NAME(ld32x)((const uint8_t *)p - 2));
    return _mm_cvtss_f32(_mm_movehdup_ps(v));
}

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

// ---- 32-blocks times ck_q8a. Four blocks per iteration into four register accumulators:
// each block ends in a convert + FMA, and one accumulator would serialise on FMA latency.

#define CK_BLOCKS4(nb, STEP)                                                                \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;               \
    int64_t i = 0;                                                                          \
    for (; i + 4 <= (nb); i += 4) { STEP(i, acc0); STEP(i + 1, acc1); STEP(i + 2, acc2); STEP(i + 3, acc3); } \
    for (; i < (nb); i++) STEP(i, acc0);                                                    \
    float total = CK_NAME(hsum8)(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));

// Adds k to int32 lane 0 only: folds a per-block integer correction into the lane sums.
static inline CK_TARGET __m256i CK_NAME(lane0)(__m256i p, int k) {
    return _mm256_add_epi32(p, _mm256_zextsi128_si256(_mm_cvtsi32_si128(k)));
}

static CK_TARGET float CK_NAME(dot_q8_0)(const void *w, const void *act, int64_t n) {
    const blk_q8_0 *b = w;
    const ck_q8a *a = act;
    // |w| (unsigned) times a with w's sign: the u8 x s8 form the instructions want.
#define STEP(j, acc) {                                                                      \
        __m256i qw = _mm256_loadu_si256((const __m256i *)b[j].qs);                          \
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[j].q);                           \
        __m256i p = CK_NAME(dot4)(_mm256_setzero_si256(), _mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw)); \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[j].d) * a[j].d), _mm256_cvtepi32_ps(p), acc); }
    CK_BLOCKS4(n / 32, STEP)
#undef STEP
    return total;
}

#if CK_VNNI
// 512-bit versions for the default model's hottest formats (Q8_0: LM head and attn_v; Q5_0:
// q/k/gate/up): two blocks per vector. AVX-512 has no vpsignb, so |w| and the sign transfer
// use abs and a mask from the sign bits.
static inline CK_TARGET __m512i CK_NAME(two32)(const int8_t *p0, const int8_t *p1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p0)),
                              _mm256_loadu_si256((const __m256i *)p1), 1);
}
static inline CK_TARGET __m512 CK_NAME(two_scales)(float s0, float s1) {
    return _mm512_mask_broadcastss_ps(_mm512_set1_ps(s0), 0xFF00, _mm_set_ss(s1));
}
// Signed w times signed a, both 64 bytes, summed in fours.
static inline CK_TARGET __m512i CK_NAME(sdot64)(__m512i w, __m512i a) {
    __mmask64 neg = _mm512_movepi8_mask(w);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w),
                               _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a));
}

static CK_TARGET float CK_NAME(dot_q8_0_512)(const void *w, const void *act, int64_t n) {
    const blk_q8_0 *b = w;
    const ck_q8a *a = act;
    const int64_t nb = n / 32;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
#define STEP2(j, acc) {                                                                       \
        __m512i p = CK_NAME(sdot64)(CK_NAME(two32)(b[j].qs, b[j + 1].qs), CK_NAME(two32)(a[j].q, a[j + 1].q)); \
        __m512 sc = CK_NAME(two_scales)(CK_NAME(h2f)(&b[j].d) * a[j].d, CK_NAME(h2f)(&b[j + 1].d) * a[j + 1].d); \
        acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc); }
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) { STEP2(i, acc0); STEP2(i + 2, acc1); }
    for (; i + 2 <= nb; i += 2) STEP2(i, acc0);
#undef STEP2
    float total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (i < nb) total += CK_NAME(dot_q8_0)(b + i, a + i, 32);
    return total;
}

// Two Q5_0 blocks as 64 unsigned values q (0..31), in the order of the two activation blocks.
static inline CK_TARGET __m512i CK_NAME(q5_0_two)(const blk_q5_0 *b0, const blk_q5_0 *b1) {
    __m256i x = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)b1->qs), _mm_loadu_si128((const __m128i *)b0->qs));
    // 128-bit lanes [lo0, lo1, hi0, hi1] -> [lo0, hi0, lo1, hi1]
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(x), _mm256_srli_epi16(x, 4), 1);
    v = _mm512_and_si512(_mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(0x0F));
    uint64_t hb = (uint64_t)ck_ld32(b0->qh) | (uint64_t)ck_ld32(b1->qh) << 32;
    return _mm512_or_si512(v, _mm512_maskz_mov_epi8((__mmask64)hb, _mm512_set1_epi8(0x10)));
}

static CK_TARGET float CK_NAME(dot_q5_0)(const void *w, const void *act, int64_t n);
static CK_TARGET float CK_NAME(dot_q5_0_512)(const void *w, const void *act, int64_t n) {
    const blk_q5_0 *b = w;
    const ck_q8a *a = act;
    const int64_t nb = n / 32;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
#define STEP2(j, acc) {                                                                       \
        /* unsigned q times a, with -16 * sum(a) of each block started in its first lane */  \
        __m512i init = _mm512_mask_set1_epi32(_mm512_maskz_set1_epi32(0x0001, -16 * a[j].sum), 0x0100, -16 * a[j + 1].sum); \
        __m512i p = _mm512_dpbusd_epi32(init, CK_NAME(q5_0_two)(&b[j], &b[j + 1]), CK_NAME(two32)(a[j].q, a[j + 1].q)); \
        __m512 sc = CK_NAME(two_scales)(CK_NAME(h2f)(&b[j].d) * a[j].d, CK_NAME(h2f)(&b[j + 1].d) * a[j + 1].d); \
        acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc); }
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) { STEP2(i, acc0); STEP2(i + 2, acc1); }
    for (; i + 2 <= nb; i += 2) STEP2(i, acc0);
#undef STEP2
    float total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (i < nb) total += CK_NAME(dot_q5_0)(b + i, a + i, 32);
    return total;
}
#endif

// Q4_0 / Q5_0: unsigned q (0..15 / 0..31) times a, minus offset * sum(a) folded into lane 0.
#define CK_QOFF_DOT(fmt, blk, QEXPR, OFF)                                                   \
    static CK_TARGET float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) {  \
        const blk *b = w;                                                                   \
        const ck_q8a *a = act;                                                              \
        CK_BLOCKS4(n / 32, STEP)                                                            \
        return total;                                                                       \
    }
#define STEP(j, acc) {                                                                      \
        __m256i p = CK_NAME(dot4)(CK_NAME(lane0)(_mm256_setzero_si256(), -OFF * a[j].sum), QEXPR(j), \
                                  _mm256_loadu_si256((const __m256i *)a[j].q));             \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[j].d) * a[j].d), _mm256_cvtepi32_ps(p), acc); }
#define OFF 8
#define QEXPR(j) CK_NAME(nibbles32)(b[j].qs)
CK_QOFF_DOT(q4_0, blk_q4_0, QEXPR, OFF)
#undef QEXPR
#undef OFF
#if CK_VNNI
// The AVX-512 level's Q5_0 tail block (dot_q5_0_512). The AVX2 level's Q5_0 kernel is
// ck_q5_0_dot_avx2 (ck_q5.c: two blocks per vector, the form its prefill path shares).
#define OFF 16
#define QEXPR(j) _mm256_or_si256(CK_NAME(nibbles32)(b[j].qs), CK_NAME(bits32)(b[j].qh))
CK_QOFF_DOT(q5_0, blk_q5_0, QEXPR, OFF)
#undef QEXPR
#undef OFF
#endif
#undef STEP
#undef CK_QOFF_DOT

// Q4_1 / Q5_1: d*q + m; the minimum contributes m * d_a * sum(a), kept in a float lane 0 term.
#define CK_QMIN_DOT(fmt, blk, QEXPR)                                                        \
    static CK_TARGET float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) {  \
        const blk *b = w;                                                                   \
        const ck_q8a *a = act;                                                              \
        CK_BLOCKS4(n / 32, STEP)                                                            \
        return total;                                                                       \
    }
#define STEP(j, acc) {                                                                      \
        __m256i p = CK_NAME(dot4)(_mm256_setzero_si256(), QEXPR(j), _mm256_loadu_si256((const __m256i *)a[j].q)); \
        __m256 mf = _mm256_zextps128_ps256(_mm_set_ss(CK_NAME(h2f)(&b[j].m) * a[j].d * (float)a[j].sum)); \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[j].d) * a[j].d), _mm256_cvtepi32_ps(p), _mm256_add_ps(acc, mf)); }
#define QEXPR(j) CK_NAME(nibbles32)(b[j].qs)
CK_QMIN_DOT(q4_1, blk_q4_1, QEXPR)
#undef QEXPR
#define QEXPR(j) _mm256_or_si256(CK_NAME(nibbles32)(b[j].qs), CK_NAME(bits32)(b[j].qh))
CK_QMIN_DOT(q5_1, blk_q5_1, QEXPR)
#undef QEXPR
#undef STEP
#undef CK_QMIN_DOT
#undef CK_BLOCKS4

// ---- 256-blocks times ck_q8k (one activation scale a.d[j] per sub-block j of 32 values)
//
// The float step, shared bit for bit by the multi-token paths (ck_gemm_avx2.c at this level's
// 256-bit form, ck_gemm_k.c for the 512-bit kernels): the exact int32 lanes of each sub-block
// are summed down in integers before the float step. 256-bit: sub-block j has eight lanes p_j;
// per group of four sub-blocks (g = 0, 1) hsub4 (two unpack-and-add stages, as red4 below) forms
// the vector whose lanes L and 4 + L hold values 0-15 and 16-31 of sub-block 4g + L (sums of four
// lanes), times the integer weight scale of that lane (mullo after the sum, exact: |lane| < 2^24)
// = q_g; then s = fma(a.d[4g..4g+3] twice, float(q_g), s) from s = 0 for g = 0, 1: two converts
// and FMAs per super-block instead of eight. 512-bit: see red4 below. Then per super-block
// acc = fma(d, s, acc). The minimum / offset terms have one lane per sub-block
// (lane j = m_j (bsums[2j] + bsums[2j+1]), or sc_2j bsums[2j] + sc_2j+1 bsums[2j+1]) and are
// scaled as float(lanes) * a.d (one vector multiply).

// 8 mins (u8) dotted with the 16 bsums pairwise: lane j = m_j * (bsums[2j] + bsums[2j+1]).
static inline CK_TARGET __m256i CK_NAME(kmins)(const uint8_t m[8], const int16_t *bsums) {
    __m128i mm = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)m));
    __m256i md = _mm256_set_m128i(_mm_unpackhi_epi16(mm, mm), _mm_unpacklo_epi16(mm, mm));
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), md);
}

// Four sub-blocks' int32 lanes (eight each) -> lanes L and 4 + L: sub-block L (exact sums).
// Six one-uop shuffles and three adds where three vphaddd were (several uops each on AMD; the
// same integers, the AVX2 Q4_K kernel ~11% faster on Zen 5).
static inline CK_TARGET __m256i CK_NAME(hsub4)(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
    __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
    __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(p2, p3), _mm256_unpackhi_epi32(p2, p3));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
}

#define CK_K45_DOT(fmt, blk, HAS_QH)                                                         \
    static CK_TARGET __attribute__((unused)) float CK_NAME(dot_##fmt)(const void *w, const void *act, int64_t n) { \
        const blk *b = w;                                                                    \
        const ck_q8k *a = act;                                                               \
        const int64_t nb = n / 256;                                                          \
        const __m256i m4 = _mm256_set1_epi8(0x0F);                                           \
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();                        \
        for (int64_t i = 0; i < nb; i++) {                                                   \
            uint8_t sc[8], m[8];                                                             \
            ck_kscales8(b[i].scales, sc, m);            \
            __m256 s = _mm256_setzero_ps();                                                  \
            __m256i p[8];                                                                    \
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
                p[2 * c] = CK_NAME(dot4)(_mm256_setzero_si256(), lo, a0);                   \
                p[2 * c + 1] = CK_NAME(dot4)(_mm256_setzero_si256(), hi, a1);               \
            }                                                                                \
            /* the sub-block scales after the sum (exact): lanes L, 4 + L of group g: sc[4g + L] */ \
            const __m128i sc8 = _mm_loadl_epi64((const __m128i *)sc);                        \
            for (int g = 0; g < 2; g++) {                                                    \
                const __m128i pick = _mm_setr_epi8(4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3, 4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3, \
                                                   -1, -1, -1, -1, -1, -1, -1, -1);         \
                __m256i q = _mm256_mullo_epi32(CK_NAME(hsub4)(p[4 * g], p[4 * g + 1], p[4 * g + 2], p[4 * g + 3]), \
                                               _mm256_cvtepu8_epi32(_mm_shuffle_epi8(sc8, pick))); \
                s = _mm256_fmadd_ps(_mm256_broadcast_ps((const __m128 *)&a[i].d[4 * g]), _mm256_cvtepi32_ps(q), s); \
            }                                                                                \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[i].d)), s, acc);            \
            accm = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[i].dmin)),                 \
                                   _mm256_mul_ps(_mm256_loadu_ps(a[i].d), _mm256_cvtepi32_ps(CK_NAME(kmins)(m, a[i].bsums))), accm); \
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

#if CK_VNNI
// 512-bit K-quant float step. Chunk c (64 values, c = 0..3) gives exact int32 lanes p_c, lanes
// 0-7 of sub-block 2c and 8-15 of 2c+1 (four lanes = 16 values = one 128-bit lane). Before the
// float step the four chunks are summed down to one vector of 16 lanes (red4: two unpack-add
// stages): lane 4k + c = the sum of chunk c's 128-bit lane k, i.e. of 16 values of sub-block
// 2c + (k >> 1) (Q6_K: of scale group 4c + k). The weight scales are applied after this sum
// (one mullo: exact, |lane| < 2^24), then s = float(P) * a.d[2c + (k >> 1)] per lane and
// acc = fma(d, s, acc): one convert, one multiply and one FMA per super-block instead of four
// of each (two lanes per sub-block instead of eight). ck_gemm_k.c repeats exactly this.
static inline CK_TARGET __m512i CK_NAME(red4)(__m512i p0, __m512i p1, __m512i p2, __m512i p3) {
    __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1), _mm512_unpackhi_epi32(p0, p1));
    __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p2, p3), _mm512_unpackhi_epi32(p2, p3));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
}
// Lane 4k + c of red4's result: sub-block 2c + (k >> 1) (activation scale, Q4_K weight scale).
#define CK_RED4_SUB _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7)
// Lane 4k + c of red4's result: Q6_K scale group 4c + k.
#define CK_RED4_GRP _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)

// 512-bit Q4_K: one 32-byte chunk of nibbles is two sub-blocks (low, high nibbles) = 64 values
// whose activations are 64 contiguous bytes; int32 lanes 0-7 belong to the first sub-block and
// 8-15 to the second. Float step: see red4 above.
static CK_TARGET float CK_NAME(dot_q4_K_512)(const void *w, const void *act, int64_t n) {
    const blk_q4_K *b = w;
    const ck_q8k *a = act;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    const __m512i sub = CK_RED4_SUB;
    for (int64_t i = 0; i < n / 256; i++) {
        uint8_t sc[8], m[8];
        ck_kscales8(b[i].scales, sc, m);
        __m512i scv = _mm512_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sc));
        __m256 ad = _mm256_loadu_ps(a[i].d);
        __m512i p[4];
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            __m512i u = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), m4);
            p[c] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(a[i].q + 64 * c));
        }
        __m512i ps = _mm512_mullo_epi32(CK_NAME(red4)(p[0], p[1], p[2], p[3]), _mm512_permutexvar_epi32(sub, scv));
        __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(ps), _mm512_permutexvar_ps(sub, _mm512_castps256_ps512(ad)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(CK_NAME(h2f)(&b[i].d)), s, acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f)(&b[i].dmin)),
                               _mm256_mul_ps(ad, _mm256_cvtepi32_ps(CK_NAME(kmins)(m, a[i].bsums))), accm);
    }
    return _mm512_reduce_add_ps(acc) - CK_NAME(hsum8)(accm);
}
#endif

static CK_TARGET __attribute__((unused)) float CK_NAME(dot_q6_K)(const void *w, const void *act, int64_t n) {
    const blk_q6_K *b = w;
    const ck_q8k *a = act;
    const int64_t nb = n / 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const int8_t *sc = b[i].scales;
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)sc);
        __m256 s = _mm256_setzero_ps();
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
            __m256i p[4];
            for (int k = 0; k < 4; k++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(a[i].q + 128 * h + 32 * k));
                p[k] = CK_NAME(dot4)(_mm256_setzero_si256(), q[k], av);  // sub-block 4h + k
            }
            // After hsub4 lane L holds values 0-15 of sub-block 4h + L (scale group 8h + 2L) and
            // lane 4 + L values 16-31 (group 8h + 2L + 1): the 16-value scales go on after the
            // sum (exact).
            const __m128i pick = _mm_setr_epi8(8 * h, 8 * h + 2, 8 * h + 4, 8 * h + 6, 8 * h + 1, 8 * h + 3, 8 * h + 5, 8 * h + 7,
                                               -1, -1, -1, -1, -1, -1, -1, -1);
            __m256i qs = _mm256_mullo_epi32(CK_NAME(hsub4)(p[0], p[1], p[2], p[3]), _mm256_cvtepi8_epi32(_mm_shuffle_epi8(sc8, pick)));
            s = _mm256_fmadd_ps(_mm256_broadcast_ps((const __m128 *)&a[i].d[4 * h]), _mm256_cvtepi32_ps(qs), s);
        }
        // q - 32: subtract 32 * sum_j a.d_j (sc_2j bsum_2j + sc_2j+1 bsum_2j+1) (lane j: sub-block j).
        __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[i].bsums), _mm256_cvtepi8_epi16(sc8));
        s = _mm256_fnmadd_ps(_mm256_set1_ps(32.0f), _mm256_mul_ps(_mm256_loadu_ps(a[i].d), _mm256_cvtepi32_ps(off)), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_NAME(h2f_end)(&b[i].d)), s, acc);
    }
    return CK_NAME(hsum8)(acc);
}

#if CK_VNNI
// 512-bit Q6_K: per half, [ql0 | ql1] and [qh | qh >> 2] build two vectors of 64 six-bit values
// (positions 0-63 and 64-127 of the half, each with 64 contiguous activation bytes); chunk
// c = 2h + (0, 1). Float step: see red4 above (after it, one lane per 16-value scale group).
static CK_TARGET float CK_NAME(dot_q6_K_512)(const void *w, const void *act, int64_t n) {
    const blk_q6_K *b = w;
    const ck_q8k *a = act;
    __m512 acc = _mm512_setzero_ps();
    __m256 acco = _mm256_setzero_ps();
    const __m512i sub = CK_RED4_SUB, grp = CK_RED4_GRP;
    for (int64_t i = 0; i < n / 256; i++) {
        __m128i sc8 = _mm_loadu_si128((const __m128i *)b[i].scales);
        __m256 ad = _mm256_loadu_ps(a[i].d);
        __m512i p[4];
        for (int h = 0; h < 2; h++) {
            __m512i u01, u23;
            ck_q6_K_half_512(&b[i], h, &u01, &u23);
            p[2 * h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u01, _mm512_loadu_si512(a[i].q + 128 * h));
            p[2 * h + 1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u23, _mm512_loadu_si512(a[i].q + 128 * h + 64));
        }
        __m512i ps = _mm512_mullo_epi32(CK_NAME(red4)(p[0], p[1], p[2], p[3]), _mm512_permutexvar_epi32(grp, _mm512_cvtepi8_epi32(sc8)));
        __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(ps), _mm512_permutexvar_ps(sub, _mm512_castps256_ps512(ad)));
        __m512 dv = _mm512_set1_ps(CK_NAME(h2f_end)(&b[i].d));
        __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a[i].bsums), _mm256_cvtepi8_epi16(sc8));
        acc = _mm512_fmadd_ps(dv, s, acc);
        acco = _mm256_fmadd_ps(_mm512_castps512_ps256(dv), _mm256_mul_ps(ad, _mm256_cvtepi32_ps(off)), acco);
    }
    return _mm512_reduce_add_ps(acc) - 32.0f * CK_NAME(hsum8)(acco);
}
#endif

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

// ---- Activation quantization, bit-identical to the portable C in ck_scalar.c (same IEEE
// operations: max|x|, d = amax/127, id = 1/d, round-to-nearest-even of x*id, clamp +-127).

static inline CK_TARGET float CK_NAME(hmax8)(__m256 m) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}
static inline CK_TARGET int CK_NAME(hsumi)(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}
static inline CK_TARGET float CK_NAME(amax)(const float *x, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    return CK_NAME(hmax8)(m);
}
// 32 values -> 32 int8 at q; i[0..3] get the int32 values (8 each) for the sums.
static inline CK_TARGET void CK_NAME(q32)(const float *x, __m256 idv, int8_t *q, __m256i i[4]) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    for (int k = 0; k < 4; k++) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        i[k] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    }
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, b);
}

int CK_TARGET CK_NAME(ck_quant_act)(uint32_t type, const float *x, int64_t cols, void *out) {
    int bs = ck_block_size(type);
    if (bs == 1) return ck_quantize_act(type, x, cols, out);
    if (bs == 0 || cols % bs) return -1;
    __m256i iv[4];
    if (bs == 32) {
        ck_q8a *o = out;
        for (int64_t b = 0; b < cols / 32; b++, x += 32) {
            float d = CK_NAME(amax)(x, 32) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            CK_NAME(q32)(x, _mm256_set1_ps(id), o[b].q, iv);
            o[b].d = d;
            o[b].sum = CK_NAME(hsumi)(_mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3])));
        }
        return 0;
    }
    ck_q8k *o = out;
    for (int64_t b = 0; b < cols / 256; b++) {
        for (int c = 0; c < 8; c++, x += 32) {  // one scale per 32 values
            float d = CK_NAME(amax)(x, 32) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            CK_NAME(q32)(x, _mm256_set1_ps(id), o[b].q + 32 * c, iv);
            o[b].d[c] = d;
            o[b].bsums[2 * c] = (int16_t)CK_NAME(hsumi)(_mm256_add_epi32(iv[0], iv[1]));
            o[b].bsums[2 * c + 1] = (int16_t)CK_NAME(hsumi)(_mm256_add_epi32(iv[2], iv[3]));
        }
    }
    return 0;
}

ck_dot_fn CK_NAME(ck_kernel)(uint32_t type) {
    switch (type) {
    case CK_F32: return CK_NAME(dot_f32);
    case CK_F16: return CK_NAME(dot_f16);
    case CK_BF16: return CK_NAME(dot_bf16);
#if CK_VNNI
    case CK_Q8_0: return CK_NAME(dot_q8_0_512);
    case CK_Q5_0: return CK_NAME(dot_q5_0_512);
#else
    case CK_Q8_0: return CK_NAME(dot_q8_0);
    case CK_Q5_0: return ck_q5_0_dot_avx2;
#endif
    case CK_Q4_0: return CK_NAME(dot_q4_0);
    case CK_Q4_1: return CK_NAME(dot_q4_1);
    case CK_Q5_1: return CK_NAME(dot_q5_1);
#if CK_VNNI
    case CK_Q4_K: return CK_NAME(dot_q4_K_512);
#else
    case CK_Q4_K: return CK_NAME(dot_q4_K);
#endif
    case CK_Q5_K: return CK_NAME(dot_q5_K);
#if CK_VNNI
    case CK_Q6_K: return CK_NAME(dot_q6_K_512);
#else
    case CK_Q6_K: return CK_NAME(dot_q6_K);
#endif
    default: return 0;
    }
}
