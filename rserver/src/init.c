/* .Call registration. */
#include <stdlib.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include "rserver_calls.h"

void rb_views_init(DllInfo *dll);

/* Through void (*)(void), which GCC lets any function type convert to. */
#define CALLDEF(name, n) {#name, (DL_FUNC)(void (*)(void))&name, n}

static const R_CallMethodDef call_methods[] = {
  CALLDEF(C_server_prepare, 9),
  CALLDEF(C_sessions_start, 1),
  CALLDEF(C_sessions_next, 0),
  CALLDEF(C_session_exit, 1),
  CALLDEF(C_zmq_info, 0),
  CALLDEF(C_server_start_io, 0),
  CALLDEF(C_server_stop, 0),
  CALLDEF(C_server_next, 3),
  CALLDEF(C_request_plain, 1),
  CALLDEF(C_request_decode, 1),
  CALLDEF(C_request_begin, 2),
  CALLDEF(C_later_loaded, 0),
  CALLDEF(C_request_release, 1),
  CALLDEF(C_request_reserve, 2),
  CALLDEF(C_request_timed_out, 1),
  CALLDEF(C_interrupt_was_own, 0),
  CALLDEF(C_terminate_requested, 0),
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
  CALLDEF(C_png_image_data, 1),
  CALLDEF(C_png_blank, 2),
  CALLDEF(C_display_send, 4),
  {NULL, NULL, 0}
};

void R_init_rserver(DllInfo *dll) {
  R_registerRoutines(dll, NULL, call_methods, NULL, NULL);
  R_useDynamicSymbols(dll, FALSE);
  R_forceSymbols(dll, TRUE);
  rb_views_init(dll);
}
