/* Arrow IPC stream -> R object, on R's main thread. The stream is parsed and
 * validated by arrow_read.c first; here vectors are allocated once for all
 * batches and filled in C. Type rules: protocol/SPEC.md ("Arrow payloads"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"
#include "arrow_format.h"

#define EXACT_INT 9007199254740992.0   /* 2^53 */
#define VIEW_MIN_BYTES ((size_t)1 << 20)   /* smaller columns are copied */

/* Where the stream's bytes live, for zero-copy views (views.c); the build
 * has one input at a time, so it is kept here rather than passed down. */
static const rb_arrow_input *input = NULL;

static int has_int_min(const uint8_t *p, int64_t n) {
  int found = 0;
  for (int64_t i = 0; i < n; i++) {
    int32_t v;
    memcpy(&v, p + 4 * i, 4);
    found |= v == INT32_MIN;
  }
  return found;
}

/* A view of a null-free column's values in place, or NULL to copy them:
 * when the values are small, misaligned, copied out of several segments,
 * shared with another view, or need changing for R. */
static SEXP try_view(const ar_stream *s, const ar_array *a, SEXPTYPE type) {
  size_t width = type == REALSXP ? 8 : 4, bytes = (size_t)a->length * width;
  rb_view_spans *seen = input ? input->viewed : NULL;
  if (!seen || s->nbatches != 1 || a->null_count || bytes < VIEW_MIN_BYTES || (uintptr_t)a->values.p % width ||
      seen->n == RB_MAX_VIEWS)
    return NULL;
  int seg = -1;
  for (int i = 0; i < input->nseg && seg < 0; i++)
    if (a->values.p >= input->segs[i].p && bytes <= input->segs[i].n &&
        (size_t)(a->values.p - input->segs[i].p) <= input->segs[i].n - bytes) seg = i;
  if (seg < 0) return NULL;
  for (int i = 0; i < seen->n; i++)   /* R may write into a view: no two may share memory */
    if (a->values.p < seen->span[i].p + seen->span[i].n && seen->span[i].p < a->values.p + bytes) return NULL;
  /* a non-null double with R's NA bit pattern is NaN to the sender, and is changed to R's NaN */
  if (type == REALSXP ? !input->doubles_checked && ar_count_r_na_wide(a->values.p, a->length)
                      : has_int_min(a->values.p, a->length)) return NULL;
  SEXP backing = input->backing(input->ctx, seg);
  seen->span[seen->n++] = (ar_span){a->values.p, bytes};
  return rb_view(type, backing, a->values.p, (R_xlen_t)a->length);
}

static const double unit_per_second[] = {1.0, 1e3, 1e6, 1e9};

static SEXP utf8_char(const uint8_t *p, size_t n, const ar_field *f) {
  if (n > INT32_MAX) Rf_error("rbridge: column '%.*s': a string is longer than R allows", (int)f->name.n, f->name.p);
  if (memchr(p, 0, n)) Rf_error("rbridge: column '%.*s': strings with embedded NUL cannot be represented in R",
                                 (int)f->name.n, f->name.p);
  if (!mp_utf8_valid(p, n)) Rf_error("rbridge: column '%.*s': a string is not valid UTF-8", (int)f->name.n, f->name.p);
  return Rf_mkCharLenCE((const char *)p, (int)n, CE_UTF8);
}

/* Reads value i of a fixed-width integer array as int64 (uint64 beyond
 * INT64_MAX is flagged through *too_big). */
static int64_t int_at(const ar_array *a, int bits, int is_signed, int64_t i, int *too_big) {
  const uint8_t *p = a->values.p + (size_t)i * (size_t)(bits / 8);
  switch (bits) {
  case 8: return is_signed ? (int64_t)(int8_t)p[0] : (int64_t)p[0];
  case 16: { uint16_t v; memcpy(&v, p, 2); return is_signed ? (int64_t)(int16_t)v : (int64_t)v; }
  case 32: { uint32_t v; memcpy(&v, p, 4); return is_signed ? (int64_t)(int32_t)v : (int64_t)v; }
  default: {
    uint64_t v;
    memcpy(&v, p, 8);
    if (!is_signed && v > (uint64_t)INT64_MAX) { *too_big = 1; return 0; }
    return (int64_t)v;
  }
  }
}

/* Runs the body once per batch with `a` bound to the column's array in it. */
#define FOR_CHUNKS(s, col, a)                                                        \
  for (int b_ = 0; b_ < (s)->nbatches; b_++)                                        \
    for (const ar_array *a = &(s)->batches[b_].columns[col]; a; a = NULL)

