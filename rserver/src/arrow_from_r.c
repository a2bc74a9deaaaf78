/* R object -> Arrow IPC stream, on R's main thread. Writing has two phases:
 * rb_arrow_plan() checks the object and measures every buffer (it may raise R
 * errors, and uses only R_alloc memory until its last step), and
 * rb_arrow_write() fills a destination of the planned size without calling
 * anything that can raise. Type rules: protocol/SPEC.md ("Arrow payloads"). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"
#include "arrow_format.h"

enum { CK_NONE, CK_LGL, CK_INT, CK_DBL, CK_STR, CK_FACTOR, CK_DATE, CK_POSIXCT, CK_DIFFTIME, CK_BLOB };

struct rb_arrow_col {
  SEXP x;
  const int *ints;           /* the data of x, fetched once: INTEGER() and */
  const double *reals;       /* friends are calls outside R itself */
  const SEXP *strs;
  int unexpanded;            /* a compact sequence, not expanded: read with *_GET_REGION */
  int kind;
  R_xlen_t n, nulls;
  int large;                 /* var-width data over 2^31-1 bytes: 64-bit offsets */
  int translated;            /* some string needed translation to UTF-8 */
  uint64_t data_bytes;
  const char *name;          /* UTF-8 */
  const char *tz;            /* POSIXct: tzone, NULL when absent */
  const char *units;         /* difftime */
  double scale;              /* difftime: seconds per unit */
  struct rb_arrow_col *levels;   /* factor: its levels as a string column */
};

typedef struct rb_arrow_col wcol;

static int has_class(SEXP x, const char *a, const char *b) {
  SEXP cls = Rf_getAttrib(x, R_ClassSymbol);
  R_xlen_t n = TYPEOF(cls) == STRSXP ? XLENGTH(cls) : 0;
  if (n != (b ? 2 : 1)) return 0;
  return strcmp(CHAR(STRING_ELT(cls, 0)), a) == 0 && (!b || strcmp(CHAR(STRING_ELT(cls, 1)), b) == 0);
}

/* Every attribute of x is one of `allowed` (NULL-terminated). */
static int attrs_within(SEXP x, const char *const *allowed) {
  for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) {
    const char *tag = CHAR(PRINTNAME(TAG(a)));
    int ok = 0;
    for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(tag, allowed[i]) == 0;
    if (!ok) return 0;
  }
  return 1;
}

static int is_string1(SEXP x) { return TYPEOF(x) == STRSXP && XLENGTH(x) == 1 && STRING_ELT(x, 0) != NA_STRING; }

static const char *const difftime_units[] = {"secs", "mins", "hours", "days", "weeks", NULL};
static const double difftime_scale[] = {1, 60, 3600, 86400, 604800};

/* The column kind of x, ignoring a `names` attribute when names_ok. */
static int col_kind(SEXP x, int names_ok) {
  static const char *const plain[] = {"names", NULL}, *const none[] = {NULL};
  static const char *const factor[] = {"levels", "class", "names", NULL};
  static const char *const posixct[] = {"class", "tzone", "names", NULL};
  static const char *const difftime[] = {"class", "units", "names", NULL};
  static const char *const cls[] = {"class", "names", NULL};
  if (!names_ok && Rf_getAttrib(x, R_NamesSymbol) != R_NilValue) return CK_NONE;
  int t = TYPEOF(x);
  if (ATTRIB(x) == R_NilValue || attrs_within(x, names_ok ? plain : none)) {
    switch (t) {
    case LGLSXP: return CK_LGL;
    case INTSXP: return CK_INT;
    case REALSXP: return CK_DBL;
    case STRSXP: return CK_STR;
    case VECSXP:
      for (R_xlen_t i = 0; i < XLENGTH(x); i++) {
        SEXP e = VECTOR_ELT(x, i);
        if (!(TYPEOF(e) == RAWSXP && ATTRIB(e) == R_NilValue) && e != R_NilValue) return CK_NONE;
      }
      return ATTRIB(x) == R_NilValue ? CK_BLOB : CK_NONE;
    default: return CK_NONE;
    }
  }
  if (t == INTSXP && attrs_within(x, factor) && TYPEOF(Rf_getAttrib(x, R_LevelsSymbol)) == STRSXP &&
      (has_class(x, "factor", NULL) || has_class(x, "ordered", "factor")))
    return CK_FACTOR;
  if ((t == REALSXP || t == INTSXP) && attrs_within(x, cls) && has_class(x, "Date", NULL)) return CK_DATE;
  if (t == REALSXP && attrs_within(x, posixct) && has_class(x, "POSIXct", "POSIXt")) {
    SEXP tz = Rf_getAttrib(x, Rf_install("tzone"));
    return tz == R_NilValue || is_string1(tz) ? CK_POSIXCT : CK_NONE;
  }
  if (t == REALSXP && attrs_within(x, difftime) && has_class(x, "difftime", NULL)) {
    SEXP u = Rf_getAttrib(x, Rf_install("units"));
    if (!is_string1(u)) return CK_NONE;
    for (int i = 0; difftime_units[i]; i++) if (strcmp(CHAR(STRING_ELT(u, 0)), difftime_units[i]) == 0) return CK_DIFFTIME;
  }
  return CK_NONE;
}

