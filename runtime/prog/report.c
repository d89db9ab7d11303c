/* report.c: what PROG train writes for people: the CSV log of every step (rewritten on resume up
 * to the resumed step), the SVG loss curve (hand-written: training loss, validation loss, axes),
 * and small formatting helpers (file names next to --out, durations). A run replaces a log or
 * curve at a derived path only if it is one of ours (rt_log_replaceable, rt_svg_replaceable). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prog.h"
#include "train.h"

/* A growing string (for the SVG and the rewritten CSV). */
typedef struct Str {
  char *s;
  size_t len, cap;
  int oom;
} Str;

static void sputf(Str *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void sputf(Str *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
      b->oom = 1;
      return;
    }
    if (b->s && (size_t)k < room) {
      b->len += (size_t)k;
      return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + (size_t)k + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
      b->oom = 1;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
}

/* "w.safetensors" -> "w" + ext; anything else -> path + ext */
char *rt_with_ext(const char *path, const char *strip, const char *ext) {
  size_t n = strlen(path), s = strlen(strip);
  if (n > s && !strcmp(path + n - s, strip)) n -= s;
  char *r = malloc(n + strlen(ext) + 1);
  if (r) {
    memcpy(r, path, n);
    strcpy(r + n, ext);
  }
  return r;
}

/* ---- log and plot ---- */

/* the columns of every log; a distilling program's rows add kl,ce (the loss's parts) */
static const char log_header[] = "step,lr,loss,val_loss,val_bpb,tokens_per_s,elapsed_s,loss_scale";
static const char svg_head[] = "<svg xmlns=\"http://www.w3.org/2000/svg\"";
static const char svg_marker[] = "<desc>modelc train: loss curve</desc>";

/* 1 when nothing is at path, or the file there begins with `head` and holds `marker` (NULL: no
 * marker) in its first 1 KiB: a file of ours that a run may replace. */
static int absent_or_ours(const char *path, const char *head, const char *marker) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return errno == ENOENT;
  char buf[1025];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0) return 0;
  buf[n] = '\0';
  return strncmp(buf, head, strlen(head)) == 0 && (!marker || strstr(buf, marker));
}

int rt_log_replaceable(const char *path) { return absent_or_ours(path, log_header, NULL); }
int rt_svg_replaceable(const char *path) { return absent_or_ours(path, svg_head, svg_marker); }
const char *rt_svg_marker(void) { return svg_marker; }

/* Opens the CSV log: fresh, or on resume the old one cut to the rows up to the resumed step. */
int rt_open_log(Trainer *t, int resumed, RtError *err) {
  const char *header = log_header;
  Str keep = {0};
  if (resumed) {
    unsigned char *old = NULL;
    size_t n = 0;
    RtError e2;
    if (rt_read_file(t->log_path, &old, &n, &e2) == 0) {
      size_t i = 0;
      while (i < n && old[i] != '\n') i++; /* skip the header */
      i++;
      while (i < n) {
        size_t j = i;
        while (j < n && old[j] != '\n') j++;
        char line[512];
        size_t len = j - i < sizeof line - 1 ? j - i : sizeof line - 1;
        memcpy(line, old + i, len);
        line[len] = 0;
        char *f[11] = {0};
        int nf = 0;
        for (char *c = line; nf < 11;) {
          f[nf++] = c;
          char *comma = strchr(c, ',');
          if (!comma) break;
          *comma = 0;
          c = comma + 1;
        }
        long long s;
        if (nf == (t->m->loss_parts == 3 ? 10 : 8) && rt_parse_int(f[0], 1, INT64_MAX, &s) == 0 && s <= t->step && t->nhist < t->step) {
          Hist *h = &t->hist[t->nhist++];
          h->step = s;
          h->loss = atof(f[2]);
          h->val_loss = f[3][0] ? atof(f[3]) : NAN;
          h->val_bpb = f[4][0] ? atof(f[4]) : NAN;
          sputf(&keep, "%.*s\n", (int)(j - i), (const char *)old + i);
        }
        i = j + 1;
      }
      free(old);
    }
  }
  t->log = fopen(t->log_path, "w");
  if (!t->log) {
    free(keep.s);
    return rt_fail(err, "%s: %s", t->log_path, strerror(errno));
  }
  fputs(header, t->log);
  fputs(t->m->loss_parts == 3 ? ",kl,ce\n" : "\n", t->log);
  if (keep.len) fwrite(keep.s, 1, keep.len, t->log);
  free(keep.s);
  fflush(t->log);
  return 0;
}

