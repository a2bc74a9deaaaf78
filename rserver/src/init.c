/* .Call registration. */
#include <stdlib.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include <R_ext/Rdynload.h>

void rb_views_init(DllInfo *dll);

SEXP C_server_prepare(SEXP, SEXP, SEXP, SEXP, SEXP, SEXP);
SEXP C_server_start_io(void);
SEXP C_server_stop(void);
SEXP C_constants(void);
SEXP C_ops(void);
SEXP C_server_next(SEXP, SEXP);
SEXP C_request_decode(SEXP);
SEXP C_request_release(SEXP);
SEXP C_request_timed_out(SEXP);
SEXP C_interrupt_was_own(void);
SEXP C_request_answered(SEXP);
SEXP C_active_request_stopped(void);
SEXP C_reply_from_owner(SEXP, SEXP);
SEXP C_reply_value(SEXP, SEXP, SEXP, SEXP);
SEXP C_reply_error(SEXP, SEXP, SEXP);
SEXP C_handle_count(void);
SEXP C_handle_release(SEXP);
SEXP C_mp_decode(SEXP, SEXP);
SEXP C_mp_encode(SEXP);
SEXP C_make_call(SEXP, SEXP, SEXP);
SEXP C_weak_ref(SEXP);
SEXP C_weak_ref_key(SEXP);
SEXP C_bind_call(SEXP, SEXP, SEXP, SEXP, SEXP, SEXP);
SEXP C_call_shape(SEXP, SEXP);
SEXP C_args_swept(SEXP);
SEXP C_args_bound_since_sweep(void);
SEXP C_callback_send(SEXP, SEXP);
SEXP C_request_reply_id(SEXP);
SEXP C_request_release_client(SEXP);
SEXP C_request_ends_callback(SEXP, SEXP);
SEXP C_arrow_decode(SEXP);
SEXP C_arrow_encode(SEXP);

/* Through void (*)(void), which GCC lets any function type convert to. */
#define CALLDEF(name, n) {#name, (DL_FUNC)(void (*)(void))&name, n}

static const R_CallMethodDef call_methods[] = {
  CALLDEF(C_server_prepare, 6),
  CALLDEF(C_server_start_io, 0),
  CALLDEF(C_server_stop, 0),
  CALLDEF(C_server_next, 2),
  CALLDEF(C_request_decode, 1),
  CALLDEF(C_request_release, 1),
  CALLDEF(C_request_timed_out, 1),
  CALLDEF(C_interrupt_was_own, 0),
  CALLDEF(C_request_answered, 1),
  CALLDEF(C_active_request_stopped, 0),
  CALLDEF(C_constants, 0),
  CALLDEF(C_ops, 0),
  CALLDEF(C_reply_from_owner, 2),
  CALLDEF(C_reply_value, 4),
  CALLDEF(C_reply_error, 3),
  CALLDEF(C_handle_count, 0),
  CALLDEF(C_handle_release, 1),
  CALLDEF(C_mp_decode, 2),
  CALLDEF(C_mp_encode, 1),
  CALLDEF(C_make_call, 3),
  CALLDEF(C_weak_ref, 1),
  CALLDEF(C_weak_ref_key, 1),
  CALLDEF(C_bind_call, 6),
  CALLDEF(C_call_shape, 2),
  CALLDEF(C_args_swept, 1),
  CALLDEF(C_args_bound_since_sweep, 0),
  CALLDEF(C_callback_send, 2),
  CALLDEF(C_request_reply_id, 1),
  CALLDEF(C_request_release_client, 1),
  CALLDEF(C_request_ends_callback, 2),
  CALLDEF(C_arrow_decode, 1),
  CALLDEF(C_arrow_encode, 1),
  {NULL, NULL, 0}
};

void R_init_rserver(DllInfo *dll) {
  R_registerRoutines(dll, NULL, call_methods, NULL, NULL);
  R_useDynamicSymbols(dll, FALSE);
  R_forceSymbols(dll, TRUE);
  rb_views_init(dll);
}