/* The row.names attribute as stored (compact c(NA, -n) is not expanded). */
static SEXP raw_row_names(SEXP df) {
  for (SEXP a = ATTRIB(df); a != R_NilValue; a = CDR(a))
    if (TAG(a) == R_RowNamesSymbol) return CAR(a);
  return R_NilValue;
}

static int compact_row_names(SEXP rn) {
  return TYPEOF(rn) == INTSXP && XLENGTH(rn) == 2 && INTEGER(rn)[0] == NA_INTEGER;
}

static int is_plain_frame(SEXP x) {
  static const char *const allowed[] = {"names", "class", "row.names", NULL};
  if (TYPEOF(x) != VECSXP || !attrs_within(x, allowed)) return 0;
  if (!has_class(x, "data.frame", NULL)) return 0;   /* subclasses: R/arrow.R's arrow_form() */
  SEXP names = Rf_getAttrib(x, R_NamesSymbol);
  if (XLENGTH(x) && (TYPEOF(names) != STRSXP || XLENGTH(names) != XLENGTH(x))) return 0;
  SEXP rn = raw_row_names(x);
  R_xlen_t nrow = compact_row_names(rn) ? abs(INTEGER(rn)[1]) : (Rf_isNull(rn) ? 0 : XLENGTH(rn));
  if (!compact_row_names(rn) && TYPEOF(rn) != STRSXP && TYPEOF(rn) != INTSXP) return 0;
  for (R_xlen_t i = 0; i < XLENGTH(x); i++) {
    SEXP c = VECTOR_ELT(x, i);
    if (STRING_ELT(names, i) == NA_STRING || col_kind(c, 0) == CK_NONE || XLENGTH(c) != nrow) return 0;
  }
  return 1;
}

int rb_arrow_kind(SEXP x) {
  if (is_plain_frame(x)) return RB_AK_FRAME;
  int t = TYPEOF(x);
  if (t != LGLSXP && t != INTSXP && t != REALSXP && t != STRSXP) return RB_AK_NONE;
  SEXP dim = Rf_getAttrib(x, R_DimSymbol);
  if (dim != R_NilValue) {
    static const char *const allowed[] = {"dim", NULL};
    return attrs_within(x, allowed) ? RB_AK_ARRAY : RB_AK_NONE;   /* dimnames: kept as a handle */
  }
  int k = col_kind(x, 1);
  if (k == CK_NONE) return RB_AK_NONE;
  return ATTRIB(x) == R_NilValue ? RB_AK_PLAIN : RB_AK_VECTOR;
}

/* Objects that R/arrow.R's arrow_form() may give a form the writer knows. */
static int may_have_form(SEXP x) {
  if (!OBJECT(x) && Rf_getAttrib(x, R_DimNamesSymbol) == R_NilValue) return 0;
  return Rf_inherits(x, "data.frame") || Rf_inherits(x, "ts") || Rf_inherits(x, "zoo") ||
         (Rf_isVectorAtomic(x) && Rf_getAttrib(x, R_DimNamesSymbol) != R_NilValue);
}

/* list(object, extra schema metadata) for an object with an Arrow form, else NULL. */
SEXP rb_arrow_form(SEXP x) {
  if (rb_arrow_kind(x) != RB_AK_NONE) {
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SET_VECTOR_ELT(out, 0, x);
    UNPROTECT(1);
    return out;
  }
  if (!may_have_form(x)) return R_NilValue;
  SEXP fn = PROTECT(Rf_findVarInFrame(R_FindNamespace(PROTECT(Rf_mkString("rserver"))), Rf_install("arrow_form")));
  SEXP call = PROTECT(Rf_lang2(fn, x));
  SEXP form = PROTECT(Rf_eval(call, R_BaseEnv));
  SEXP out = TYPEOF(form) == VECSXP && XLENGTH(form) == 2 && rb_arrow_kind(VECTOR_ELT(form, 0)) != RB_AK_NONE
             ? form : R_NilValue;
  UNPROTECT(4);
  return out;
}

/* ---- planning ------------------------------------------------------------------ */

/* R_IsNA without a call per element. */
static inline int is_na_real(double v) {
  uint64_t b;
  memcpy(&b, &v, 8);
  return ar_is_r_na_bits(b);
}

/* A string as UTF-8 and its length; LENGTH() when no translation was needed. */
static const char *utf8_of(SEXP ch, size_t *len) {
  const char *u = Rf_translateCharUTF8(ch);
  *len = u == CHAR(ch) ? (size_t)LENGTH(ch) : strlen(u);
  return u;
}

