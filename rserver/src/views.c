/* Zero-copy R vectors over received payload memory. A large float64 or int32
 * column without nulls becomes an ALTREP vector whose data is the payload's
 * own buffer (a received frame or a region of the client's shared-memory
 * arena), so receiving it costs no allocation and no copy. The memory is held
 * by a "backing" external pointer that every view of it references; R's
 * garbage collector releases it once the last view is gone. R does not know
 * how big that memory is, so the worker runs the collector itself after
 * enough new views (rb_views_collect). Main thread only. */
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include <R_ext/Altrep.h>
#include "rserver.h"
#include "rserver_r.h"

/* A full collection costs ~30 ms on a fresh R, so while busy it runs only
 * after this many new view bytes (or twice what survived the last one); when
 * idle, after a few. */
#define GC_BUSY_BYTES (256.0 * 1024 * 1024)
#define GC_IDLE_BYTES (1.0 * 1024 * 1024)

typedef struct {
  int is_region;
  zmq_msg_t frame;      /* a reference to a received frame */
  rb_arena *arena;      /* or a region of a mapped arena */
  uint32_t slot;
  size_t bytes;
} backing;

static double live_bytes = 0, created_bytes = 0, survived_bytes = 0;

static void release_backing(SEXP ptr) {
  backing *b = R_ExternalPtrAddr(ptr);
  if (!b) return;
  R_ClearExternalPtr(ptr);
  live_bytes -= (double)b->bytes;
  if (b->is_region) {
    rb_arena_release(b->arena, b->slot);
    rb_arena_unhold(b->arena);
  } else {
    zmq_msg_close(&b->frame);
  }
  free(b);
}

/* An external pointer that owns a new, zeroed backing; its finalizer is in
 * place before the caller hands it any memory, so no error can leak that. */
static SEXP new_backing(backing **out) {
  SEXP ptr = PROTECT(R_MakeExternalPtr(NULL, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(ptr, release_backing, FALSE);
  backing *b = calloc(1, sizeof *b);
  if (!b) Rf_error("rbridge: out of memory");
  R_SetExternalPtrAddr(ptr, b);
  *out = b;
  UNPROTECT(1);
  return ptr;
}

static void count(backing *b, size_t bytes) {
  b->bytes = bytes;
  live_bytes += (double)bytes;
  created_bytes += (double)bytes;
}

SEXP rb_backing_frame(void *zmq_frame) {
  backing *b;
  SEXP ptr = new_backing(&b);
  zmq_msg_init(&b->frame);
  zmq_msg_copy(&b->frame, zmq_frame);   /* shares the data: a reference count */
  count(b, zmq_msg_size(zmq_frame));
  return ptr;
}

SEXP rb_backing_region(rb_arena *a, uint32_t slot, size_t bytes) {
  backing *b;
  SEXP ptr = PROTECT(new_backing(&b));
  b->is_region = 1;
  b->arena = a;
  b->slot = slot;
  rb_arena_hold(a);
  count(b, bytes);
  UNPROTECT(1);
  return ptr;
}

void rb_views_collect(int idle) {
  double trigger = idle ? GC_IDLE_BYTES : 2 * survived_bytes > GC_BUSY_BYTES ? 2 * survived_bytes : GC_BUSY_BYTES;
  if (created_bytes < trigger) return;
  R_gc();
  survived_bytes = live_bytes;
  created_bytes = 0;
}

/* ---- the ALTREP classes ---- */

typedef struct { void *p; R_xlen_t n; } view_info;

static R_altrep_class_t real_view, int_view;

static view_info info_of(SEXP x) {
  view_info v;
  memcpy(&v, RAW(R_altrep_data2(x)), sizeof v);
  return v;
}

static R_xlen_t view_length(SEXP x) { return info_of(x).n; }
static void *view_dataptr(SEXP x, Rboolean writable) { (void)writable; return info_of(x).p; }
static const void *view_dataptr_or_null(SEXP x) { return info_of(x).p; }

static Rboolean view_inspect(SEXP x, int pre, int deep, int pvec, void (*subtree)(SEXP, int, int, int)) {
  (void)pre; (void)deep; (void)pvec; (void)subtree;
  Rprintf(" rbridge view of %lld elements in received payload memory\n", (long long)info_of(x).n);
  return TRUE;
}

SEXP rb_view(int type, SEXP backing_ptr, const void *p, R_xlen_t n) {
  view_info v = {(void *)p, n};
  SEXP info = PROTECT(Rf_allocVector(RAWSXP, sizeof v));
  memcpy(RAW(info), &v, sizeof v);
  SEXP x = R_new_altrep(type == REALSXP ? real_view : int_view, backing_ptr, info);
  UNPROTECT(1);
  return x;
}

static void set_methods(R_altrep_class_t c) {
  R_set_altrep_Length_method(c, view_length);
  R_set_altrep_Inspect_method(c, view_inspect);
  R_set_altvec_Dataptr_method(c, view_dataptr);
  R_set_altvec_Dataptr_or_null_method(c, view_dataptr_or_null);
}

void rb_views_init(DllInfo *dll) {
  real_view = R_make_altreal_class("rbridge_view_real", "rserver", dll);
  int_view = R_make_altinteger_class("rbridge_view_int", "rserver", dll);
  set_methods(real_view);
  set_methods(int_view);
}
