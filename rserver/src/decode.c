/* msgpack -> R objects, on R's main thread. The conversion rules are in
 * protocol/SPEC.md ("Values"). Input is treated as hostile even though the
 * I/O thread validated it: this decoder is also used directly by tests. */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/mman.h>
#include <zmq.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include <R_ext/Parse.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rserver's vector encoding assumes a little-endian host"
#endif

#define EXACT_INT ((int64_t)1 << 53)   /* doubles hold integers exactly up to here */

static SEXP make_string(const uint8_t *p, uint32_t n) {
  if (n > INT32_MAX) Rf_error("rbridge: string longer than R's limit of 2^31-1 bytes");
  if (memchr(p, 0, n)) Rf_error("rbridge: strings with embedded NUL cannot be represented in R");
  if (!mp_utf8_valid(p, n)) Rf_error("rbridge: string is not valid UTF-8");
  return Rf_mkCharLenCE((const char *)p, (int)n, CE_UTF8);
}

static SEXP decode_int(int64_t v) {
  if (v > INT32_MIN && v <= INT32_MAX) return Rf_ScalarInteger((int)v);
  if (v >= -EXACT_INT && v <= EXACT_INT) return Rf_ScalarReal((double)v);
  Rf_error("rbridge: integer %lld is beyond 2^53 and cannot be represented exactly in R",
           (long long)v);
  return R_NilValue;
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ext 2: kind byte, u32 LE length, then little-endian data (see SPEC.md). */
static SEXP decode_vector(const uint8_t *p, uint32_t len) {
  if (len < 5) Rf_error("rbridge: vector payload is too short");
  char kind = (char)p[0];
  uint64_t n = le32(p + 1);
  const uint8_t *data = p + 5;
  uint64_t avail = len - 5;
  SEXP x;
  switch (kind) {
  case 'l': case 'i':
    if (avail != n * 4) Rf_error("rbridge: vector payload length does not match its count");
    x = PROTECT(Rf_allocVector(kind == 'l' ? LGLSXP : INTSXP, (R_xlen_t)n));
    memcpy(INTEGER(x), data, (size_t)n * 4);
    if (kind == 'l') {
      int *v = LOGICAL(x);
      for (uint64_t i = 0; i < n; i++)
        if (v[i] != NA_LOGICAL && v[i] != 0) v[i] = 1;
    }
    break;
  case 'd':
    if (avail != n * 8) Rf_error("rbridge: vector payload length does not match its count");
    x = PROTECT(Rf_allocVector(REALSXP, (R_xlen_t)n));
    memcpy(REAL(x), data, (size_t)n * 8);
    break;
  case 's': {
    if (n > avail) Rf_error("rbridge: vector payload length does not match its count");
    mp_reader r;
    mp_item it;
    mp_init(&r, data, (size_t)avail);
    x = PROTECT(Rf_allocVector(STRSXP, (R_xlen_t)n));
    for (uint64_t i = 0; i < n; i++) {
      if (mp_next(&r, &it)) Rf_error("rbridge: bad string vector: %s", r.err);
      if (it.kind == MP_NIL) SET_STRING_ELT(x, (R_xlen_t)i, NA_STRING);
      else if (it.kind == MP_STR) SET_STRING_ELT(x, (R_xlen_t)i, make_string(it.ptr, it.len));
      else Rf_error("rbridge: string vectors hold only strings and nil");
    }
    if (r.pos != r.len) Rf_error("rbridge: vector payload length does not match its count");
    break;
  }
  default:
    Rf_error("rbridge: unknown vector kind 0x%02x", (unsigned)p[0]);
  }
  UNPROTECT(1);
  return x;
}

/* Clients send exactly the 8-byte id; the worker's own form (id, then the
 * class) is accepted only when not resolving, for tests of worker messages. */
/* A reference kept as raw(8) of the given class, for tests of the codec. */
static SEXP decode_ref(const uint8_t *p, uint32_t len, const char *cls) {
  if (len < 8) Rf_error("rbridge: a reference must be at least 8 bytes");
  SEXP ref = PROTECT(Rf_allocVector(RAWSXP, 8));
  memcpy(RAW(ref), p, 8);
  Rf_setAttrib(ref, R_ClassSymbol, Rf_mkString(cls));
  UNPROTECT(1);
  return ref;
}

static SEXP decode_handle(const uint8_t *p, uint32_t len, int lookup, const rb_request *rq) {
  if (len != 8 && (lookup || len < 8)) Rf_error("rbridge: a handle reference must be exactly 8 bytes");
  if (!lookup) return decode_ref(p, len, "rbridge_handle_ref");
  uint64_t id = 0;
  for (int i = 0; i < 8; i++) id = (id << 8) | p[i];
  return rb_handle_get(id, rq);
}

typedef struct {
  int lookup;
  const rb_request *rq;   /* for the client's arenas; NULL in codec tests */
  zmq_msg_t *frames;      /* the message's payload frames */
  int nframes;
  SEXP backings;          /* per frame, made on its first view */
  rb_view_spans *viewed;  /* memory viewed so far by this message's payloads */
  int regions;            /* arena references decoded so far */
} decode_ctx;

/* Whether the client vouches that no float64 of this message's payloads has
 * R's NA bit pattern, so that the reader need not look (SPEC §8a). */
static int doubles_checked(const decode_ctx *ctx) { return ctx->rq && ctx->rq->doubles_checked; }

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* The name at the end of a reference (bounds checked by the caller). */
static void ref_name(const uint8_t *p, uint32_t len, uint32_t at, char name[RB_SHM_NAME_MAX]) {
  memcpy(name, p + at, len - at);
  name[len - at] = 0;
}

/* ---- frames: 'f' + u32 frame, 'F' + u32 first frame + u32 count ---- */

typedef struct {
  decode_ctx *ctx;
  int first;
} frames_source;

static SEXP frame_backing(void *p, int seg) {
  frames_source *src = p;
  decode_ctx *ctx = src->ctx;
  int f = src->first + seg;
  if (VECTOR_ELT(ctx->backings, f) == R_NilValue) SET_VECTOR_ELT(ctx->backings, f, rb_backing_frame(&ctx->frames[f]));
  return VECTOR_ELT(ctx->backings, f);
}

/* ---- a stream in one span of memory, whose backing is made on its first view ---- */

typedef struct span_source {
  ar_span seg;
  SEXP backing;   /* preserved until decoding ends; views keep their own reference */
  rb_view_spans *viewed;
  SEXP (*make_backing)(struct span_source *);
  int doubles_checked;
} span_source;

static SEXP span_backing(void *p, int seg) {
  (void)seg;
  span_source *s = p;
  if (s->backing == R_NilValue) R_PreserveObject(s->backing = s->make_backing(s));
  return s->backing;
}

static SEXP decode_span(void *p) {
  span_source *s = p;
  rb_arrow_input in = {&s->seg, 1, span_backing, s, s->viewed, s->doubles_checked};
  return rb_arrow_to_r_input(&in);
}

/* A stream from a client that sends chunks (SPEC "Arrow payloads") is
 * gathered into one buffer and read in place as one frame would be: one copy
 * of the stream, and R vectors view it (a column read across frames would be
 * copied twice, into a part and into R). Other clients send each large
 * buffer in a frame of its own, read in place without a copy. */
typedef struct {
  span_source span;   /* first: the decoder's callbacks get this struct */
  zmq_msg_t whole;
} gathered;

static SEXP gathered_backing(span_source *s) { return rb_backing_frame(&((gathered *)s)->whole); }

static void gathered_done(void *p, Rboolean jump) {
  (void)jump;
  gathered *g = p;
  zmq_msg_close(&g->whole);
  if (g->span.backing != R_NilValue) R_ReleaseObject(g->span.backing);
}

static SEXP decode_gathered(decode_ctx *ctx, uint32_t first, uint32_t count) {
  size_t total = 0;
  for (uint32_t i = 0; i < count; i++) total += zmq_msg_size(&ctx->frames[first - 1 + i]);
  gathered g = {.span = {.backing = R_NilValue, .viewed = ctx->viewed, .make_backing = gathered_backing,
                         .doubles_checked = doubles_checked(ctx)}};
  size_t cap;
  char *at = rb_sendbuf_get(total, &cap);   /* memory already mapped, when a payload's buffer is back */
  if (!at || zmq_msg_init_data(&g.whole, at, total, rb_sendbuf_put, (void *)(uintptr_t)cap)) {
    free(at);
    Rf_error("rbridge: out of memory for a payload of %zu bytes", total);
  }
  g.span.seg = (ar_span){(const uint8_t *)at, total};
  for (uint32_t i = 0; i < count; i++) {
    zmq_msg_t *m = &ctx->frames[first - 1 + i];
    if (zmq_msg_size(m)) memcpy(at, zmq_msg_data(m), zmq_msg_size(m));
    at += zmq_msg_size(m);
  }
  return R_UnwindProtect(decode_span, &g, gathered_done, &g, NULL);
}

static SEXP decode_frames(decode_ctx *ctx, uint32_t first, uint32_t count) {
  if (first < 1 || count < 1 || count > (uint32_t)ctx->nframes || first > (uint32_t)ctx->nframes - count + 1) {
    if (count == 1)
      Rf_error("rbridge: a payload refers to frame %u, but the message has %d payload frame(s)", first, ctx->nframes);
    Rf_error("rbridge: a payload refers to frames %u to %u, but the message has %d payload frame(s)", first,
             first + count - 1, ctx->nframes);
  }
  if (count > 1 && ctx->rq && ctx->rq->chunks) return decode_gathered(ctx, first, count);
  ar_span *segs = (ar_span *)R_alloc(count, sizeof *segs);
  for (uint32_t i = 0; i < count; i++) {
    zmq_msg_t *m = &ctx->frames[first - 1 + i];
    segs[i] = (ar_span){zmq_msg_data(m), zmq_msg_size(m)};
  }
  frames_source src = {ctx, (int)first - 1};
  rb_arrow_input in = {segs, (int)count, frame_backing, &src, ctx->viewed, doubles_checked(ctx)};
  return rb_arrow_to_r_input(&in);
}

/* ---- a region of a client's arena: 'a' + u64 offset + u64 length + u32 slot + name ---- */

typedef struct {
  span_source span;   /* first; its backing, once made, releases the region */
  rb_arena *arena;
  uint32_t slot;
} region_source;

static SEXP region_backing(span_source *s) {
  region_source *r = (region_source *)s;
  return rb_backing_region(r->arena, r->slot, s->seg.n);
}

static void region_done(void *p, Rboolean jump) {
  (void)jump;
  region_source *r = p;
  if (r->span.backing == R_NilValue) rb_arena_release(r->arena, r->slot);   /* nothing views it */
  else R_ReleaseObject(r->span.backing);
}

static SEXP decode_region(decode_ctx *ctx, const uint8_t *p, uint32_t len) {
  ctx->regions++;
  char name[RB_SHM_NAME_MAX];
  ref_name(p, len, 21, name);
  if (!ctx->rq) Rf_error("rbridge: arena payloads need a client");
  const char *err = NULL;
  rb_arena *a = rb_arena_attach(name, ctx->rq->rid, ctx->rq->client_len, &err);
  if (!a) Rf_error("rbridge: shared-memory arena %s: %s", name, err);
  uint64_t off = le64(p + 1), n = le64(p + 9);
  region_source r = {{{NULL, (size_t)n}, R_NilValue, ctx->viewed, region_backing, doubles_checked(ctx)}, a, le32(p + 17)};
  r.span.seg.p = rb_arena_region(a, off, n, r.slot, &err);
  if (!r.span.seg.p) Rf_error("rbridge: shared-memory arena %s: %s", name, err);
  return R_UnwindProtect(decode_span, &r, region_done, &r, NULL);
}

/* ---- a one-off segment: 'm' + u64 length + name ---- */

typedef struct { const void *map; size_t len; } shm_view;

static SEXP decode_mapped(void *p) {
  shm_view *v = p;
  return rb_arrow_to_r(v->map, v->len);
}

static void unmap_after(void *p, Rboolean jump) {
  (void)jump;
  shm_view *v = p;
  if (v->map) munmap((void *)v->map, v->len);
  v->map = NULL;
}

static SEXP decode_segment(const uint8_t *p, uint32_t len) {
  uint64_t n = le64(p + 1);
  char name[RB_SHM_NAME_MAX];
  ref_name(p, len, 9, name);
  if (n > ((uint64_t)1 << 48)) Rf_error("rbridge: shared-memory payload length is implausible");
  const char *err = NULL;
  shm_view v = {rb_shm_map(name, (size_t)n, &err), (size_t)n};
  if (!v.map && n) Rf_error("rbridge: shared-memory payload %s: %s", name, err);
  return R_UnwindProtect(decode_mapped, &v, unmap_after, &v, NULL);
}

/* ext 3 (SPEC "Arrow payloads"). */
static SEXP decode_payload(const uint8_t *p, uint32_t len, decode_ctx *ctx) {
  if (!ctx->lookup) {   /* kept as its bytes, for tests of the codec */
    SEXP ref = PROTECT(Rf_allocVector(RAWSXP, len));
    if (len) memcpy(RAW(ref), p, len);
    Rf_setAttrib(ref, R_ClassSymbol, Rf_mkString("rbridge_payload_ref"));
    UNPROTECT(1);
    return ref;
  }
  if (len == 5 && p[0] == 'f') return decode_frames(ctx, le32(p + 1), 1);
  if (len == 9 && p[0] == 'F') return decode_frames(ctx, le32(p + 1), le32(p + 5));
  if (len > 9 && len - 9 < RB_SHM_NAME_MAX && p[0] == 'm') return decode_segment(p, len);
  if (len > 21 && len - 21 < RB_SHM_NAME_MAX && p[0] == 'a') return decode_region(ctx, p, len);
  Rf_error("rbridge: malformed payload reference");
  return R_NilValue;
}

/* ext 5 (SPEC "Ext types"): R code, 'e' + an expression's source, 's' + a
 * symbol's name, or 'f' + a formula's source (a `~` call). Calls build a call
 * with it spliced in; elsewhere it is the language object itself. */
static SEXP decode_code(const uint8_t *p, uint32_t len) {
  if (len < 2) Rf_error("rbridge: R code must have a kind and some text");
  char kind = (char)p[0];
  SEXP text = PROTECT(make_string(p + 1, len - 1));
  if (kind == 's') {
    UNPROTECT(1);
    return Rf_installTrChar(text);
  }
  if (kind != 'e' && kind != 'f') Rf_error("rbridge: unknown kind of R code 0x%02x", (unsigned)p[0]);
  ParseStatus status;
  SEXP exprs = PROTECT(R_ParseVector(PROTECT(Rf_ScalarString(text)), -1, &status, R_NilValue));
  if (status != PARSE_OK) Rf_error("rbridge: this R code does not parse: %s", CHAR(text));
  if (XLENGTH(exprs) != 1) Rf_error("rbridge: R code must be exactly one expression: %s", CHAR(text));
  SEXP e = VECTOR_ELT(exprs, 0);
  if (kind == 'f' && !(TYPEOF(e) == LANGSXP && CAR(e) == Rf_install("~")))
    Rf_error("rbridge: not a formula (a `~` expression): %s", CHAR(text));
  UNPROTECT(3);
  return e;
}

static SEXP decode_value(mp_reader *r, int depth, decode_ctx *ctx) {
  int lookup = ctx->lookup;
  mp_item it;
  if (mp_next(r, &it)) Rf_error("rbridge: malformed msgpack: %s", r->err);
  switch (it.kind) {
  case MP_NIL: return R_NilValue;
  case MP_BOOL: return Rf_ScalarLogical(it.v.b);
  case MP_INT: return decode_int(it.v.i);
  case MP_UINT:
    Rf_error("rbridge: integer %llu is beyond 2^53 and cannot be represented exactly in R",
             (unsigned long long)it.v.u);
  case MP_FLOAT: return Rf_ScalarReal(it.v.f);
  case MP_STR: return Rf_ScalarString(make_string(it.ptr, it.len));
  case MP_BIN: {
    SEXP x = Rf_allocVector(RAWSXP, (R_xlen_t)it.len);
    if (it.len) memcpy(RAW(x), it.ptr, it.len);
    return x;
  }
  case MP_ARRAY: case MP_MAP: {
    if (depth <= 0) Rf_error("rbridge: msgpack nesting is too deep");
    int is_map = it.kind == MP_MAP;
    SEXP x = PROTECT(Rf_allocVector(VECSXP, (R_xlen_t)it.len));
    SEXP names = is_map ? Rf_allocVector(STRSXP, (R_xlen_t)it.len) : R_NilValue;
    PROTECT(names);
    for (uint32_t i = 0; i < it.len; i++) {
      if (is_map) {
        mp_item key;
        if (mp_next(r, &key)) Rf_error("rbridge: malformed msgpack: %s", r->err);
        if (key.kind != MP_STR) Rf_error("rbridge: map keys must be strings");
        SET_STRING_ELT(names, i, make_string(key.ptr, key.len));
      }
      SET_VECTOR_ELT(x, i, decode_value(r, depth - 1, ctx));
    }
    if (is_map) Rf_setAttrib(x, R_NamesSymbol, names);
    UNPROTECT(2);
    return x;
  }
  case MP_EXT:
    if (it.ext_type == RB_EXT_HANDLE) return decode_handle(it.ptr, it.len, lookup, ctx->rq);
    if (it.ext_type == RB_EXT_VECTOR) return decode_vector(it.ptr, it.len);
    if (it.ext_type == RB_EXT_PAYLOAD) return decode_payload(it.ptr, it.len, ctx);
    if (it.ext_type == RB_EXT_CODE) return decode_code(it.ptr, it.len);
    if (it.ext_type == RB_EXT_CALLABLE) {
      if (lookup) return rb_make_callable(it.ptr, it.len, ctx->rq);
      return decode_ref(it.ptr, it.len, "rbridge_callable_ref");
    }
    Rf_error("rbridge: unknown msgpack ext type %d", (int)it.ext_type);
  }
  return R_NilValue;
}

static SEXP decode_all(const void *buf, size_t len, decode_ctx *ctx) {
  mp_reader r;
  mp_init(&r, buf, len);
  SEXP x = PROTECT(decode_value(&r, RB_MAX_DEPTH, ctx));
  if (r.pos != len) Rf_error("rbridge: trailing bytes after the msgpack value");
  UNPROTECT(1);
  return x;
}

SEXP rb_decode(const void *buf, size_t len, int lookup) {
  decode_ctx ctx = {lookup, NULL, NULL, 0, R_NilValue, NULL, 0};
  return decode_all(buf, len, &ctx);
}

/* When decoding fails part way, the arena regions referred to after that
 * point were never seen: hand them back, or the client could never reuse them.
 * (Those seen were released, or are held by views that R will collect.) */
static void release_unseen_regions(const decode_ctx *ctx) {
  mp_reader r;
  mp_item it;
  int seen = 0;
  mp_init(&r, ctx->rq->envelope, ctx->rq->envelope_len);
  while (r.pos < r.len && mp_next(&r, &it) == 0) {
    if (it.kind != MP_EXT || it.ext_type != RB_EXT_PAYLOAD || it.len <= 21 || it.len - 21 >= RB_SHM_NAME_MAX ||
        it.ptr[0] != 'a' || seen++ < ctx->regions)
      continue;
    char name[RB_SHM_NAME_MAX];
    ref_name(it.ptr, it.len, 21, name);
    const char *err;
    rb_arena *a = rb_arena_attach(name, ctx->rq->rid, ctx->rq->client_len, &err);
    if (a) rb_arena_release(a, le32(it.ptr + 17));
  }
}

static SEXP decode_request_value(void *p) {
  decode_ctx *ctx = p;
  return decode_all(ctx->rq->envelope, ctx->rq->envelope_len, ctx);
}

static void after_request_decode(void *p, Rboolean jump) {
  if (jump) release_unseen_regions(p);
}

SEXP rb_decode_request(rb_request *rq) {
  /* release reads its handle references itself: released, unknown and other
   * clients' handles are skipped there, not errors here */
  int lookup = strcmp(rq->op, "release") != 0;
  decode_ctx ctx = {lookup, rq, rq->frames, rq->nframes, R_NilValue, NULL, 0};
  ctx.backings = PROTECT(Rf_allocVector(VECSXP, rq->nframes));
  ctx.viewed = (rb_view_spans *)R_alloc(1, sizeof *ctx.viewed);
  ctx.viewed->n = 0;
  SEXP x = R_UnwindProtect(decode_request_value, &ctx, after_request_decode, &ctx, NULL);
  UNPROTECT(1);
  return x;
}

/* .Call entry for tests and tools: decode a raw vector. */
SEXP C_mp_decode(SEXP raw, SEXP lookup) {
  if (TYPEOF(raw) != RAWSXP) Rf_error("rbridge: expected a raw vector");
  return rb_decode(RAW(raw), (size_t)XLENGTH(raw), Rf_asLogical(lookup) == TRUE);
}