static int is_null_at(const wcol *c, R_xlen_t i) {
  switch (c->kind) {
  case CK_LGL: case CK_INT: case CK_FACTOR: return c->ints[i] == NA_INTEGER;
  case CK_DBL: return is_na_real(c->reals[i]);
  case CK_DATE: return c->ints ? c->ints[i] == NA_INTEGER : ISNAN(c->reals[i]);
  case CK_POSIXCT: case CK_DIFFTIME: return ISNAN(c->reals[i]);
  case CK_STR: return c->strs[i] == NA_STRING;
  case CK_BLOB: return VECTOR_ELT(c->x, i) == R_NilValue;
  default: return 0;
  }
}

static double time_value(const wcol *c, R_xlen_t i) {
  return c->ints ? (double)c->ints[i] : c->reals[i];
}

/* Whether x is one of R's compact sequences, not yet expanded: its values are
 * then written with *_GET_REGION, which R computes without allocating or
 * raising, instead of asking for its data pointer, which would make R expand
 * it first (80 MB for as.numeric(1:1e7)). */
static int unexpanded_sequence(SEXP x, int kind) {
  if (!ALTREP(x) || DATAPTR_OR_NULL(x) != NULL || (kind != CK_DBL && kind != CK_INT)) return 0;
  SEXP info = ATTRIB(ALTREP_CLASS(x));   /* (class name, package, type) */
  if (TYPEOF(info) != LISTSXP || TYPEOF(CAR(info)) != SYMSXP) return 0;
  const char *cls = CHAR(PRINTNAME(CAR(info)));
  return strcmp(cls, kind == CK_DBL ? "compact_realseq" : "compact_intseq") == 0;
}

static void plan_col(wcol *c, SEXP x, int kind, const char *name, double scale) {
  memset(c, 0, sizeof *c);
  c->scale = scale;
  c->x = x;
  c->kind = kind;
  c->n = XLENGTH(x);
  c->name = name;
  if (unexpanded_sequence(x, kind)) {
    c->unexpanded = 1;   /* a sequence has no NA */
    return;
  }
  switch (TYPEOF(x)) {
  case LGLSXP: c->ints = LOGICAL(x); break;
  case INTSXP: c->ints = INTEGER(x); break;
  case REALSXP: c->reals = REAL(x); break;
  case STRSXP: c->strs = STRING_PTR_RO(x); break;
  default: break;
  }
  if (kind == CK_DBL) {   /* the common bulk cases: tight scans, no branches */
    c->nulls = (R_xlen_t)ar_count_r_na_wide((const uint8_t *)c->reals, c->n);
    return;
  }
  if (kind == CK_INT || kind == CK_LGL) {
    R_xlen_t nulls = 0;
    for (R_xlen_t i = 0; i < c->n; i++) nulls += c->ints[i] == NA_INTEGER;
    c->nulls = nulls;
    return;
  }
  for (R_xlen_t i = 0; i < c->n; i++) {
    if (is_null_at(c, i)) { c->nulls++; continue; }
    if (kind == CK_STR) {
      const void *vmax = vmaxget();
      size_t len;
      if (utf8_of(c->strs[i], &len) != CHAR(c->strs[i])) c->translated = 1;
      c->data_bytes += len;
      vmaxset(vmax);
    } else if (kind == CK_BLOB) {
      c->data_bytes += (uint64_t)XLENGTH(VECTOR_ELT(x, i));
    } else if (kind == CK_DATE) {
      double v = floor(time_value(c, i));
      if (!(v >= INT32_MIN && v <= INT32_MAX)) Rf_error("rbridge: column '%s': a date is out of Arrow's date32 range", name);
    } else if (kind == CK_POSIXCT || kind == CK_DIFFTIME) {
      double v = c->reals[i] * (kind == CK_DIFFTIME ? c->scale : 1) * 1e6;
      if (!(fabs(v) < 9.2e18)) Rf_error("rbridge: column '%s': a time is out of range for microseconds in 64 bits", name);
    }
  }
  c->large = c->data_bytes > INT32_MAX;
}

static void plan_column(wcol *c, SEXP x, const char *name) {
  int kind = col_kind(x, 1);
  if (kind == CK_DIFFTIME) {
    const char *u = CHAR(STRING_ELT(Rf_getAttrib(x, Rf_install("units")), 0));
    double scale = 1;
    for (int i = 0; difftime_units[i]; i++) if (strcmp(u, difftime_units[i]) == 0) scale = difftime_scale[i];
    plan_col(c, x, kind, name, scale);
    c->units = u;
    return;
  }
  plan_col(c, x, kind, name, 1);
  if (kind == CK_POSIXCT) {
    SEXP tz = Rf_getAttrib(x, Rf_install("tzone"));
    if (tz != R_NilValue) c->tz = Rf_translateCharUTF8(STRING_ELT(tz, 0));
  } else if (kind == CK_FACTOR) {
    SEXP lev = Rf_getAttrib(x, R_LevelsSymbol);
    c->levels = (wcol *)R_alloc(1, sizeof *c->levels);
    plan_col(c->levels, lev, CK_STR, name, 1);
    if (c->levels->nulls) Rf_error("rbridge: column '%s': a factor level is NA", name);
    for (R_xlen_t i = 0; i < c->n; i++) {
      int v = c->ints[i];
      if (v != NA_INTEGER && (v < 1 || v > XLENGTH(lev))) Rf_error("rbridge: column '%s': a factor code is out of range", name);
    }
  }
}

