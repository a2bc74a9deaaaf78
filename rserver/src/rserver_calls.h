/* The .Call entry points, in one place: init.c registers them, and each is
 * defined in the file of its concern (see rserver.h). Include after
 * Rinternals.h. */
#ifndef RSERVER_CALLS_H
#define RSERVER_CALLS_H

SEXP C_server_prepare(SEXP, SEXP, SEXP, SEXP, SEXP, SEXP, SEXP, SEXP, SEXP);
SEXP C_sessions_start(SEXP);
SEXP C_sessions_next(void);
SEXP C_session_exit(SEXP);
SEXP C_zmq_info(void);
SEXP C_server_start_io(void);
SEXP C_server_stop(void);
SEXP C_constants(void);
SEXP C_ops(void);
SEXP C_server_next(SEXP, SEXP, SEXP);
SEXP C_request_plain(SEXP);
SEXP C_request_decode(SEXP);
SEXP C_request_begin(SEXP, SEXP);
SEXP C_later_loaded(void);
SEXP C_request_release(SEXP);
SEXP C_request_reserve(SEXP, SEXP);
SEXP C_request_timed_out(SEXP);
SEXP C_interrupt_was_own(void);
SEXP C_terminate_requested(void);
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
SEXP C_png_image_data(SEXP);
SEXP C_png_blank(SEXP, SEXP);
SEXP C_display_send(SEXP, SEXP, SEXP, SEXP);

#endif