static SEXP int_column(const ar_stream *s, int col, R_xlen_t n) {
  const ar_field *f = &s->fields[col];
  int bits = f->type.bit_width, sg = f->type.is_signed, as_double = 0, too_big = 0;
  SEXP view;
  if (bits == 32 && sg && s->nbatches == 1 && (view = try_view(s, &s->batches[0].columns[col], INTSXP))) return view;
  /* R integers hold (-2^31, 2^31); anything wider becomes an exact double */
  FOR_CHUNKS(s, col, a) {
    if (bits < 32) continue;
    for (int64_t i = 0; i < a->length && !too_big; i++) {
      if (!ar_valid(a, i)) continue;
      int64_t v = int_at(a, bits, sg, i, &too_big);
      if (v <= INT32_MIN || v > INT32_MAX) {
        as_double = 1;
        if ((double)v > EXACT_INT || (double)v < -EXACT_INT) too_big = 1;
      }
    }
  }
  if (too_big)
    Rf_error("rbridge: column '%.*s' holds integers beyond 2^53, which R cannot represent exactly",
             (int)f->name.n, f->name.p);
  SEXP x = PROTECT(Rf_allocVector(as_double ? REALSXP : INTSXP, n));
  R_xlen_t k = 0;
  FOR_CHUNKS(s, col, a) {
    if (!as_double && bits == 32 && sg) memcpy(INTEGER(x) + k, a->values.p, (size_t)a->length * 4);
    for (int64_t i = 0; i < a->length; i++, k++) {
      int valid = ar_valid(a, i);
      if (as_double) REAL(x)[k] = valid ? (double)int_at(a, bits, sg, i, &too_big) : NA_REAL;
      else if (!valid) INTEGER(x)[k] = NA_INTEGER;
      else if (!(bits == 32 && sg)) INTEGER(x)[k] = (int)int_at(a, bits, sg, i, &too_big);
    }
  }
  UNPROTECT(1);
  return x;
}

/* Doubles: float64/float32, and times as numbers of `scale` units. */
static SEXP real_column(const ar_stream *s, int col, R_xlen_t n, double scale) {
  const ar_type *t = &s->fields[col].type;
  int plain = t->type == AT_FLOAT && t->bit_width == 64;
  SEXP x;
  if (plain && s->nbatches == 1 && (x = try_view(s, &s->batches[0].columns[col], REALSXP))) return x;
  x = PROTECT(Rf_allocVector(REALSXP, n));
  double *out = REAL(x);
  R_xlen_t k = 0;
  FOR_CHUNKS(s, col, a) {
    if (plain) {
      memcpy(out + k, a->values.p, (size_t)a->length * 8);
      /* non-null NA bit patterns are NaN to the sender */
      if (!(input && input->doubles_checked) && ar_count_r_na_wide(a->values.p, a->length))
        for (int64_t i = 0; i < a->length; i++) {
          uint64_t b;
          memcpy(&b, &out[k + i], 8);
          if (ar_is_r_na_bits(b)) out[k + i] = R_NaN;
        }
      if (a->null_count)
        for (int64_t i = 0; i < a->length; i++) if (!ar_valid(a, i)) out[k + i] = NA_REAL;
      k += a->length;
      continue;
    }
    int w = ar_fixed_width(t);
    for (int64_t i = 0; i < a->length; i++, k++) {
      if (!ar_valid(a, i)) { out[k] = NA_REAL; continue; }
      const uint8_t *p = a->values.p + (size_t)i * (size_t)w;
      if (t->type == AT_FLOAT) { float v; memcpy(&v, p, 4); out[k] = (double)v; }
      else if (w == 4) { int32_t v; memcpy(&v, p, 4); out[k] = (double)v / scale; }
      else { int64_t v; memcpy(&v, p, 8); out[k] = (double)v / scale; }
    }
  }
  UNPROTECT(1);
  return x;
}

static SEXP bool_column(const ar_stream *s, int col, R_xlen_t n) {
  SEXP x = PROTECT(Rf_allocVector(LGLSXP, n));
  int *out = LOGICAL(x);
  R_xlen_t k = 0;
  FOR_CHUNKS(s, col, a) {
    for (int64_t i = 0; i < a->length; i++, k++)
      out[k] = ar_valid(a, i) ? (a->values.p[i >> 3] >> (i & 7)) & 1 : NA_LOGICAL;
  }
  UNPROTECT(1);
  return x;
}