/* ---- metadata ---------------------------------------------------------------- */

typedef struct { const char *key, *value; } kv;

static size_t put_str(fb_builder *b, const char *s) { return fb_string(b, s, strlen(s)); }

/* A vector of KeyValue tables, written at the builder's end. */
static size_t put_kvs(fb_builder *b, const kv *items, int n) {
  size_t vec = fb_vector_begin(b, (uint32_t)n, 4, 4);
  for (int i = 0; i < n; i++) {
    fb_tab t = fb_tab_begin(b, 2);
    size_t ks = fb_tab_offset(b, &t, 0), vs = fb_tab_offset(b, &t, 1);
    fb_tab_end(b, &t);
    fb_patch(b, vec + 4 + 4 * (size_t)i, t.start);
    fb_patch(b, ks, put_str(b, items[i].key));
    fb_patch(b, vs, put_str(b, items[i].value));
  }
  return vec;
}

static size_t put_int_type(fb_builder *b, int bits, int is_signed) {
  fb_tab t = fb_tab_begin(b, 2);
  int32_t bw = bits;
  uint8_t sg = (uint8_t)is_signed;
  fb_tab_scalar(b, &t, 0, &bw, 4);
  fb_tab_scalar(b, &t, 1, &sg, 1);
  fb_tab_end(b, &t);
  return t.start;
}

static uint8_t arrow_type_of(const wcol *c) {
  switch (c->kind) {
  case CK_LGL: return AT_BOOL;
  case CK_INT: return AT_INT;
  case CK_DBL: return AT_FLOAT;
  case CK_STR: case CK_FACTOR: return c->large ? AT_LARGE_UTF8 : AT_UTF8;
  case CK_DATE: return AT_DATE;
  case CK_POSIXCT: return AT_TIMESTAMP;
  case CK_DIFFTIME: return AT_DURATION;
  default: return c->large ? AT_LARGE_BINARY : AT_BINARY;
  }
}

static size_t put_type(fb_builder *b, const wcol *c) {
  int16_t unit;
  fb_tab t;
  switch (c->kind) {
  case CK_INT: return put_int_type(b, 32, 1);
  case CK_DBL:
    t = fb_tab_begin(b, 1);
    unit = 2;   /* DOUBLE */
    fb_tab_scalar(b, &t, 0, &unit, 2);
    fb_tab_end(b, &t);
    return t.start;
  case CK_DATE: case CK_POSIXCT: case CK_DIFFTIME: {
    t = fb_tab_begin(b, 2);
    unit = c->kind == CK_DATE ? 0 : AU_MICRO;
    fb_tab_scalar(b, &t, 0, &unit, 2);
    size_t tz = c->kind == CK_POSIXCT && c->tz && c->tz[0] ? fb_tab_offset(b, &t, 1) : 0;
    fb_tab_end(b, &t);
    if (tz) fb_patch(b, tz, put_str(b, c->tz));
    return t.start;
  }
  default:
    t = fb_tab_begin(b, 0);
    fb_tab_end(b, &t);
    return t.start;
  }
}

static void put_field(fb_builder *b, size_t slot, const wcol *c, int64_t dict_id) {
  fb_tab t = fb_tab_begin(b, 7);
  size_t name = fb_tab_offset(b, &t, 0);
  uint8_t nullable = 1, type_type = arrow_type_of(c);
  fb_tab_scalar(b, &t, 1, &nullable, 1);
  fb_tab_scalar(b, &t, 2, &type_type, 1);
  size_t type = fb_tab_offset(b, &t, 3);
  size_t dict = c->kind == CK_FACTOR ? fb_tab_offset(b, &t, 4) : 0;
  size_t children = fb_tab_offset(b, &t, 5);
  kv meta[1];
  int nmeta = 0;
  if (c->kind == CK_POSIXCT && c->tz && !c->tz[0]) meta[nmeta++] = (kv){"rbridge.tzone", ""};
  if (c->kind == CK_DIFFTIME) meta[nmeta++] = (kv){"rbridge.units", c->units};
  size_t md = nmeta ? fb_tab_offset(b, &t, 6) : 0;
  fb_tab_end(b, &t);
  fb_patch(b, slot, t.start);
  fb_patch(b, name, put_str(b, c->name));
  fb_patch(b, type, put_type(b, c));
  if (dict) {
    fb_tab d = fb_tab_begin(b, 3);
    uint8_t ordered = has_class(c->x, "ordered", "factor");
    fb_tab_scalar(b, &d, 0, &dict_id, 8);
    size_t it = fb_tab_offset(b, &d, 1);
    fb_tab_scalar(b, &d, 2, &ordered, 1);
    fb_tab_end(b, &d);
    fb_patch(b, dict, d.start);
    fb_patch(b, it, put_int_type(b, 32, 1));
  }
  fb_patch(b, children, fb_vector_begin(b, 0, 4, 4));
  if (md) fb_patch(b, md, put_kvs(b, meta, nmeta));
}

