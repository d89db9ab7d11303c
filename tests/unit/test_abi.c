/* test_abi.c: the runtime ABI as the compiler sees it, checked against runtime/modelc_rt.h.
 *
 * At compile time: every KERNEL row of compiler/backend/kernels.def (the signature both backends
 * call and the LLVM backend declares) must be the exact type of the function the header declares,
 * and every enum the compiler and the runtime both define must agree value for value; a mismatch
 * is a compile error of this file (static assertions), so the build fails. At run time: that this
 * file really fails to compile when a row is wrong (it is compiled again with -DABI_BAD_ROW, a row
 * with one parameter type changed), that the emitters' table view has every row, and that the
 * compiler's and the runtime's rules for a quantised parameter's bytes agree.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ir/ir.h"
#include "../../runtime/core/core.h" /* the quantised layouts (internal) */
#include "../../runtime/modelc_rt.h"
#include "check_run.h"

/* ---- every kernel row against the header ---- */
#define RV void
#define RI int
#define RF float
#define RZ size_t
#define RP void *
#define PF float *
#define CPF const float *
#define PI int32_t *
#define CPI const int32_t *
#define PH uint16_t *
#define CPH const uint16_t *
#define PV void *
#define CPV const void *
#define PERR RtError *
#define I int
#define Z size_t
#define I64 int64_t
#define U64 uint64_t
#define F float
#define FN RtRangeFn
#define PPC char **
#define CPM const RtModel *
#define ABI_CHECK(id, name, ret, params)                                                                               \
  _Static_assert(__builtin_types_compatible_p(__typeof__(name), ret params),                                          \
                 "kernels.def row " #id ": " #name " is not " #ret " " #params " in modelc_rt.h");
#define KERNEL ABI_CHECK
#include "../../compiler/backend/kernels.def"
#ifdef ABI_BAD_ROW /* the self-test: rt_softmax with its row count as a size_t */
ABI_CHECK(K_BAD, rt_softmax, RV, (PF, CPF, Z, I))
#endif

/* ---- enums both sides define ---- */
#define ABI_DTYPE(dt, rt_name, value, fmt_name, fmt_value)                                                             \
  _Static_assert(rt_name == value && fmt_name == fmt_value, "kernels.def: " #rt_name " is not " #value " or " #fmt_name \
                                                            " is not " #fmt_value);
#include "../../compiler/backend/kernels.def"
_Static_assert(TRAIN_SCHED_COSINE == (int)RT_SCHED_COSINE && TRAIN_SCHED_CONSTANT == (int)RT_SCHED_CONSTANT &&
                   TRAIN_SCHED_LINEAR == (int)RT_SCHED_LINEAR && TRAIN_SCHED_COUNT == 3,
               "TrainSchedule (ir/ir.h) and RtSchedule (modelc_rt.h) differ");
_Static_assert(TRAIN_OPT_ADAMW == (int)RT_OPT_ADAMW && TRAIN_OPT_SGD == (int)RT_OPT_SGD && TRAIN_OPT_COUNT == 2,
               "TrainOptimizer and RtOptimizer differ");
_Static_assert(TRAIN_PREC_FP32 == (int)RT_PREC_FP32 && TRAIN_PREC_BF16 == (int)RT_PREC_BF16 &&
                   TRAIN_PREC_FP16 == (int)RT_PREC_FP16 && TRAIN_PREC_COUNT == 3,
               "TrainPrecision and RtPrecision differ");
_Static_assert(PF_DENSE == (int)RT_FMT_DENSE && PF_COUNT == 1, "ParamFormat and RtFormat differ");
_Static_assert(INIT_ZEROS == (int)RT_INIT_ZEROS && INIT_ONES == (int)RT_INIT_ONES &&
                   INIT_NORMAL == (int)RT_INIT_NORMAL && INIT_UNIFORM == (int)RT_INIT_UNIFORM &&
                   INIT_SINUSOID == (int)RT_INIT_SINUSOID && INIT_COUNT == 5,
               "InitKind (ir/ir.h) and RtInit (modelc_rt.h) differ");

/* The number of KERNEL rows, counted by the preprocessor the same way kernels.c does. */
#define KERNEL_COUNT_ROW(id, name, ret, params) +1
static const int nrows = 0
#define KERNEL KERNEL_COUNT_ROW
#include "../../compiler/backend/kernels.def"
    ;

START_TEST(test_rows_present) {
  ck_assert_int_ge(nrows, 25); /* the table lists the entry points of both backends */
}
END_TEST

/* A wrong row really is a compile error (the assertions above are not vacuous). */
START_TEST(test_bad_row_rejected) {
  const char *cc = getenv("CC") ? getenv("CC") : "cc";
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s -std=c11 -fsyntax-only -D_POSIX_C_SOURCE=200809L -DABI_BAD_ROW tests/unit/test_abi.c "
           "$(pkg-config --cflags check) > /tmp/modelc_abi_bad.log 2>&1",
           cc);
  int st = system(cmd);
  ck_assert_msg(st != 0, "test_abi.c compiled with a wrong kernel row");
  FILE *f = fopen("/tmp/modelc_abi_bad.log", "r");
  ck_assert_ptr_nonnull(f);
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  ck_assert_msg(strstr(buf, "kernels.def row K_BAD: rt_softmax is not") != NULL, "the error does not name the row: %s", buf);
  /* and the same command without the bad row compiles */
  snprintf(cmd, sizeof cmd,
           "%s -std=c11 -fsyntax-only -D_POSIX_C_SOURCE=200809L tests/unit/test_abi.c $(pkg-config --cflags check) "
           "> /tmp/modelc_abi_good.log 2>&1",
           cc);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A quantised parameter's bytes: ir_param_storage_bytes (what the compiler lays out, and what its
 * emitters put in RtParamInfo) against core/quant.c's rt_quant_* (what the kernels and the loader
 * read), for every quantised dtype's ABI_DTYPE row and odd shapes. */
