/* linear_sparse_simd.h: the x86 SIMD body of the sparse linear kernel's batched product (SpMM,
 * linear_sparse.c), written once and compiled once per ISA: linear_sparse.c includes this file
 * twice, each time with
 *   SP_SUFFIX  the name suffix of the functions (avx512, avx2),
 *   SP_TARGET  their __attribute__((target(...))),
 *   SP_V       the vector type (__m512, __m256) and SP_L its float lanes (16, 8),
 *   SP_ZERO(), SP_SET1(f), SP_LOAD(p), SP_STORE(p, v), SP_FMA(a, b, c) = a * b + c (one rounding).
 *
 * The product: xT is the transposed activations (M rounded up to Mp, a multiple of 16, the
 * padding lanes zero; in tiles of 64 lanes, xt_tile), W's row n has nonzeros (v_j, k_j). A tile
 * is NV vectors of M (NV * SP_L lanes from
 * m0) for two rows n, n+1 at once (2 NV accumulators: every FMA chain of a row has a partner in
 * flight, so the FMA latency is hidden even at NV = 4); each accumulator lane is one output
 * y[m, n] = FMA chain over the row's nonzeros in order, from 0. The two rows walk their
 * nonzeros in lockstep for the shorter row's length, then the longer one alone: neither order nor
 * rounding of a row's chain depends on its partner. The sums of SP_NB rows wait in a tile on the
 * stack and go to y a row of M at a time (sp_flush): y's column n is strided by N floats, and
 * writing it output by output cost ~75% of a call at 512x128, M = 64 (L1 set conflicts). */

#define SP_CAT2(a, b) a##_##b
#define SP_CAT(a, b) SP_CAT2(a, b)
#define SP(name) SP_CAT(name, SP_SUFFIX)
#define SP_AI __attribute__((always_inline)) SP_TARGET
#define SP_UNROLL _Pragma("GCC unroll 4")

/* acc[0..NV) += v * xT[k, m0 ..] */
static inline SP_AI void SP(step)(SP_V *acc, const float *xt, size_t ld, float v, uint16_t k, const int NV) {
  const SP_V vb = SP_SET1(v);
  const float *xr = xt + (size_t)k * ld;
  SP_UNROLL
  for (int i = 0; i < NV; i++)
    acc[i] = SP_FMA(vb, SP_LOAD(xr + SP_L * i), acc[i]);
}

/* rows n0 .. n0 + NR - 1 (NR 1 or 2) of W against lanes m0 .. m0 + NV * SP_L of xT, their sums
 * stored at tb[0..NR) (one row of SP_MT lanes each) */
static inline SP_AI void SP(tile)(const LinS *c, int n0, int m0, float (*tb)[SP_MT], const int NR, const int NV) {
  size_t Mp; /* the tile's row stride */
  const float *xt = xt_tile(c, m0, &Mp);
  SP_V a0[4], a1[4];
  SP_UNROLL
  for (int i = 0; i < NV; i++)
    a0[i] = a1[i] = SP_ZERO();
  int32_t j0 = c->rp[n0], e0 = c->rp[n0 + 1], j1 = 0, e1 = 0;
  if (NR == 2) {
    j1 = e0, e1 = c->rp[n0 + 2];
    for (; j0 < e0 && j1 < e1; j0++, j1++) {
      SP(step)(a0, xt, Mp, c->val[j0], c->col[j0], NV);
      SP(step)(a1, xt, Mp, c->val[j1], c->col[j1], NV);
    }
    for (; j1 < e1; j1++)
      SP(step)(a1, xt, Mp, c->val[j1], c->col[j1], NV);
  }
  for (; j0 < e0; j0++)
    SP(step)(a0, xt, Mp, c->val[j0], c->col[j0], NV);
  SP_UNROLL
  for (int i = 0; i < NV; i++) {
    SP_STORE(tb[0] + SP_L * i, a0[i]);
    if (NR == 2)
      SP_STORE(tb[1] + SP_L * i, a1[i]);
  }
}

/* rows [lo, hi) of W against lanes m0 .. m0 + NV * SP_L: SP_NB rows at a time into a tile, then
 * written to y a row of M at a time (sp_flush) */
static inline SP_AI void SP(tiles)(const LinS *c, int lo, int hi, int m0, const int NV) {
  float tb[SP_NB][SP_MT];
  for (int b0 = lo; b0 < hi; b0 += SP_NB) {
    const int b1 = hi - b0 < SP_NB ? hi : b0 + SP_NB;
    int n = b0;
    for (; n + 2 <= b1; n += 2)
      SP(tile)(c, n, m0, tb + (n - b0), 2, NV);
    if (n < b1)
      SP(tile)(c, n, m0, tb + (n - b0), 1, NV);
    sp_flush(c, tb, b0, b1, m0, NV * SP_L);
  }
}

/* columns [lo, hi) of y, all M rows: M in tiles of up to 4 vectors (the last one narrower) */
static SP_TARGET void SP(spmm)(void *p, int lo, int hi) {
  const LinS *c = p;
  for (int m0 = 0; m0 < c->M; m0 += 4 * SP_L) {
    int nv = (c->Mp - m0) / SP_L; /* Mp - m0 is a multiple of 16 */
    switch (nv >= 4 ? 4 : nv) {
    case 4: SP(tiles)(c, lo, hi, m0, 4); break;
    case 3: SP(tiles)(c, lo, hi, m0, 3); break;
    case 2: SP(tiles)(c, lo, hi, m0, 2); break;
    default: SP(tiles)(c, lo, hi, m0, 1); break;
    }
  }
}

#undef SP_SUFFIX
#undef SP_TARGET
#undef SP_V
#undef SP_L
#undef SP_ZERO
#undef SP_SET1
#undef SP_LOAD
#undef SP_STORE
#undef SP_FMA