/* The Message table around a header; returns the header slot to patch. */
static size_t put_message(fb_builder *b, uint8_t header_type, int64_t body_len) {
  size_t root = fb_root_offset(b);
  fb_tab m = fb_tab_begin(b, 4);
  int16_t version = ARROW_V5;
  fb_tab_scalar(b, &m, 0, &version, 2);
  fb_tab_scalar(b, &m, 1, &header_type, 1);
  size_t header = fb_tab_offset(b, &m, 2);
  fb_tab_scalar(b, &m, 3, &body_len, 8);
  fb_tab_end(b, &m);
  fb_patch(b, root, m.start);
  return header;
}

/* ---- body layout -------------------------------------------------------------- */

enum { BUF_VALIDITY, BUF_VALUES, BUF_OFFSETS, BUF_DATA };

static uint64_t pad8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static uint64_t buffer_len(const wcol *c, int which) {
  uint64_t n = (uint64_t)c->n;
  switch (which) {
  case BUF_VALIDITY: return c->nulls ? (n + 7) / 8 : 0;
  case BUF_OFFSETS: return (n + 1) * (c->large ? 8 : 4);
  case BUF_DATA: return c->data_bytes;
  default:
    switch (c->kind) {
    case CK_LGL: return (n + 7) / 8;
    case CK_INT: case CK_FACTOR: case CK_DATE: return n * 4;
    default: return n * 8;
    }
  }
}

static int nbuffers(const wcol *c) { return (c->kind == CK_STR || c->kind == CK_BLOB) ? 3 : 2; }
static int buffer_kind(const wcol *c, int i) {
  if (i == 0) return BUF_VALIDITY;
  return nbuffers(c) == 3 ? (i == 1 ? BUF_OFFSETS : BUF_DATA) : BUF_VALUES;
}

static uint64_t body_len(const wcol *cols, int ncol) {
  uint64_t total = 0;
  for (int i = 0; i < ncol; i++)
    for (int k = 0; k < nbuffers(&cols[i]); k++) total += pad8(buffer_len(&cols[i], buffer_kind(&cols[i], k)));
  return total;
}

/* A RecordBatch table (used directly, and inside a DictionaryBatch). */
static size_t put_record_batch(fb_builder *b, const wcol *cols, int ncol, int64_t length) {
  fb_tab t = fb_tab_begin(b, 3);
  fb_tab_scalar(b, &t, 0, &length, 8);
  size_t nodes = fb_tab_offset(b, &t, 1), bufs = fb_tab_offset(b, &t, 2);
  fb_tab_end(b, &t);
  size_t nv = fb_vector_begin(b, (uint32_t)ncol, 16, 8);
  fb_patch(b, nodes, nv);
  for (int i = 0; i < ncol; i++) {
    int64_t node[2] = {(int64_t)cols[i].n, (int64_t)cols[i].nulls};
    if (!b->failed) memcpy(b->buf + nv + 4 + 16 * (size_t)i, node, 16);
  }
  uint32_t nb = 0;
  for (int i = 0; i < ncol; i++) nb += (uint32_t)nbuffers(&cols[i]);
  size_t bv = fb_vector_begin(b, nb, 16, 8);
  fb_patch(b, bufs, bv);
  int64_t off = 0;
  size_t k = 0;
  for (int i = 0; i < ncol; i++)
    for (int j = 0; j < nbuffers(&cols[i]); j++, k++) {
      int64_t buf[2] = {off, (int64_t)buffer_len(&cols[i], buffer_kind(&cols[i], j))};
      if (!b->failed) memcpy(b->buf + bv + 4 + 16 * k, buf, 16);
      off += (int64_t)pad8((uint64_t)buf[1]);
    }
  return t.start;
}

/* ---- the plan ------------------------------------------------------------------ */

struct rb_arrow_plan {
  wcol *cols;
  int ncol;
  int64_t rows;
  int kind;
  kv *meta;
  int nmeta;
  char dim[1024];
  fb_builder schema, batch, *dicts;
  int ndicts;
  uint64_t total;
};

static uint64_t message_len(const fb_builder *b, uint64_t body) { return 8 + pad8(b->len) + body; }

/* Sets a schema metadata key, replacing the value of one already set. */
static void set_meta(rb_arrow_plan *p, const char *key, const char *value) {
  for (int i = 0; i < p->nmeta; i++)
    if (strcmp(p->meta[i].key, key) == 0) { p->meta[i].value = value; return; }
  p->meta[p->nmeta++] = (kv){key, value};
}

