/* R objects -> msgpack, on R's main thread. The rules are in protocol/SPEC.md
 * ("Values"): cheap, unambiguous values are converted; everything else is put
 * in the handle table and sent as a handle. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

void rb_encoder_init(rb_encoder *e) {
  memset(e, 0, sizeof *e);
  msgpack_sbuffer_init(&e->sb);
  msgpack_sbuffer_init(&e->scratch);
  msgpack_packer_init(&e->pk, &e->sb, msgpack_sbuffer_write);
}

void rb_encoder_free(rb_encoder *e) {
  for (int i = 0; i < e->npayloads; i++) {
    if (e->payloads[i].data) rb_sendbuf_put(e->payloads[i].data, (void *)(uintptr_t)e->payloads[i].cap);
    if (e->payloads[i].segment[0]) shm_unlink(e->payloads[i].segment);
    if (e->payloads[i].arena) rb_arena_release(e->payloads[i].arena, e->payloads[i].slot);   /* never sent */
  }
  free(e->payloads);
  e->payloads = NULL;
  e->npayloads = e->cap = 0;
  msgpack_sbuffer_destroy(&e->sb);
  msgpack_sbuffer_destroy(&e->scratch);
  msgpack_sbuffer_init(&e->sb);
  msgpack_sbuffer_init(&e->scratch);
}