/* 1, 2 or 5 times a power of ten, about span/5. */
static double nice_step(double span) {
  if (!(span > 0)) return 1;
  double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* The loss curve as a hand-written SVG: training loss (a polyline, averaged into at most 1000
 * points), validation loss (points joined by a dashed line), axes with ticks and labels. */
int rt_write_svg(const Trainer *t, RtError *err) {
  const double Wd = 800, Ht = 480, L = 70, R = 20, Tp = 40, Bt = 55;
  double pw = Wd - L - R, ph = Ht - Tp - Bt;
  int64_t x0 = 0, x1 = t->steps;
  double ylo = INFINITY, yhi = -INFINITY;
  for (int64_t i = 0; i < t->nhist; i++) {
    const Hist *h = &t->hist[i];
    if (isfinite(h->loss)) ylo = fmin(ylo, h->loss), yhi = fmax(yhi, h->loss);
    if (isfinite(h->val_loss)) ylo = fmin(ylo, h->val_loss), yhi = fmax(yhi, h->val_loss);
  }
  if (!(ylo <= yhi)) ylo = 0, yhi = 1;
  if (yhi - ylo < 1e-9) ylo -= 0.5, yhi += 0.5;
  double ys = nice_step(yhi - ylo);
  ylo = floor(ylo / ys) * ys;
  yhi = ceil(yhi / ys) * ys;
  double xs = nice_step((double)(x1 - x0));
  if (xs < 1) xs = 1;
#define SX(v) (L + ((double)(v) - (double)x0) / (double)(x1 > x0 ? x1 - x0 : 1) * pw)
#define SY(v) (Tp + (yhi - (v)) / (yhi - ylo) * ph)
  Str b = {0};
  sputf(&b, "%s width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n", svg_head, Wd, Ht, Wd, Ht);
  sputf(&b, "%s\n", svg_marker);
  sputf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  sputf(&b, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">%s: loss</text>\n", L + pw / 2,
        t->m->name);
  /* grid, ticks and tick labels */
  for (double y = ylo; y <= yhi + ys * 1e-6; y += ys) {
    double py = SY(y);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", L, py, L + pw, py);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L - 5, py, L, py);
    sputf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 8, py + 4, y);
  }
  for (double x = (double)x0; x <= (double)x1 + xs * 1e-6; x += xs) {
    double px = SX(x);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", px, Tp, px, Tp + ph);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", px, Tp + ph, px,
          Tp + ph + 5);
    sputf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", px, Tp + ph + 18, x);
  }
  sputf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n", L, Tp,
        pw, ph);
  sputf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", L + pw / 2, Ht - 12);
  sputf(&b, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">loss (nats per byte)</text>\n",
        Tp + ph / 2);
  /* training loss, bucket means */
  int64_t per = t->nhist > 1000 ? (t->nhist + 999) / 1000 : 1;
  sputf(&b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
  for (int64_t i = 0; i < t->nhist; i += per) {
    double s = 0, l = 0;
    int64_t k = 0;
    for (int64_t j = i; j < i + per && j < t->nhist; j++, k++) s += (double)t->hist[j].step, l += t->hist[j].loss;
    if (isfinite(l)) sputf(&b, "%.1f,%.1f ", SX(s / (double)k), SY(l / (double)k));
  }
  sputf(&b, "\"/>\n");
  /* validation */
  sputf(&b, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\" points=\"");
  for (int64_t i = 0; i < t->nhist; i++)
    if (isfinite(t->hist[i].val_loss)) sputf(&b, "%.1f,%.1f ", SX(t->hist[i].step), SY(t->hist[i].val_loss));
  sputf(&b, "\"/>\n");
  for (int64_t i = 0; i < t->nhist; i++)
    if (isfinite(t->hist[i].val_loss))
      sputf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", SX(t->hist[i].step),
            SY(t->hist[i].val_loss));
  /* legend */
  double lx = L + pw - 150, ly = Tp + 15;
  sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">train loss</text>\n", lx, ly, lx + 25, ly, lx + 32, ly + 4);
  sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-width=\"2\" "
            "stroke-dasharray=\"4 3\"/><circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">validation loss</text>\n", lx, ly + 18, lx + 25, ly + 18, lx + 12.5, ly + 18,
        lx + 32, ly + 22);
  sputf(&b, "</svg>\n");
#undef SX
#undef SY
  if (b.oom) {
    free(b.s);
    return rt_fail(err, "out of memory writing %s", t->svg_path);
  }
  RtChunk ch = {b.s, b.len};
  int rc = rt_write_file_atomic(t->svg_path, &ch, 1, err);
  free(b.s);
  return rc;
}

void rt_fmt_secs(char *buf, size_t n, double s) {
  if (!(s >= 0) || s > 1e8) snprintf(buf, n, "?");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}