rb_arrow_plan *rb_arrow_plan_new(SEXP x, SEXP extra_meta) {
  rb_arrow_plan *p = (rb_arrow_plan *)R_alloc(1, sizeof *p);
  memset(p, 0, sizeof *p);
  p->kind = rb_arrow_kind(x);
  if (p->kind == RB_AK_NONE) Rf_error("rbridge: this R object has no Arrow representation");
  R_xlen_t nextra = TYPEOF(extra_meta) == STRSXP ? XLENGTH(extra_meta) : 0;
  SEXP extra_keys = Rf_getAttrib(extra_meta, R_NamesSymbol);
  if (nextra && (TYPEOF(extra_keys) != STRSXP || XLENGTH(extra_keys) != nextra))
    Rf_error("rbridge: extra Arrow metadata must be a named character vector");
  p->meta = (kv *)R_alloc((size_t)(4 + nextra), sizeof *p->meta);
  if (p->kind == RB_AK_FRAME) {
    SEXP names = Rf_getAttrib(x, R_NamesSymbol), rn = raw_row_names(x);
    int explicit_rn = !compact_row_names(rn) && !Rf_isNull(rn);
    p->ncol = (int)XLENGTH(x) + explicit_rn;
    p->cols = (wcol *)R_alloc((size_t)p->ncol + 1, sizeof *p->cols);
    for (int i = 0; i < (int)XLENGTH(x); i++) plan_column(&p->cols[i], VECTOR_ELT(x, i), Rf_translateCharUTF8(STRING_ELT(names, i)));
    p->rows = compact_row_names(rn) ? abs(INTEGER(rn)[1]) : (Rf_isNull(rn) ? 0 : XLENGTH(rn));
    p->meta[p->nmeta++] = (kv){"rbridge.kind", "data.frame"};
    if (explicit_rn) {
      plan_column(&p->cols[p->ncol - 1], rn, "");
      p->meta[p->nmeta++] = (kv){"rbridge.row_names", "1"};
    }
  } else {
    SEXP names = Rf_getAttrib(x, R_NamesSymbol);
    p->ncol = 1 + (names != R_NilValue);
    p->cols = (wcol *)R_alloc(2, sizeof *p->cols);
    if (p->kind == RB_AK_ARRAY) {
      static const int kinds[] = {[LGLSXP] = CK_LGL, [INTSXP] = CK_INT, [REALSXP] = CK_DBL, [STRSXP] = CK_STR};
      plan_col(&p->cols[0], x, kinds[TYPEOF(x)], "", 1);
    } else {
      plan_column(&p->cols[0], x, "");
    }
    p->rows = XLENGTH(x);
    p->meta[p->nmeta++] = (kv){"rbridge.kind", p->kind == RB_AK_ARRAY ? "array" : "vector"};
    if (names != R_NilValue) {
      plan_column(&p->cols[1], names, "names");
      p->meta[p->nmeta++] = (kv){"rbridge.names", "1"};
    }
    if (p->kind == RB_AK_ARRAY) {
      SEXP dim = Rf_getAttrib(x, R_DimSymbol);
      size_t at = 0;
      for (R_xlen_t i = 0; i < XLENGTH(dim) && at < sizeof p->dim - 16; i++)
        at += (size_t)snprintf(p->dim + at, sizeof p->dim - at, i ? ",%d" : "%d", INTEGER(dim)[i]);
      if ((size_t)XLENGTH(dim) > 64) Rf_error("rbridge: arrays of more than 64 dimensions are not supported");
      p->meta[p->nmeta++] = (kv){"rbridge.dim", p->dim};
    }
  }
  for (R_xlen_t i = 0; i < nextra; i++)
    set_meta(p, Rf_translateCharUTF8(STRING_ELT(extra_keys, i)), Rf_translateCharUTF8(STRING_ELT(extra_meta, i)));
  for (int i = 0; i < p->ncol; i++) if (p->cols[i].kind == CK_FACTOR) p->ndicts++;
  /* From here on nothing raises an R error: malloc'd builders are safe. */
  fb_builder_init(&p->schema);
  fb_builder_init(&p->batch);
  p->dicts = calloc((size_t)p->ndicts + 1, sizeof *p->dicts);
  if (!p->dicts) Rf_error("rbridge: out of memory");

  size_t header = put_message(&p->schema, AH_SCHEMA, 0);
  fb_tab s = fb_tab_begin(&p->schema, 3);
  size_t fields = fb_tab_offset(&p->schema, &s, 1), md = fb_tab_offset(&p->schema, &s, 2);
  fb_tab_end(&p->schema, &s);
  fb_patch(&p->schema, header, s.start);
  size_t fv = fb_vector_begin(&p->schema, (uint32_t)p->ncol, 4, 4);
  fb_patch(&p->schema, fields, fv);
  for (int i = 0; i < p->ncol; i++) put_field(&p->schema, fv + 4 + 4 * (size_t)i, &p->cols[i], i);
  fb_patch(&p->schema, md, put_kvs(&p->schema, p->meta, p->nmeta));
  p->total = message_len(&p->schema, 0);

  for (int i = 0, d = 0; i < p->ncol; i++) {
    if (p->cols[i].kind != CK_FACTOR) continue;
    fb_builder *b = &p->dicts[d++];
    const wcol *lev = p->cols[i].levels;
    uint64_t blen = body_len(lev, 1);
    header = put_message(b, AH_DICTIONARY, (int64_t)blen);
    fb_tab t = fb_tab_begin(b, 3);
    int64_t id = i;
    fb_tab_scalar(b, &t, 0, &id, 8);
    size_t data = fb_tab_offset(b, &t, 1);
    fb_tab_end(b, &t);
    fb_patch(b, header, t.start);
    fb_patch(b, data, put_record_batch(b, lev, 1, (int64_t)lev->n));
    p->total += message_len(b, blen);
  }
  uint64_t blen = body_len(p->cols, p->ncol);
  header = put_message(&p->batch, AH_RECORD_BATCH, (int64_t)blen);
  fb_patch(&p->batch, header, put_record_batch(&p->batch, p->cols, p->ncol, p->rows));
  p->total += message_len(&p->batch, blen) + 8;   /* + end-of-stream marker */
  int failed = p->schema.failed || p->batch.failed;
  for (int d = 0; d < p->ndicts; d++) failed |= p->dicts[d].failed;
  if (failed) { rb_arrow_plan_free(p); Rf_error("rbridge: out of memory"); }
  return p;
}

