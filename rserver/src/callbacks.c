/* Python callables as R functions (callbacks), on R's main thread.
 *
 * A callable arrives as ext 4 (its id in the client's table) and becomes an R
 * closure around an external pointer that remembers the id and the client
 * that owns it. Calling the closure sends a "callback" message to that client
 * while a request of that client is in progress; R/callbacks.R then serves
 * nested requests until the client's reply comes. When R garbage-collects the
 * closure, the id is queued and sent back to its client ("release_callables")
 * just before the next message to that client. See protocol/SPEC.md. */
#include <stdlib.h>
#include <string.h>
#define R_NO_REMAP
#define CSTACK_DEFNS
#include <Rinternals.h>
#include <Rinterface.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

#define MAX_NESTING 100             /* callbacks in progress at once */

typedef struct {
  uint64_t id;
  uint8_t rid[RB_MAX_ROUTING_ID];
  size_t rid_len;
} callable_ref;

static callable_ref *released = NULL;   /* collected, not yet reported */
static size_t n_released = 0, cap_released = 0;
static uint64_t next_callback_id = 1;

static void callable_finalizer(SEXP ptr) {
  callable_ref *c = R_ExternalPtrAddr(ptr);
  if (!c) return;
  if (n_released == cap_released) {
    size_t cap = cap_released ? 2 * cap_released : 64;
    callable_ref *bigger = realloc(released, cap * sizeof *bigger);
    if (bigger) { released = bigger; cap_released = cap; }
  }
  if (n_released < cap_released) released[n_released++] = *c;   /* else: lost, never fatal */
  free(c);
  R_ClearExternalPtr(ptr);
}