static SEXP null_column(R_xlen_t n) {
  SEXP x = Rf_allocVector(LGLSXP, n);
  for (R_xlen_t i = 0; i < n; i++) LOGICAL(x)[i] = NA_LOGICAL;
  return x;
}

/* Strings of one var-width array into x[k...]. */
static void fill_strings(SEXP x, R_xlen_t k, const ar_array *a, const ar_type *t, const ar_field *f) {
  int large = ar_is_large(t);
  for (int64_t i = 0; i < a->length; i++) {
    if (!ar_valid(a, i)) { SET_STRING_ELT(x, k + i, NA_STRING); continue; }
    uint64_t lo = ar_offset_at(a, large, i), hi = ar_offset_at(a, large, i + 1);
    SET_STRING_ELT(x, k + i, utf8_char(a->values.p + lo, (size_t)(hi - lo), f));
  }
}

static SEXP string_column(const ar_stream *s, int col, R_xlen_t n) {
  SEXP x = PROTECT(Rf_allocVector(STRSXP, n));
  R_xlen_t k = 0;
  FOR_CHUNKS(s, col, a) {
    fill_strings(x, k, a, &s->fields[col].type, &s->fields[col]);
    k += a->length;
  }
  UNPROTECT(1);
  return x;
}

static SEXP binary_column(const ar_stream *s, int col, R_xlen_t n) {
  SEXP x = PROTECT(Rf_allocVector(VECSXP, n));
  int large = ar_is_large(&s->fields[col].type);
  R_xlen_t k = 0;
  FOR_CHUNKS(s, col, a) {
    for (int64_t i = 0; i < a->length; i++, k++) {
      if (!ar_valid(a, i)) continue;   /* NULL */
      uint64_t lo = ar_offset_at(a, large, i), hi = ar_offset_at(a, large, i + 1);
      SEXP r = Rf_allocVector(RAWSXP, (R_xlen_t)(hi - lo));
      SET_VECTOR_ELT(x, k, r);
      if (hi > lo) memcpy(RAW(r), a->values.p + lo, (size_t)(hi - lo));
    }
  }
  UNPROTECT(1);
  return x;
}

static SEXP factor_column(const ar_stream *s, int col, R_xlen_t n) {
  const ar_field *f = &s->fields[col];
  const ar_dict *d = &s->dicts[f->dict_index];
  int64_t nlev = 0;
  for (int c = 0; c < d->nchunks; c++) nlev += d->chunks[c].length;
  if (nlev > INT32_MAX) Rf_error("rbridge: column '%.*s': too many factor levels", (int)f->name.n, f->name.p);
  SEXP levels = PROTECT(Rf_allocVector(STRSXP, (R_xlen_t)nlev));
  R_xlen_t k = 0;
  for (int c = 0; c < d->nchunks; c++) {
    fill_strings(levels, k, &d->chunks[c], &d->type, f);
    k += d->chunks[c].length;
  }
  if (Rf_any_duplicated(levels, FALSE))
    Rf_error("rbridge: column '%.*s': dictionary values are not unique, so they cannot be factor levels",
             (int)f->name.n, f->name.p);
  SEXP x = PROTECT(Rf_allocVector(INTSXP, n));
  int *out = INTEGER(x), too_big = 0;
  k = 0;
  FOR_CHUNKS(s, col, a) {
    for (int64_t i = 0; i < a->length; i++, k++) {
      if (!ar_valid(a, i)) { out[k] = NA_INTEGER; continue; }
      int64_t v = int_at(a, f->index_bits, f->index_signed, i, &too_big);
      if (too_big || v < 0 || v >= nlev)
        Rf_error("rbridge: column '%.*s': dictionary index out of range", (int)f->name.n, f->name.p);
      out[k] = (int)v + 1;
    }
  }
  Rf_setAttrib(x, R_LevelsSymbol, levels);
  SEXP cls = PROTECT(Rf_allocVector(STRSXP, f->ordered ? 2 : 1));
  if (f->ordered) SET_STRING_ELT(cls, 0, Rf_mkChar("ordered"));
  SET_STRING_ELT(cls, f->ordered ? 1 : 0, Rf_mkChar("factor"));
  Rf_classgets(x, cls);
  UNPROTECT(3);
  return x;
}

static SEXP mk_span_string(ar_span v) {
  return Rf_ScalarString(Rf_mkCharLenCE((const char *)v.p, (int)(v.n > INT32_MAX ? 0 : v.n), CE_UTF8));
}