size_t rb_arrow_plan_size(const rb_arrow_plan *p) { return (size_t)p->total; }

void rb_arrow_plan_free(rb_arrow_plan *p) {
  fb_builder_free(&p->schema);
  fb_builder_free(&p->batch);
  for (int d = 0; d < p->ndicts && p->dicts; d++) fb_builder_free(&p->dicts[d]);
  free(p->dicts);
  p->dicts = NULL;
  p->ndicts = 0;
}

/* ---- writing ------------------------------------------------------------------------ */

/* Where a stream goes: memory, and optionally the file behind it (fd >= 0),
 * at file_off for start. Large fixed-width buffers then go through the file:
 * fresh pages of an arena cost less written that way than faulted in one by
 * one (arena.c). */
typedef struct {
  const uint8_t *start;
  int fd;
  uint64_t file_off;
} out_t;

#define FILE_WRITE_MIN ((uint64_t)1 << 20)

static int pwrite_all(int fd, const void *src, size_t len, uint64_t at) {
  const uint8_t *p = src;
  while (len) {
    ssize_t k = pwrite(fd, p, len, (off_t)at);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k; len -= (size_t)k; at += (uint64_t)k;
  }
  return 0;
}

/* Values [i, i + k) of an int or double column, into buf. */
static void values_at(const wcol *c, R_xlen_t i, R_xlen_t k, void *buf) {
  if (c->unexpanded && c->kind == CK_DBL) REAL_GET_REGION(c->x, i, k, buf);
  else if (c->unexpanded) INTEGER_GET_REGION(c->x, i, k, buf);
  else if (c->kind == CK_DBL) memcpy(buf, c->reals + i, (size_t)k * 8);
  else memcpy(buf, c->ints + i, (size_t)k * 4);
}

/* Writes the values of an int or double column through the file; 0 when it
 * did not (the caller then copies them into memory, whose pages exist). A
 * sequence's values are computed into a small buffer a piece at a time. */
static int values_to_file(const out_t *o, const uint8_t *dst, const wcol *c, uint64_t len) {
  if (o->fd < 0 || len < FILE_WRITE_MIN) return 0;
  uint64_t at = o->file_off + (uint64_t)(dst - o->start);
  if (!c->unexpanded) return pwrite_all(o->fd, c->kind == CK_DBL ? (const void *)c->reals : (const void *)c->ints, len, at) == 0;
  double stage[8192];
  size_t width = c->kind == CK_DBL ? 8 : 4, per = sizeof stage / width;
  for (R_xlen_t i = 0; i < c->n; i += (R_xlen_t)per) {
    R_xlen_t k = c->n - i < (R_xlen_t)per ? c->n - i : (R_xlen_t)per;
    values_at(c, i, k, stage);
    if (pwrite_all(o->fd, stage, (size_t)k * width, at + (uint64_t)i * width)) return 0;
  }
  return 1;
}