static void pack_charsxp(msgpack_packer *pk, SEXP c) {
  if (c == NA_STRING) { msgpack_pack_nil(pk); return; }
  const char *s = Rf_translateCharUTF8(c);
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

/* A character vector as a msgpack array of str/nil. */
void rb_pack_strings(msgpack_packer *pk, SEXP x) {
  R_xlen_t n = Rf_isNull(x) ? 0 : XLENGTH(x);
  msgpack_pack_array(pk, (size_t)n);
  for (R_xlen_t i = 0; i < n; i++) pack_charsxp(pk, STRING_ELT(x, i));
}

static void pack_vector_header(msgpack_packer *pk, char kind, R_xlen_t n, size_t body) {
  uint8_t head[5] = {(uint8_t)kind, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
  msgpack_pack_ext(pk, 5 + body, RB_EXT_VECTOR);
  msgpack_pack_ext_body(pk, head, 5);
}

static void pack_vector(rb_encoder *e, SEXP x) {
  R_xlen_t n = XLENGTH(x);
  switch (TYPEOF(x)) {
  case LGLSXP: case INTSXP:
    pack_vector_header(&e->pk, TYPEOF(x) == LGLSXP ? 'l' : 'i', n, (size_t)n * 4);
    msgpack_pack_ext_body(&e->pk, INTEGER(x), (size_t)n * 4);
    break;
  case REALSXP:
    pack_vector_header(&e->pk, 'd', n, (size_t)n * 8);
    msgpack_pack_ext_body(&e->pk, REAL(x), (size_t)n * 8);
    break;
  default: {  /* STRSXP: the body is n msgpack str/nil values */
    msgpack_packer sp;
    msgpack_sbuffer_clear(&e->scratch);
    msgpack_packer_init(&sp, &e->scratch, msgpack_sbuffer_write);
    for (R_xlen_t i = 0; i < n; i++) pack_charsxp(&sp, STRING_ELT(x, i));
    pack_vector_header(&e->pk, 's', n, e->scratch.size);
    msgpack_pack_ext_body(&e->pk, e->scratch.data, e->scratch.size);
  }
  }
}

/* class(x), as R gives it (implicit classes included), quoted so that a
 * language object is not evaluated. */
static SEXP r_class(SEXP x) {
  SEXP call = PROTECT(Rf_lang2(Rf_install("class"), Rf_lang2(Rf_install("quote"), x)));
  SEXP cls = Rf_eval(call, R_BaseEnv);
  UNPROTECT(1);
  return cls;
}

/* ext 1 from the worker: u64 BE id, then the R class as a msgpack array. */
static void pack_handle(rb_encoder *e, SEXP x) {
  SEXP cls = PROTECT(r_class(x));
  uint64_t id = rb_handle_put(x, e->client);
  uint8_t idb[8];
  for (int i = 0; i < 8; i++) idb[i] = (uint8_t)(id >> (56 - 8 * i));
  msgpack_packer sp;
  msgpack_sbuffer_clear(&e->scratch);
  msgpack_packer_init(&sp, &e->scratch, msgpack_sbuffer_write);
  rb_pack_strings(&sp, cls);
  msgpack_pack_ext(&e->pk, 8 + e->scratch.size, RB_EXT_HANDLE);
  msgpack_pack_ext_body(&e->pk, idb, 8);
  msgpack_pack_ext_body(&e->pk, e->scratch.data, e->scratch.size);
  UNPROTECT(1);
}

/* Vectors at least this long travel as Arrow payloads rather than ext 2. */

/* ext 3 from the worker (SPEC "Arrow payloads"): a region of the client's
 * arena ('a' + u64 LE offset + u64 LE length + u32 LE slot + name), a one-off
 * segment when the arena has no room ('m' + u64 LE length + name), or frames
 * ('f' + u32 LE frame number; a large one in chunks, 'F' + first + count). */
static size_t put_le(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
  return (size_t)bytes;
}

static size_t put_name(uint8_t *p, const char *name) {
  size_t n = strlen(name);
  memcpy(p, name, n);
  return n;
}

static void pack_payload(rb_encoder *e, SEXP x, SEXP extra_meta) {
  if (e->npayloads == e->cap) {
    int cap = e->cap ? 2 * e->cap : 4;
    rb_payload *np = realloc(e->payloads, (size_t)cap * sizeof *np);
    if (!np) Rf_error("rbridge: out of memory");
    e->payloads = np;
    e->cap = cap;
  }
  const void *vmax = vmaxget();
  rb_arrow_plan *plan = rb_arrow_plan_new(x, extra_meta);
  size_t len = rb_arrow_plan_size(plan), ref_len = 1;
  rb_payload *pl = &e->payloads[e->npayloads];
  memset(pl, 0, sizeof *pl);
  uint8_t ref[1 + 8 + 8 + 4 + RB_SHM_NAME_MAX];
  int shm = e->client && e->client->shm && len >= RB_SHM_MIN;
  rb_arena_ref region;
  void *map;
  if (shm && rb_arena_alloc(e->client->rid, e->client->client_len, len, &region) == 0) {
    rb_arrow_write_file(plan, region.data, region.fd, region.off);
    pl->arena = region.arena;
    pl->slot = region.slot;
    ref[0] = 'a';
    ref_len += put_le(ref + ref_len, region.off, 8);
    ref_len += put_le(ref + ref_len, len, 8);
    ref_len += put_le(ref + ref_len, region.slot, 4);
    ref_len += put_name(ref + ref_len, region.name);
  } else if (shm && (map = rb_shm_create(len, len, pl->segment, NULL)) != NULL) {
    rb_arrow_write(plan, map);
    munmap(map, len);
    ref[0] = 'm';
    ref_len += put_le(ref + ref_len, len, 8);
    ref_len += put_name(ref + ref_len, pl->segment);
  } else {
    pl->data = rb_sendbuf_get(len, &pl->cap);
    if (!pl->data) { rb_arrow_plan_free(plan); Rf_error("rbridge: out of memory"); }
    pl->len = len;
    rb_arrow_write(plan, pl->data);
    uint32_t frame = 1;   /* frames are numbered among frame payloads only */
    for (int i = 0; i < e->npayloads; i++) frame += e->payloads[i].nframes;
    pl->nframes = e->client && e->client->chunks ? rb_chunk_count(len) : 1;
    if (frame + pl->nframes > RB_MAX_FRAMES) pl->nframes = 1;   /* what a client takes in one message */
    ref[0] = pl->nframes > 1 ? 'F' : 'f';
    ref_len += put_le(ref + ref_len, frame, 4);
    if (pl->nframes > 1) ref_len += put_le(ref + ref_len, pl->nframes, 4);
  }
  e->npayloads++;
  rb_arrow_plan_free(plan);
  vmaxset(vmax);
  msgpack_pack_ext(&e->pk, ref_len, RB_EXT_PAYLOAD);
  msgpack_pack_ext_body(&e->pk, ref, ref_len);
}

/* A value that must travel as Arrow (a client's to_arrow()). */
void rb_pack_payload(rb_encoder *e, SEXP x) {
  SEXP form = PROTECT(rb_arrow_form(x));
  if (form == R_NilValue) {
    SEXP cls = PROTECT(r_class(x));
    Rf_error("rbridge: an R object of class '%s' has no Arrow form (data.frames and their subclasses, "
             "atomic vectors, factors, dates, times, matrices, tables and time series have one, "
             "unless they hold lists or complex numbers)", CHAR(STRING_ELT(cls, 0)));
  }
  pack_payload(e, VECTOR_ELT(form, 0), VECTOR_ELT(form, 1));
  UNPROTECT(1);
}

static int only_names_attribute(SEXP x) {
  SEXP a = ATTRIB(x);
  return a != R_NilValue && TAG(a) == R_NamesSymbol && CDR(a) == R_NilValue;
}

/* Names usable as dict keys: none empty or NA, no duplicates. */
static int names_are_keys(SEXP names) {
  R_xlen_t n = XLENGTH(names);
  for (R_xlen_t i = 0; i < n; i++) {
    SEXP c = STRING_ELT(names, i);
    if (c == NA_STRING || CHAR(c)[0] == 0) return 0;
  }
  return Rf_any_duplicated(names, FALSE) == 0;
}

void rb_pack_value(rb_encoder *e, SEXP x, int depth, int as_handle) {
  msgpack_packer *pk = &e->pk;
  int type = TYPEOF(x);
  if (type == NILSXP && !as_handle) { msgpack_pack_nil(pk); return; }
  if (as_handle || depth <= 0) { pack_handle(e, x); return; }
  int arrow = rb_arrow_kind(x);
  if (arrow != RB_AK_NONE && (arrow != RB_AK_PLAIN || XLENGTH(x) >= RB_ARROW_MIN_LENGTH)) {
    pack_payload(e, x, R_NilValue);
    return;
  }
  if (arrow == RB_AK_NONE && ATTRIB(x) != R_NilValue) {   /* a subclass, matrix with dimnames, ts */
    SEXP form = PROTECT(rb_arrow_form(x));
    if (form != R_NilValue) {
      pack_payload(e, VECTOR_ELT(form, 0), VECTOR_ELT(form, 1));
      UNPROTECT(1);
      return;
    }
    UNPROTECT(1);
  }
  if (type == VECSXP) {
    int named = only_names_attribute(x);
    if (ATTRIB(x) != R_NilValue && !(named && names_are_keys(Rf_getAttrib(x, R_NamesSymbol)))) {
      pack_handle(e, x);
      return;
    }
    R_xlen_t n = XLENGTH(x);
    SEXP names = named ? Rf_getAttrib(x, R_NamesSymbol) : R_NilValue;
    if (named) msgpack_pack_map(pk, (size_t)n); else msgpack_pack_array(pk, (size_t)n);
    for (R_xlen_t i = 0; i < n; i++) {
      if (named) pack_charsxp(pk, STRING_ELT(names, i));
      rb_pack_value(e, VECTOR_ELT(x, i), depth - 1, 0);
    }
    return;
  }
  if (ATTRIB(x) != R_NilValue) { pack_handle(e, x); return; }
  if (type == RAWSXP) {
    msgpack_pack_bin(pk, (size_t)XLENGTH(x));
    msgpack_pack_bin_body(pk, RAW(x), (size_t)XLENGTH(x));
    return;
  }
  if (type != LGLSXP && type != INTSXP && type != REALSXP && type != STRSXP) {
    pack_handle(e, x);
    return;
  }
  if (XLENGTH(x) != 1) { pack_vector(e, x); return; }
  switch (type) {
  case LGLSXP:
    if (LOGICAL(x)[0] == NA_LOGICAL) msgpack_pack_nil(pk);
    else if (LOGICAL(x)[0]) msgpack_pack_true(pk); else msgpack_pack_false(pk);
    break;
  case INTSXP:
    if (INTEGER(x)[0] == NA_INTEGER) msgpack_pack_nil(pk); else msgpack_pack_int(pk, INTEGER(x)[0]);
    break;
  case REALSXP:
    if (R_IsNA(REAL(x)[0])) msgpack_pack_nil(pk); else msgpack_pack_double(pk, REAL(x)[0]);
    break;
  default:
    pack_charsxp(pk, STRING_ELT(x, 0));
  }
}

typedef struct {
  rb_encoder *e;
  void (*fill)(rb_encoder *, void *);
  void *data;
} protected_call;

static SEXP run_fill(void *p) {
  protected_call *c = p;
  c->fill(c->e, c->data);
  return R_NilValue;
}

static void free_on_jump(void *p, Rboolean jump) {
  protected_call *c = p;
  if (jump) rb_encoder_free(c->e);
}

void rb_encode_protected(rb_encoder *e, void (*fill)(rb_encoder *, void *), void *data) {
  protected_call c = {e, fill, data};
  R_UnwindProtect(run_fill, &c, free_on_jump, &c, NULL);
}

/* .Call entry for tests and tools: encode an R value to a raw vector. */
typedef struct { SEXP x; SEXP out; } encode_to_raw;

static void fill_raw(rb_encoder *e, void *p) {
  encode_to_raw *a = p;
  rb_pack_value(e, a->x, RB_MAX_DEPTH, 0);
  a->out = Rf_allocVector(RAWSXP, (R_xlen_t)e->sb.size);
  memcpy(RAW(a->out), e->sb.data, e->sb.size);
}

SEXP C_mp_encode(SEXP x) {
  rb_encoder e;
  encode_to_raw a = {x, R_NilValue};
  rb_encoder_init(&e);
  rb_encode_protected(&e, fill_raw, &a);
  rb_encoder_free(&e);
  return a.out;
}