static void set_class2(SEXP x, const char *a, const char *b) {
  SEXP cls = PROTECT(Rf_allocVector(STRSXP, b ? 2 : 1));
  SET_STRING_ELT(cls, 0, Rf_mkChar(a));
  if (b) SET_STRING_ELT(cls, 1, Rf_mkChar(b));
  Rf_classgets(x, cls);
  UNPROTECT(1);
}

static int span_is(ar_span v, const char *s) { return v.n == strlen(s) && memcmp(v.p, s, v.n) == 0; }

static double difftime_seconds(ar_span units) {
  if (span_is(units, "mins")) return 60;
  if (span_is(units, "hours")) return 3600;
  if (span_is(units, "days")) return 86400;
  if (span_is(units, "weeks")) return 604800;
  return 1;
}

static SEXP column(const ar_stream *s, int col) {
  const ar_field *f = &s->fields[col];
  R_xlen_t n = (R_xlen_t)s->rows;
  if (f->dict) return factor_column(s, col, n);
  const ar_type *t = &f->type;
  SEXP x;
  ar_span meta;
  switch (t->type) {
  case AT_NULL: return null_column(n);
  case AT_BOOL: return bool_column(s, col, n);
  case AT_INT: return int_column(s, col, n);
  case AT_FLOAT: return real_column(s, col, n, 1);
  case AT_UTF8: case AT_LARGE_UTF8: return string_column(s, col, n);
  case AT_BINARY: case AT_LARGE_BINARY: return binary_column(s, col, n);
  case AT_DATE:
    x = PROTECT(real_column(s, col, n, t->unit == 0 ? 1 : 86400000.0));
    set_class2(x, "Date", NULL);
    break;
  case AT_TIMESTAMP:
    x = PROTECT(real_column(s, col, n, unit_per_second[t->unit]));
    set_class2(x, "POSIXct", "POSIXt");
    /* A timestamp without a time zone is wall-clock time (pandas' naive
     * datetimes): UTC, so it reads the same whatever the worker's TZ. */
    if (t->has_tz) Rf_setAttrib(x, Rf_install("tzone"), mk_span_string(t->tz));
    else if (ar_field_meta(f, "rbridge.tzone", &meta)) Rf_setAttrib(x, Rf_install("tzone"), mk_span_string(meta));
    else Rf_setAttrib(x, Rf_install("tzone"), Rf_mkString("UTC"));
    break;
  case AT_DURATION: {
    ar_span units = {(const uint8_t *)"secs", 4};
    ar_field_meta(f, "rbridge.units", &units);
    double per = difftime_seconds(units);
    if (per == 1) units = (ar_span){(const uint8_t *)"secs", 4};
    x = PROTECT(real_column(s, col, n, unit_per_second[t->unit] * per));
    set_class2(x, "difftime", NULL);
    Rf_setAttrib(x, Rf_install("units"), mk_span_string(units));
    break;
  }
  default:
    Rf_error("rbridge: Arrow type %d is not supported", t->type);
  }
  UNPROTECT(1);
  return x;
}

/* An integer written in metadata (optional minus sign, at most 10 digits). */
static int64_t parse_int(ar_span v, const char *key) {
  size_t i = v.n && v.p[0] == '-';
  int64_t val = 0;
  if (i == v.n || v.n - i > 10) Rf_error("rbridge: malformed %s metadata", key);
  for (; i < v.n; i++) {
    if (v.p[i] < '0' || v.p[i] > '9') Rf_error("rbridge: malformed %s metadata", key);
    val = val * 10 + (v.p[i] - '0');
  }
  return v.p[0] == '-' ? -val : val;
}

/* "2,3,4" -> c(2L, 3L, 4L), whose product must be n. */
static SEXP parse_dim(ar_span v, R_xlen_t n) {
  int count = 1;
  for (size_t i = 0; i < v.n; i++) if (v.p[i] == ',') count++;
  if (v.n == 0 || count > 64) Rf_error("rbridge: malformed rbridge.dim metadata");
  SEXP dim = PROTECT(Rf_allocVector(INTSXP, count));
  double prod = 1;
  size_t i = 0;
  for (int d = 0; d < count; d++) {
    int64_t val = 0;
    size_t start = i;
    while (i < v.n && v.p[i] >= '0' && v.p[i] <= '9' && val <= INT32_MAX) val = val * 10 + (v.p[i++] - '0');
    if (i == start || val > INT32_MAX || (i < v.n && v.p[i] != ',')) Rf_error("rbridge: malformed rbridge.dim metadata");
    i++;
    INTEGER(dim)[d] = (int)val;
    prod *= (double)val;
  }
  if (prod != (double)n) Rf_error("rbridge: rbridge.dim does not match the array's length");
  UNPROTECT(1);
  return dim;
}

