/* cpu.c: what the CPU can do, read once with CPUID (and XGETBV: the OS must also save the
 * registers an extension uses), for the kernels that dispatch at run time: the f16 casts use F16C
 * today; the 16-bit and integer GEMMs to come choose between AVX-512 (BF16, VNNI) and AMX.
 * MODELC_CPU=portable turns every extension off, so tests can force the portable paths on any
 * machine; MODELC_CPU=avx2 keeps AVX, AVX2, FMA and F16C only (no AVX-VNNI, AVX-512 or AMX), so
 * they can reach the AVX2 paths on an AVX-512 machine. Elsewhere than x86-64 everything reads as absent. */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define RT_X86 1
#endif

static RtCpu detect(void) {
  RtCpu c;
  memset(&c, 0, sizeof c);
#ifdef RT_X86
  unsigned a, b, cx, d;
  if (!__get_cpuid(1, &a, &b, &cx, &d) || !(cx >> 27 & 1)) return c; /* no OSXSAVE: no XGETBV */
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  int ymm = (lo & 6u) == 6u;                /* XCR0: SSE and AVX state */
  int zmm = ymm && (lo & 0xe0u) == 0xe0u;   /* opmask, ZMM_Hi256, Hi16_ZMM */
  int tiles = (lo & 0x60000u) == 0x60000u;  /* XTILECFG, XTILEDATA */
  c.avx = ymm && (cx >> 28 & 1);
  c.f16c = c.avx && (cx >> 29 & 1);
  c.fma = c.avx && (cx >> 12 & 1);
  if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
    c.avx2 = c.avx && (b >> 5 & 1);
    c.avx512f = zmm && (b >> 16 & 1);
    c.avx512bw = c.avx512f && (b >> 30 & 1);
    c.avx512vl = c.avx512f && (b >> 31 & 1);
    c.avx512_vnni = c.avx512f && (cx >> 11 & 1);
    c.amx_bf16 = tiles && (d >> 22 & 1) && (d >> 24 & 1);
    c.amx_int8 = tiles && (d >> 25 & 1) && (d >> 24 & 1);
    unsigned max7 = a;
    if (max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d)) {
      c.avx_vnni = c.avx2 && (a >> 4 & 1);
      c.avx512_bf16 = c.avx512f && (a >> 5 & 1);
    }
  }
#endif
  return c;
}

const RtCpu *rt_cpu(void) {
  static RtCpu c;
  static int done;
  if (!done) { /* racing first calls compute the same value */
    const char *env = getenv("MODELC_CPU");
    if (env && strcmp(env, "portable") == 0) {
      memset(&c, 0, sizeof c);
    } else if (env && strcmp(env, "avx2") == 0) {
      RtCpu d = detect();
      memset(&c, 0, sizeof c);
      c.avx = d.avx, c.fma = d.fma, c.f16c = d.f16c, c.avx2 = d.avx2;
    } else {
      c = detect();
    }
    done = 1;
  }
  return &c;
}

void rt_cpu_describe(char *buf, size_t n) {
  const RtCpu *c = rt_cpu();
  struct {
    int on;
    const char *name;
  } f[] = {{c->avx, "avx"},         {c->fma, "fma"},           {c->f16c, "f16c"},
           {c->avx2, "avx2"},       {c->avx_vnni, "avx_vnni"}, {c->avx512f, "avx512f"},
           {c->avx512bw, "avx512bw"}, {c->avx512vl, "avx512vl"},
           {c->avx512_vnni, "avx512_vnni"}, {c->avx512_bf16, "avx512_bf16"}, {c->amx_bf16, "amx_bf16"},
           {c->amx_int8, "amx_int8"}};
  size_t k = 0;
  buf[0] = 0;
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (f[i].on && k < n) k += (size_t)snprintf(buf + k, n - k, "%s%s", k ? " " : "", f[i].name);
  if (!k) snprintf(buf, n, "none (portable paths)");
}