START_TEST(test_quant_layout_agrees) {
  static const struct {
    DType dt;
    int fmt;
  } rows[] = {
#define ABI_DTYPE(dt, rt_name, value, fmt_name, fmt_value) {dt, fmt_value},
#include "../../compiler/backend/kernels.def"
  };
  static const int64_t shapes[][2] = {{1, 32}, {3, 64}, {5, 96}, {67, 160}, {50257, 768}, {2, 7}, {1, 1}};
  int checked = 0;
  for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
    if (!ir_dtype_quantised(rows[r].dt)) continue;
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
      int64_t N = shapes[k][0], K = shapes[k][1];
      RtError err;
      int fits = rt_quant_check((RtFormat)rows[r].fmt, N, K, &err) == 0;
      ck_assert_int_eq(fits, !ir_quant_block(rows[r].dt) || K % ir_quant_block(rows[r].dt) == 0);
      if (!fits) continue;
      Module *m = ir_module_new("abi");
      Param *p = ir_add_param(m, "w", ir_type2(rows[r].dt, N, K), INIT_ZEROS, 0);
      int64_t values = ir_type_bytes(&p->type);
      ck_assert_int_eq(values, rt_quant_values_bytes((RtFormat)rows[r].fmt, N, K));
      ck_assert_int_eq((values + 63) / 64 * 64, rt_quant_scales_offset((RtFormat)rows[r].fmt, N, K));
      ck_assert_int_eq(ir_param_storage_bytes(p), rt_quant_bytes((RtFormat)rows[r].fmt, N, K));
      ir_module_free(m);
      checked++;
    }
  }
  ck_assert_int_ge(checked, 3 * 5);
}
END_TEST

/* The prune pass's facts as the emitters write them (kt_param_abi: the IR's enum values) are the
 * runtime's RtPrune / RtSelect values, and the compiler's csr layout (ir_csr_*, what it lays out)
 * is the runtime's (rt_csr_*, what the loader packs and the kernel reads). */
START_TEST(test_prune_abi_agrees) {
  ck_assert_int_eq(PRUNE_NONE, RT_PRUNE_NONE);
  ck_assert_int_eq(PRUNE_MAGNITUDE, RT_PRUNE_MAGNITUDE);
  ck_assert_int_eq(PRUNE_GLOBAL, RT_PRUNE_GLOBAL);
  ck_assert_int_eq(PRUNE_NM, RT_PRUNE_NM);
  ck_assert_int_eq(SEL_NONE, RT_SEL_NONE);
  ck_assert_int_eq(SEL_NORM, RT_SEL_NORM);
  ck_assert_int_eq(SEL_IMPORTANCE, RT_SEL_IMPORTANCE);
  static const int64_t caps[] = {1, 15, 16, 17, 100, 4915, 1 << 20};
  for (size_t i = 0; i < sizeof caps / sizeof *caps; i++) {
    ck_assert_int_eq(ir_csr_cols_offset(caps[i]), rt_csr_cols_offset(caps[i]));
    ck_assert_int_eq(ir_csr_rowptr_offset(caps[i]), rt_csr_rowptr_offset(caps[i]));
    ck_assert_int_eq(ir_csr_bytes(384, caps[i]), rt_csr_bytes(384, 128, caps[i]));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("abi");
  TCase *tc = tcase_create("kernels");
  tcase_add_test(tc, test_rows_present);
  tcase_add_test(tc, test_bad_row_rejected);
  tcase_add_test(tc, test_quant_layout_agrees);
  tcase_add_test(tc, test_prune_abi_agrees);
  suite_add_tcase(s, tc);
  return check_run(s);
}