static SEXP field_names(const ar_stream *s, int from, int to) {
  SEXP names = PROTECT(Rf_allocVector(STRSXP, to - from));
  for (int i = from; i < to; i++)
    SET_STRING_ELT(names, i - from, utf8_char(s->fields[i].name.p, s->fields[i].name.n, &s->fields[i]));
  UNPROTECT(1);
  return names;
}

/* Calls rserver:::fn(x, arg) for the forms R/arrow.R builds from the C ones. */
static SEXP call_rserver(const char *fn, SEXP x, SEXP arg) {
  SEXP f = PROTECT(Rf_findVarInFrame(R_FindNamespace(PROTECT(Rf_mkString("rserver"))), Rf_install(fn)));
  SEXP out = Rf_eval(PROTECT(Rf_lang3(f, x, arg)), R_BaseEnv);
  UNPROTECT(3);
  return out;
}

static SEXP build_object(const ar_stream *s, ar_span kind);

/* The values of these schema metadata keys, named without "rbridge." (NA when absent). */
static SEXP meta_strings(const ar_stream *s, const char *const *keys, int n) {
  SEXP out = PROTECT(Rf_allocVector(STRSXP, n)), names = PROTECT(Rf_allocVector(STRSXP, n));
  for (int i = 0; i < n; i++) {
    ar_span v;
    SET_STRING_ELT(out, i, ar_schema_meta(s, keys[i], &v) ? STRING_ELT(mk_span_string(v), 0) : NA_STRING);
    SET_STRING_ELT(names, i, Rf_mkChar(keys[i] + 8));
  }
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(2);
  return out;
}

static const char *const CLASS_KEYS[] = {"rbridge.r_class", "rbridge.r_attributes"};
static const char *const SERIES_KEYS[] = {"rbridge.index", "rbridge.colnames", "rbridge.r_class",
                                          "rbridge.index_class"};
#define NKEYS(keys) ((int)(sizeof keys / sizeof *keys))

/* The object a stream stands for (SPEC "Arrow payloads"): kind "matrix" is
 * read as a data.frame of its columns, and rbridge.tsp makes a time series. */
static SEXP build(const ar_stream *s) {
  ar_span kind = {(const uint8_t *)"data.frame", 10}, meta;
  ar_schema_meta(s, "rbridge.kind", &kind);
  int matrix = span_is(kind, "matrix");
  SEXP x = PROTECT(build_object(s, matrix ? (ar_span){(const uint8_t *)"data.frame", 10} : kind));
  if (matrix) {
    int has_colnames = !ar_schema_meta(s, "rbridge.colnames", &meta) || !span_is(meta, "0");
    x = call_rserver("matrix_from_frame", x, PROTECT(Rf_ScalarLogical(has_colnames)));
    UNPROTECT(2);
    PROTECT(x);
  }
  if (ar_schema_meta(s, "rbridge.tsp", &meta)) {
    x = call_rserver("as_ts", x, PROTECT(mk_span_string(meta)));
    UNPROTECT(2);
    PROTECT(x);
  }
  if (!matrix && span_is(kind, "data.frame") && ar_schema_meta(s, "rbridge.index", &meta)) {
    /* a zoo or xts series */
    x = call_rserver("as_zoo", x, PROTECT(meta_strings(s, SERIES_KEYS, NKEYS(SERIES_KEYS))));
    UNPROTECT(2);
    PROTECT(x);
  } else if (!matrix && span_is(kind, "data.frame") && ar_schema_meta(s, "rbridge.r_class", &meta)) {
    x = call_rserver("restore_form", x, PROTECT(meta_strings(s, CLASS_KEYS, NKEYS(CLASS_KEYS))));
    UNPROTECT(2);
    PROTECT(x);
  }
  UNPROTECT(1);
  return x;
}