/* ext 4 -> an R function. Called by the decoder for a request in progress. */
SEXP rb_make_callable(const uint8_t *p, uint32_t len, const rb_request *rq) {
  if (len != 8) Rf_error("rbridge: a callable reference must be exactly 8 bytes");
  if (!rq) Rf_error("rbridge: callables can only arrive in a request");
  callable_ref *c = malloc(sizeof *c);
  if (!c) Rf_error("rbridge: out of memory");
  c->id = 0;
  for (int i = 0; i < 8; i++) c->id = (c->id << 8) | p[i];
  memcpy(c->rid, rq->rid, rq->rid_len);
  c->rid_len = rq->rid_len;
  SEXP ptr = PROTECT(R_MakeExternalPtr(c, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(ptr, callable_finalizer, TRUE);
  SEXP ns = PROTECT(R_FindNamespace(Rf_mkString("rserver")));
  SEXP call = PROTECT(Rf_lang2(Rf_install("make_callable"), ptr));
  SEXP fn = Rf_eval(call, ns);
  UNPROTECT(3);
  return fn;
}

/* Tells the request's client which of its callables R no longer holds. */
void rb_report_released_callables(const rb_request *rq) {
  size_t kept = 0, mine = 0;
  for (size_t i = 0; i < n_released; i++)
    if (rb_same_client(released[i].rid, released[i].rid_len, rq->rid, rq->rid_len)) mine++;
  if (!mine) return;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 4, 0, "release_callables");
  rb_pack_cstr(&pk, "callables");
  msgpack_pack_array(&pk, mine);
  for (size_t i = 0; i < n_released; i++) {
    if (rb_same_client(released[i].rid, released[i].rid_len, rq->rid, rq->rid_len))
      msgpack_pack_uint64(&pk, released[i].id);
    else
      released[kept++] = released[i];
  }
  n_released = kept;
  rb_send_to_client(rq, &sb);
}

/* Share of the C stack in use. Each level of nesting costs R a few hundred KB;
 * a new callback is refused while a quarter is still free, so that the error
 * and the unwinding through every level have room (R's own guard would fire
 * deep inside the worker's reply path instead). */
#define STACK_SHARE_LIMIT 0.75

static double stack_share(void) {
  char here;
  uintptr_t at = (uintptr_t)&here;
  if (R_CStackLimit == (uintptr_t)-1 || R_CStackLimit == 0) return 0;
  uintptr_t used = at < R_CStackStart ? R_CStackStart - at : at - R_CStackStart;
  return (double)used / (double)R_CStackLimit;
}

static int depth(const rb_request *rq) {
  int n = 0;
  for (; rq; rq = rq->outer) n++;
  return n;
}

typedef struct { const rb_request *rq; uint64_t callback_id; uint64_t fn; SEXP args; } callback_args;

static void fill_callback(rb_encoder *e, void *p) {
  callback_args *a = p;
  SEXP names = Rf_getAttrib(a->args, R_NamesSymbol);
  R_xlen_t n = XLENGTH(a->args), named = 0;
  for (R_xlen_t i = 0; i < n; i++)
    if (!Rf_isNull(names) && CHAR(STRING_ELT(names, i))[0]) named++;
  rb_pack_header(&e->pk, 7, a->callback_id, "callback");
  rb_pack_cstr(&e->pk, "parent");
  msgpack_pack_uint64(&e->pk, a->rq->id);
  rb_pack_cstr(&e->pk, "fn");
  msgpack_pack_uint64(&e->pk, a->fn);
  rb_pack_cstr(&e->pk, "args");              /* unnamed R arguments, in order */
  msgpack_pack_array(&e->pk, (size_t)(n - named));
  for (R_xlen_t i = 0; i < n; i++)
    if (Rf_isNull(names) || !CHAR(STRING_ELT(names, i))[0])
      rb_pack_value(e, VECTOR_ELT(a->args, i), RB_MAX_DEPTH, 0);
  rb_pack_cstr(&e->pk, "kwargs");            /* named ones, under their R names */
  msgpack_pack_map(&e->pk, (size_t)named);
  for (R_xlen_t i = 0; i < n; i++)
    if (!Rf_isNull(names) && CHAR(STRING_ELT(names, i))[0]) {
      rb_pack_cstr(&e->pk, Rf_translateCharUTF8(STRING_ELT(names, i)));
      rb_pack_value(e, VECTOR_ELT(a->args, i), RB_MAX_DEPTH, 0);
    }
}

/* Whether request `ctx` says that the client owning callable `ptr` is gone, so
 * that a wait for that client's reply must end. */
SEXP C_request_ends_callback(SEXP ctx, SEXP ptr) {
  rb_request *rq = rb_request_from(ctx);
  callable_ref *c = TYPEOF(ptr) == EXTPTRSXP ? R_ExternalPtrAddr(ptr) : NULL;
  int gone = c && strcmp(rq->op, "client_gone") == 0 && rb_same_client(rq->rid, rq->rid_len, c->rid, c->rid_len);
  return Rf_ScalarLogical(gone);
}

/* Whether `ctx` (a reply to a callback) came from the client that owns
 * callable `ptr`: a client answers only its own callbacks. */
SEXP C_reply_from_owner(SEXP ctx, SEXP ptr) {
  rb_request *rq = rb_request_from(ctx);
  callable_ref *c = TYPEOF(ptr) == EXTPTRSXP ? R_ExternalPtrAddr(ptr) : NULL;
  return Rf_ScalarLogical(c && rb_same_client(rq->rid, rq->rid_len, c->rid, c->rid_len));
}

/* Sends a callback for the request in progress; returns the callback's id as raw(8). */
SEXP C_callback_send(SEXP ptr, SEXP args) {
  callable_ref *c = TYPEOF(ptr) == EXTPTRSXP ? R_ExternalPtrAddr(ptr) : NULL;
  if (!c) Rf_error("rbridge: this Python function is no longer available");
  if (TYPEOF(args) != VECSXP) Rf_error("rbridge: callback arguments must be a list");
  rb_request *rq = rb_active_request();   /* the callback belongs to the request R is running */
  if (!rq) Rf_error("rbridge: a Python function can only be called while its client has a request running");
  if (!rb_same_client(rq->rid, rq->rid_len, c->rid, c->rid_len))
    Rf_error("rbridge: this Python function belongs to another client");
  if (depth(rq) > MAX_NESTING || stack_share() > STACK_SHARE_LIMIT)
    Rf_error("rbridge: calls between R and Python are nested too deeply "
             "(%d levels; at most %d, and within %.0f%% of R's C stack)",
             depth(rq), MAX_NESTING, 100 * STACK_SHARE_LIMIT);
  callback_args a = {rq, RB_WORKER_ID_BIT | next_callback_id++, c->id, args};
  rb_encoder e;
  rb_encoder_init(&e);
  e.client = rq;
  rb_encode_protected(&e, fill_callback, &a);
  rb_console_flush();                   /* what R printed so far comes first */
  rb_send_encoded(rq, &e);
  rb_encoder_free(&e);
  SEXP out = Rf_allocVector(RAWSXP, 8);
  for (int i = 0; i < 8; i++) RAW(out)[i] = (Rbyte)(a.callback_id >> (56 - 8 * i));
  return out;
}