static uint8_t *write_buffer(uint8_t *dst, const wcol *c, int which, const out_t *to) {
  uint64_t len = buffer_len(c, which);
  R_xlen_t n = c->n;
  if (which == BUF_VALIDITY && len) {
    memset(dst, 0, len);
    for (R_xlen_t i = 0; i < n; i++) if (!is_null_at(c, i)) dst[i >> 3] |= (uint8_t)(1u << (i & 7));
  } else if (which == BUF_OFFSETS) {   /* the data buffer too, which follows: one pass */
    uint8_t *data = dst + pad8(len);
    uint64_t off = 0;
    for (R_xlen_t i = 0; i <= n; i++) {
      if (c->large) { int64_t o = (int64_t)off; memcpy(dst + 8 * i, &o, 8); }
      else { int32_t o = (int32_t)off; memcpy(dst + 4 * i, &o, 4); }
      if (i == n || is_null_at(c, i)) continue;
      size_t k;
      const void *vmax = vmaxget();
      const void *src;
      if (c->kind == CK_STR && !c->translated) {   /* all UTF-8 or ASCII already */
        src = CHAR(c->strs[i]);
        k = (size_t)LENGTH(c->strs[i]);
      } else if (c->kind == CK_STR) {
        src = utf8_of(c->strs[i], &k);
      } else {
        SEXP r = VECTOR_ELT(c->x, i);
        k = (size_t)XLENGTH(r);
        src = RAW(r);
      }
      if (k) memcpy(data + off, src, k);
      vmaxset(vmax);
      off += k;
    }
  } else if (which == BUF_DATA) {
    /* written with the offsets */
  } else if (which == BUF_VALUES) {
    switch (c->kind) {
    case CK_LGL:
      memset(dst, 0, len);
      for (R_xlen_t i = 0; i < n; i++) if (c->ints[i] == 1) dst[i >> 3] |= (uint8_t)(1u << (i & 7));
      break;
    case CK_INT: case CK_DBL:
      if (!values_to_file(to, dst, c, len)) values_at(c, 0, n, dst);
      break;
    case CK_FACTOR:
      for (R_xlen_t i = 0; i < n; i++) {
        int32_t v = c->ints[i] == NA_INTEGER ? 0 : c->ints[i] - 1;
        memcpy(dst + 4 * i, &v, 4);
      }
      break;
    case CK_DATE:
      for (R_xlen_t i = 0; i < n; i++) {
        int32_t v = is_null_at(c, i) ? 0 : (int32_t)floor(time_value(c, i));
        memcpy(dst + 4 * i, &v, 4);
      }
      break;
    default: {   /* POSIXct, difftime: microseconds */
      double scale = (c->kind == CK_DIFFTIME ? c->scale : 1) * 1e6;
      for (R_xlen_t i = 0; i < n; i++) {
        int64_t v = is_null_at(c, i) ? 0 : llround(c->reals[i] * scale);
        memcpy(dst + 8 * i, &v, 8);
      }
    }
    }
  }
  if (pad8(len) > len) memset(dst + len, 0, pad8(len) - len);
  return dst + pad8(len);
}

static uint8_t *write_message(uint8_t *dst, const fb_builder *b) {
  uint32_t cont = 0xFFFFFFFFu;
  int32_t size = (int32_t)pad8(b->len);
  memcpy(dst, &cont, 4);
  memcpy(dst + 4, &size, 4);
  memcpy(dst + 8, b->buf, b->len);
  memset(dst + 8 + b->len, 0, (size_t)size - b->len);
  return dst + 8 + size;
}

static uint8_t *write_body(uint8_t *dst, const wcol *cols, int ncol, const out_t *to) {
  for (int i = 0; i < ncol; i++)
    for (int k = 0; k < nbuffers(&cols[i]); k++) dst = write_buffer(dst, &cols[i], buffer_kind(&cols[i], k), to);
  return dst;
}

void rb_arrow_write(const rb_arrow_plan *p, uint8_t *dst) { rb_arrow_write_file(p, dst, -1, 0); }

void rb_arrow_write_file(const rb_arrow_plan *p, uint8_t *dst, int fd, uint64_t file_off) {
  const out_t to = {dst, fd, file_off};
  dst = write_message(dst, &p->schema);
  for (int i = 0, d = 0; i < p->ncol; i++) {
    if (p->cols[i].kind != CK_FACTOR) continue;
    dst = write_message(dst, &p->dicts[d++]);
    dst = write_body(dst, p->cols[i].levels, 1, &to);
  }
  dst = write_message(dst, &p->batch);
  dst = write_body(dst, p->cols, p->ncol, &to);
  static const uint8_t eos[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0};
  memcpy(dst, eos, 8);
}

/* .Call entry for tests and tools: an R object -> an Arrow IPC stream (raw). */
static SEXP alloc_raw(void *p) { return Rf_allocVector(RAWSXP, (R_xlen_t)rb_arrow_plan_size(p)); }
static void free_plan_on_jump(void *p, Rboolean jump) { if (jump) rb_arrow_plan_free(p); }

SEXP C_arrow_encode(SEXP x) {
  SEXP form = PROTECT(rb_arrow_form(x));
  if (form == R_NilValue) Rf_error("rbridge: this R object has no Arrow representation");
  rb_arrow_plan *p = rb_arrow_plan_new(VECTOR_ELT(form, 0), VECTOR_ELT(form, 1));
  UNPROTECT(1);
  SEXP out = R_UnwindProtect(alloc_raw, p, free_plan_on_jump, p, NULL);
  rb_arrow_write(p, RAW(out));
  rb_arrow_plan_free(p);
  return out;
}