static SEXP build_object(const ar_stream *s, ar_span kind) {
  ar_span meta;
  if (span_is(kind, "vector") || span_is(kind, "array")) {
    int has_names = ar_schema_meta(s, "rbridge.names", &meta);
    if (s->nfields != 1 + has_names) Rf_error("rbridge: a vector payload must have %d column(s)", 1 + has_names);
    SEXP x = PROTECT(column(s, 0));
    if (has_names) {
      if (s->fields[1].type.type != AT_UTF8 && s->fields[1].type.type != AT_LARGE_UTF8)
        Rf_error("rbridge: vector names must be strings");
      Rf_setAttrib(x, R_NamesSymbol, column(s, 1));
    }
    if (span_is(kind, "array")) {
      if (!ar_schema_meta(s, "rbridge.dim", &meta)) Rf_error("rbridge: an array payload needs rbridge.dim");
      Rf_setAttrib(x, R_DimSymbol, parse_dim(meta, XLENGTH(x)));
    }
    UNPROTECT(1);
    return x;
  }
  if (!span_is(kind, "data.frame")) Rf_error("rbridge: unknown rbridge.kind '%.*s'", (int)kind.n, kind.p);
  int ncol = s->nfields, has_rownames = ar_schema_meta(s, "rbridge.row_names", &meta);
  if (has_rownames) ncol--;
  if (ncol < 0) Rf_error("rbridge: row names without a column for them");
  if (s->rows > INT32_MAX) Rf_error("rbridge: a data.frame has at most 2^31-1 rows");
  SEXP df = PROTECT(Rf_allocVector(VECSXP, ncol));
  for (int i = 0; i < ncol; i++) SET_VECTOR_ELT(df, i, column(s, i));
  Rf_setAttrib(df, R_NamesSymbol, field_names(s, 0, ncol));
  SEXP rn;
  if (has_rownames) {
    rn = PROTECT(column(s, ncol));
    if (TYPEOF(rn) != STRSXP && TYPEOF(rn) != INTSXP) Rf_error("rbridge: row names must be strings or integers");
    if (Rf_any_duplicated(rn, FALSE)) Rf_error("rbridge: duplicate row names");
  } else if (ar_schema_meta(s, "rbridge.row_names_from", &meta) && s->rows > 0 && !span_is(meta, "1")) {
    int64_t from = parse_int(meta, "rbridge.row_names_from");   /* a pandas RangeIndex: from, from + 1, ... */
    if (from < -(int64_t)INT32_MAX || from + s->rows - 1 > INT32_MAX)
      Rf_error("rbridge: rbridge.row_names_from is out of range for this many rows");
    rn = PROTECT(Rf_allocVector(INTSXP, (R_xlen_t)s->rows));
    int *p = INTEGER(rn);
    for (int64_t i = 0; i < s->rows; i++) p[i] = (int)(from + i);
  } else {   /* automatic: 1..n */
    rn = PROTECT(Rf_allocVector(INTSXP, 2));
    INTEGER(rn)[0] = NA_INTEGER;
    INTEGER(rn)[1] = -(int)s->rows;
  }
  Rf_setAttrib(df, R_RowNamesSymbol, rn);
  set_class2(df, "data.frame", NULL);
  UNPROTECT(2);
  return df;
}

/* ---- entry point: parse, then build with the parse freed on any R error ---- */

typedef struct { ar_stream s; } build_ctx;

static SEXP run_build(void *p) { return build(&((build_ctx *)p)->s); }
static void free_on_jump(void *p, Rboolean jump) { if (jump) ar_free(&((build_ctx *)p)->s); }

SEXP rb_arrow_to_r_input(const rb_arrow_input *in) {
  build_ctx c;
  if (ar_read_segments(in->segs, in->nseg, &c.s)) {
    char msg[sizeof c.s.err];
    memcpy(msg, c.s.err, sizeof msg);
    ar_free(&c.s);
    Rf_error("rbridge: bad Arrow payload: %s", msg);
  }
  input = in;
  SEXP x = PROTECT(R_UnwindProtect(run_build, &c, free_on_jump, &c, NULL));
  input = NULL;
  ar_free(&c.s);
  UNPROTECT(1);
  return x;
}

SEXP rb_arrow_to_r(const uint8_t *buf, size_t len) {
  ar_span one = {buf, len};
  rb_arrow_input in = {&one, 1, NULL, NULL, NULL, 0};
  return rb_arrow_to_r_input(&in);
}

/* .Call entry for tests and tools: an Arrow IPC stream in a raw vector -> R. */
SEXP C_arrow_decode(SEXP raw) {
  if (TYPEOF(raw) != RAWSXP) Rf_error("rbridge: expected a raw vector");
  return rb_arrow_to_r(RAW(raw), (size_t)XLENGTH(raw));
}
