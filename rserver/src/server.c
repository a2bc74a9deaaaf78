/* Server lifecycle and the main-thread side of request handling.
 *
 * R's main thread waits for requests at the client socket itself (io_thread.c),
 * together with R's own input handlers (so the event loop keeps running while
 * idle), and sends replies through it. Requests in progress form a stack
 * (nested requests come with callbacks); the top of the stack owns console
 * output and is what a ping reports. The wait answers plain calls itself
 * (serve_plain_call): the serve loop's R code would cost more than they do. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include <R_ext/eventloop.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

extern int R_interrupts_pending;   /* R_ext/GraphicsDevice.h declares them too */
extern Rboolean R_interrupts_suspended;

/* The server's state, in one place. Start-up has two steps (SPEC §9):
 * C_server_prepare fixes the configuration and makes no thread and no ZeroMQ
 * context, so a process may fork after it; C_server_start_io then makes the
 * context, the I/O thread and the socket. */
typedef struct {
  int prepared;             /* configured; no thread, no context yet */
  int running;              /* the context and the I/O thread exist */
  rb_io_shared shared;      /* with the I/O thread (see rserver.h); holds the ZeroMQ context */
  pthread_t io_tid;
} rb_server;

static rb_server server;

/* SIGTERM and SIGHUP stop a serve() worker as Ctrl-C stops an idle one, also
 * when it is busy: the request in progress is answered as interrupted, and
 * serve() returns, so that its ipc:// socket file and shared memory go (a
 * session's are its server's business: sessions.c). A second signal before
 * that ends the process at once. */
static volatile sig_atomic_t terminate_requested = 0;
static struct sigaction old_term, old_hup;

static void on_terminate(int sig) {
  if (terminate_requested) _exit(128 + sig);
  terminate_requested = 1;
  raise(SIGINT);   /* R takes it as an interrupt where it can */
}

static void catch_terminate(int on) {
  if (!on) {
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    return;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_terminate;
  sigemptyset(&sa.sa_mask);
  terminate_requested = 0;
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);
}

SEXP C_terminate_requested(void) { return Rf_ScalarLogical(terminate_requested != 0); }

static void free_frames(rb_request *rq) {
  zmq_msg_t *f = rq->frames;
  for (int i = 0; i < rq->nframes; i++) zmq_msg_close(&f[i]);
  free(f);
  rq->frames = NULL;
  rq->nframes = 0;
}

static void request_finalizer(SEXP ptr) {
  rb_request *rq = R_ExternalPtrAddr(ptr);
  if (!rq || !rq->done) return;   /* still on the stack: never free it under it */
  free_frames(rq);
  free(rq->envelope);
  free(rq);
  R_ClearExternalPtr(ptr);
}


/* Wraps a request taken from the socket for R (frames: routing id,
 * envelope, payloads). */
static SEXP receive_request(rb_arrival *a) {
  rb_request *rq = calloc(1, sizeof *rq);
  zmq_msg_t *frames = a->n > 2 ? malloc((size_t)(a->n - 2) * sizeof *frames) : NULL;
  size_t rid_len = zmq_msg_size(&a->f[0]), n = zmq_msg_size(&a->f[1]);
  if (rq && (a->n <= 2 || frames) && rid_len <= RB_MAX_ROUTING_ID && (rq->envelope = malloc(n ? n : 1))) {
    rq->arrived = a->arrived;
    memcpy(rq->rid, zmq_msg_data(&a->f[0]), rid_len);
    rq->rid_len = rid_len;
    rq->client_len = rb_client_key_len(rid_len);
    memcpy(rq->envelope, zmq_msg_data(&a->f[1]), n);
    rq->envelope_len = n;
    /* payload frames are kept as they are (no copy) until decoded */
    for (int i = 2; i < a->n; i++) {
      zmq_msg_init(&frames[i - 2]);
      zmq_msg_move(&frames[i - 2], &a->f[i]);
    }
    rq->frames = frames;
    rq->nframes = a->n > 2 ? a->n - 2 : 0;
    frames = NULL;
  }
  free(frames);
  int shm = a->shm, chunks = a->chunks;
  rb_arrival_free(a);
  if (!rq) Rf_error("rbridge: out of memory");
  rb_peek pk;
  const char *err;
  if (!rq->envelope || rq->arrived <= 0 || rb_peek_envelope(rq->envelope, rq->envelope_len, &pk, &err)) {
    free_frames(rq);
    free(rq->envelope);   /* validated by the I/O thread; only allocation can fail */
    free(rq);
    Rf_error("rbridge: could not take a request from the I/O thread");
  }
  rq->id = pk.id;
  memcpy(rq->op, pk.op, RB_OP_MAX);
  rq->timeout = pk.timeout;
  rq->shm = pk.shm && shm;   /* only once the handshake proved it */
  rq->doubles_checked = pk.doubles_checked;
  rq->chunks = chunks;
  /* A new outermost request means the client has read every earlier reply:
   * shared-memory segments it left unread (an abandoned reply) go now. */
  if (!rb_active_request()) rb_shm_forget(rq->rid, rq->client_len);
  if (strcmp(rq->op, "result") == 0 || strcmp(rq->op, "error") == 0) {
    rq->is_reply = 1;   /* answers a callback: never on the stack of requests */
    rq->done = 1;
  } else {
    rb_request_push(rq);
  }
  SEXP ptr = PROTECT(R_MakeExternalPtr(rq, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(ptr, request_finalizer, TRUE);
  UNPROTECT(1);
  return ptr;
}

/* Waits up to timeout_ms for a request, running R's input handlers (the event
 * loop of packages such as later) when they have input. Returns a request
 * context, or NULL when the wait ended without one; a request (not a reply to
 * a callback) is also stored as `ctx` in the environment `state`, if given. */
static SEXP next_request(int timeout_ms, SEXP state) {
  /* A termination outlives the interrupt that carried it: a wait for a
   * callback's reply it ended hands over to the loop below, which stops too. */
  if (terminate_requested) R_interrupts_pending = 1;
  /* A SIGINT that came while we were not waiting is only pending: R checks
   * once in a thousand evaluations, which an idle loop takes long to reach. */
  if (R_interrupts_pending) R_CheckUserInterrupt();
  zmq_pollitem_t extra[RB_MAX_EXTRA];
  int n = 0;
  for (InputHandler *h = R_InputHandlers; h && n < RB_MAX_EXTRA; h = h->next)
    if (h->fileDescriptor > 0) extra[n++] = (zmq_pollitem_t){NULL, h->fileDescriptor, ZMQ_POLLIN, 0};
  rb_arrival a;
  memset(&a, 0, sizeof a);
  /* interrupts pending stop the wait only where R takes them */
  int rc = rb_io_wait(timeout_ms, extra, n, R_interrupts_suspended ? NULL : &R_interrupts_pending, &a);
  if (rc == 0 && !rb_active_request()) {   /* idle */
    rb_sendbuf_trim(0);
    rb_views_collect(1);
  }
  if (rc < 0) R_CheckUserInterrupt();   /* a signal woke us, or a deadline passed: take an interrupt now */
  if (rc == 1) {
    /* Once on the stack, a request must reach the serve loop's state before
     * an interrupt can land: R's allocator takes pending interrupts when a
     * collection ends, so they are held until the request is noted there
     * (an interrupt from then on is answered to it). */
    Rboolean suspended = R_interrupts_suspended;
    R_interrupts_suspended = TRUE;
    SEXP ctx = PROTECT(receive_request(&a));
    if (TYPEOF(state) == ENVSXP && !rb_request_from(ctx)->is_reply) Rf_defineVar(Rf_install("ctx"), ctx, state);
    R_interrupts_suspended = suspended;
    UNPROTECT(1);
    return ctx;
  }
  if (rc == 2) R_runHandlers(R_InputHandlers, R_checkActivity(0, 1));
  return R_NilValue;
}

/* Whether the `later` package is loaded, whose tasks the serve loop runs:
 * cheaper than isNamespaceLoaded(), which the loop would call per request. */
static int later_loaded(void) {
  return Rf_findVarInFrame3(R_NamespaceRegistry, Rf_install("later"), FALSE) != R_UnboundValue;
}

SEXP C_later_loaded(void) { return Rf_ScalarLogical(later_loaded()); }

/* ---- replies ------------------------------------------------------------ */

/* Each condition is list(class, message, call) from R/conditions.R: the class
 * as an array of str, message and call as str (call nil when absent). */
static void pack_condition(rb_encoder *e, SEXP c) {
  rb_pack_cstr(&e->pk, "class");
  rb_pack_strings(&e->pk, VECTOR_ELT(c, 0));
  rb_pack_cstr(&e->pk, "message");
  rb_pack_value(e, VECTOR_ELT(c, 1), 1, 0);
  rb_pack_cstr(&e->pk, "call");
  rb_pack_value(e, VECTOR_ELT(c, 2), 1, 0);
}

static void pack_conditions(rb_encoder *e, SEXP conds) {
  R_xlen_t n = Rf_isNull(conds) ? 0 : XLENGTH(conds);
  msgpack_pack_array(&e->pk, (size_t)n);
  for (R_xlen_t i = 0; i < n; i++) {
    msgpack_pack_map(&e->pk, 3);
    pack_condition(e, VECTOR_ELT(conds, i));
  }
}

enum { MODE_CONVERT, MODE_HANDLE, MODE_ARROW };
typedef struct { rb_request *rq; SEXP value, warnings; int mode; } reply_args;

static void fill_result(rb_encoder *e, void *p) {
  reply_args *a = p;
  rb_pack_header(&e->pk, 5, a->rq->id, "result");
  rb_pack_cstr(&e->pk, "value");
  if (a->mode == MODE_ARROW) rb_pack_payload(e, a->value);
  else rb_pack_value(e, a->value, RB_MAX_DEPTH, a->mode == MODE_HANDLE);
  rb_pack_cstr(&e->pk, "warnings");
  pack_conditions(e, a->warnings);
}

/* a->value is list(class, message, call, traceback), built by R/conditions.R */
static void fill_error(rb_encoder *e, void *p) {
  reply_args *a = p;
  msgpack_packer *pk = &e->pk;
  rb_pack_header(pk, 5, a->rq->id, "error");
  rb_pack_cstr(pk, "error");
  msgpack_pack_map(pk, 4);
  pack_condition(e, a->value);
  rb_pack_cstr(pk, "traceback");
  rb_pack_strings(pk, VECTOR_ELT(a->value, 3));
  rb_pack_cstr(pk, "warnings");
  pack_conditions(e, a->warnings);
}

static SEXP finish(SEXP ctx, void (*fill)(rb_encoder *, void *), SEXP value, SEXP warnings, int mode) {
  rb_request *rq = rb_request_from(ctx);
  if (rq->done) Rf_error("rbridge: request %llu was already answered", (unsigned long long)rq->id);
  reply_args a = {rq, value, warnings, mode};
  rb_encoder e;
  rb_encoder_init(&e);
  e.client = rq;
  rb_encode_protected(&e, fill, &a);   /* may raise an R error; nothing leaks */
  rb_console_flush();                   /* output first, then the reply */
  rb_report_released_callables(rq);
  /* Idle before the reply leaves: a client that pings or interrupts as soon
   * as it has the reply must not find this request still running. */
  rb_request_pop(rq);
  rb_send_encoded(rq, &e);
  rb_encoder_free(&e);
  if (!rb_active_request()) rb_views_collect(0);   /* after the reply: off the client's wait */
  return R_NilValue;
}

SEXP C_reply_value(SEXP ctx, SEXP value, SEXP warnings, SEXP mode) {
  const char *m = TYPEOF(mode) == STRSXP && XLENGTH(mode) == 1 ? CHAR(STRING_ELT(mode, 0)) : "";
  return finish(ctx, fill_result, value, warnings,
                strcmp(m, "handle") == 0 ? MODE_HANDLE : strcmp(m, "arrow") == 0 ? MODE_ARROW : MODE_CONVERT);
}

SEXP C_reply_error(SEXP ctx, SEXP info, SEXP warnings) {
  if (TYPEOF(info) != VECSXP || XLENGTH(info) != 4) Rf_error("rbridge: bad error description");
  return finish(ctx, fill_error, info, warnings, MODE_CONVERT);
}

SEXP C_request_decode(SEXP ctx) {
  rb_request *rq = rb_request_from(ctx);
  SEXP kept = R_ExternalPtrProtected(ctx);   /* decoded by serve_plain_call */
  if (!Rf_isNull(kept)) {
    R_SetExternalPtrProtected(ctx, R_NilValue);
    return kept;
  }
  SEXP x = PROTECT(rb_decode_request(rq));
  free_frames(rq);   /* the payloads are R objects now: free their memory early */
  UNPROTECT(1);
  return x;
}

/* The serve loop starts request `ctx`, already state$ctx (C_server_next set
 * it, or serve_nested for its first request): it has no warnings and no
 * error trace yet. Returns its envelope, decoded. One call, because assigning
 * these from R costs more than the rest of a small call's R code. */
SEXP C_request_begin(SEXP ctx, SEXP state) {
  if (TYPEOF(state) != ENVSXP) Rf_error("rbridge: bad loop state");
  /* begun by serve_plain_call already: decoding it may have warned */
  if (!Rf_isNull(R_ExternalPtrProtected(ctx))) return C_request_decode(ctx);
  Rf_defineVar(Rf_install("warnings"), PROTECT(Rf_allocVector(VECSXP, 0)), state);
  UNPROTECT(1);
  Rf_defineVar(Rf_install("trace"), R_NilValue, state);
  return C_request_decode(ctx);
}

/* ---- plain calls --------------------------------------------------------- */

/* The element of a named list called `name`, or NULL. */
static SEXP list_get(SEXP list, const char *name) {
  SEXP names = Rf_getAttrib(list, R_NamesSymbol);
  if (TYPEOF(list) != VECSXP || TYPEOF(names) != STRSXP) return R_NilValue;
  for (R_xlen_t i = 0; i < XLENGTH(list); i++)
    if (strcmp(CHAR(STRING_ELT(names, i)), name) == 0) return VECTOR_ELT(list, i);
  return R_NilValue;
}

/* A request R/dispatch.R would answer with call_op's first case alone: a
 * `call` without `mode` or `plots` whose call C_make_call builds whole. The
 * serve loop's R code costs more than such a call, so the wait answers it
 * with the loop's own steps (begin, run, reply, ctx cleared). Returns 1 when
 * it did; else 0, with the decoded envelope kept for C_request_decode (a
 * request that expired while queued is left to the loop too). */
static int serve_plain_call(SEXP ctx, SEXP state) {
  rb_request *rq = rb_request_from(ctx);
  if (rq->is_reply || strcmp(rq->op, "call") != 0) return 0;
  SEXP msg = PROTECT(C_request_begin(ctx, state)), call = R_NilValue;
  if (rb_request_stop(rq) != RB_STOP_TIMEOUT && Rf_isNull(list_get(msg, "mode")) && Rf_isNull(list_get(msg, "plots")))
    call = C_make_call(list_get(msg, "fn"), list_get(msg, "args"), list_get(msg, "kwargs"));
  if (TYPEOF(call) != LANGSXP) {   /* R/calls.R resolves the name, or binds the values */
    R_SetExternalPtrProtected(ctx, msg);
    UNPROTECT(1);
    return 0;
  }
  PROTECT(call);
  /* In the global environment, as call_op's rbridge_eval() would, but without
   * that marker frame (a closure and eval(): a tenth of a small call's CPU);
   * an error's user frames are those after the serve loop's (R/conditions.R). */
  rq->plain = 1;
  SEXP value = PROTECT(Rf_eval(call, R_GlobalEnv));
  finish(ctx, fill_result, value, Rf_findVarInFrame(state, Rf_install("warnings")), MODE_CONVERT);
  Rf_defineVar(Rf_install("ctx"), R_NilValue, state);
  UNPROTECT(3);
  return 1;
}

/* Whether the request's user code ran as a plain call (its frames follow the
 * serve loop's, with no rbridge_eval() marker). */
SEXP C_request_plain(SEXP ctx) { return Rf_ScalarLogical(rb_request_from(ctx)->plain); }

/* next_request for R/dispatch.R. With `plain` (the outermost serve loop,
 * `later` not loaded), plain calls (serve_plain_call) are answered here and
 * the wait goes on. */
SEXP C_server_next(SEXP timeout_ms, SEXP state, SEXP plain) {
  if (!server.running) Rf_error("rbridge: the server is not running");
  int serve_plain = Rf_asLogical(plain) == TRUE && TYPEOF(state) == ENVSXP;
  for (;;) {
    const void *vmax = vmaxget();   /* R_alloc memory would otherwise last until .Call returns */
    SEXP ctx = PROTECT(next_request(Rf_asInteger(timeout_ms), state));
    if (!serve_plain || Rf_isNull(ctx) || !serve_plain_call(ctx, state)) {
      UNPROTECT(1);
      return ctx;
    }
    UNPROTECT(1);
    vmaxset(vmax);
    if (later_loaded()) return R_NilValue;   /* the call loaded it: the loop runs its tasks */
  }
}

/* The id of the callback a client's reply answers (raw(8)), or NULL for a request. */
SEXP C_request_reply_id(SEXP ctx) {
  rb_request *rq = rb_request_from(ctx);
  if (!rq->is_reply) return R_NilValue;
  SEXP out = Rf_allocVector(RAWSXP, 8);
  for (int i = 0; i < 8; i++) RAW(out)[i] = (Rbyte)(rq->id >> (56 - 8 * i));
  return out;
}

SEXP C_request_timed_out(SEXP ctx) {
  return Rf_ScalarLogical(rb_request_stop(rb_request_from(ctx)) == RB_STOP_TIMEOUT);
}

/* Whether the innermost request in progress was told to stop: its deadline
 * passed, it was interrupted, or its client is gone. Between requests of a
 * callback's serve loop, that is the request that made the callback, which
 * then unwinds (it may have been told while another client's request ran). */
SEXP C_active_request_stopped(void) {
  rb_request *active = rb_active_request();
  return Rf_ScalarLogical(active && rb_request_stop(active) != RB_STOP_NONE);
}

/* Whether an interrupt R took may have come from the I/O thread (for a
 * request, a deadline, or the parent's death) rather than from a Ctrl-C at
 * the terminal: it sent one in the last OWN_INTERRUPT_WINDOW seconds. Signals
 * can arrive late and coalesce, so they are not counted: a Ctrl-C right after
 * a client's interrupt is taken as the client's (press it again). */
#define OWN_INTERRUPT_WINDOW 2.0

SEXP C_interrupt_was_own(void) {
  pthread_mutex_lock(&server.shared.mu);
  int own = server.shared.own_interrupt_at > 0 && rb_monotonic() - server.shared.own_interrupt_at < OWN_INTERRUPT_WINDOW;
  pthread_mutex_unlock(&server.shared.mu);
  return Rf_ScalarLogical(own);
}

/* Whether the request's reply has been sent (an interrupt can still land
 * after that, before R has moved on). */
SEXP C_request_answered(SEXP ctx) { return Rf_ScalarLogical(rb_request_from(ctx)->done); }

/* client_gone (made by the I/O thread in the name of a vanished client). */
SEXP C_request_release_client(SEXP ctx) {
  rb_request *rq = rb_request_from(ctx);
  rb_shm_forget(rq->rid, rq->client_len);
  rb_arenas_detach(rq->rid, rq->client_len);
  return Rf_ScalarReal((double)rb_handle_release_client(rq->rid, rq->client_len));
}

/* reserve: bytes is the request's "bytes". The name of the client's new
 * result arena (rb_arena_reserve), or NULL when nothing was reserved: none
 * asked for, a client without shared memory, regions of its arena out, or no
 * room in /dev/shm. */
SEXP C_request_reserve(SEXP ctx, SEXP bytes) {
  rb_request *rq = rb_request_from(ctx);
  double n = (TYPEOF(bytes) == REALSXP || TYPEOF(bytes) == INTSXP) && XLENGTH(bytes) == 1 ? Rf_asReal(bytes) : -1;
  if (!(n >= 0 && n <= (double)RB_ARENA_RESERVE_MAX && n == floor(n)))
    Rf_error("'bytes' must be a whole number from 0 to %.0f", (double)RB_ARENA_RESERVE_MAX);
  const char *name = n > 0 && rq->shm ? rb_arena_reserve(rq->rid, rq->client_len, (size_t)n) : NULL;
  return name ? Rf_mkString(name) : R_NilValue;
}

/* release: the envelope's "handles" is an array of handle references. */
SEXP C_request_release(SEXP ctx) {
  rb_request *rq = rb_request_from(ctx);
  mp_reader r;
  mp_item it, key;
  int released = 0;
  mp_init(&r, rq->envelope, rq->envelope_len);
  if (mp_next(&r, &it) || it.kind != MP_MAP) Rf_error("rbridge: malformed envelope");
  for (uint32_t i = 0; i < it.len; i++) {
    if (mp_next(&r, &key)) Rf_error("rbridge: malformed envelope");
    if (!mp_str_eq(&key, "handles")) {
      if (mp_skip_value(&r, RB_MAX_DEPTH)) Rf_error("rbridge: malformed envelope");
      continue;
    }
    mp_item arr, h;
    if (mp_next(&r, &arr) || arr.kind != MP_ARRAY) Rf_error("rbridge: 'handles' must be an array");
    for (uint32_t j = 0; j < arr.len; j++) {
      if (mp_next(&r, &h) || h.kind != MP_EXT || h.ext_type != RB_EXT_HANDLE || h.len != 8)
        Rf_error("rbridge: 'handles' must hold handle references");
      uint64_t id = 0;
      for (int k = 0; k < 8; k++) id = (id << 8) | h.ptr[k];
      released += rb_handle_release(id, rq);
    }
  }
  SEXP out = PROTECT(Rf_allocVector(REALSXP, 2));
  REAL(out)[0] = released;
  REAL(out)[1] = (double)rb_handle_count();
  UNPROTECT(1);
  return out;
}

/* ---- lifecycle ---------------------------------------------------------- */

SEXP C_server_prepare(SEXP endpoint, SEXP max_envelope, SEXP max_frame, SEXP parent_pid, SEXP liveness,
                      SEXP interrupt_grace, SEXP heartbeat, SEXP info, SEXP session) {
  if (server.running) Rf_error("rbridge: a server is already running in this R process");
  const char *ep = CHAR(STRING_ELT(endpoint, 0));
  rb_io_shared *sh = &server.shared;
  if (strlen(ep) >= sizeof sh->endpoint) Rf_error("rbridge: endpoint is too long");
  if (TYPEOF(info) != RAWSXP || (size_t)XLENGTH(info) > sizeof sh->worker_info)
    Rf_error("rbridge: worker info must be a raw vector of at most 1024 bytes");

  rb_shm_sweep();   /* segments left by processes that died */
  memset(&server, 0, sizeof server);
  pthread_mutex_init(&sh->mu, NULL);
  strcpy(sh->endpoint, ep);
  sh->max_envelope = (size_t)Rf_asReal(max_envelope);
  sh->max_frame = (int64_t)Rf_asReal(max_frame);
  sh->parent_pid = (long)Rf_asReal(parent_pid);
  sh->liveness = Rf_asReal(liveness);
  sh->interrupt_grace = Rf_asReal(interrupt_grace);
  sh->heartbeat_ms = (int)(Rf_asReal(heartbeat) * 1000);
  sh->session = Rf_asLogical(session) == TRUE;
  memcpy(sh->worker_info, RAW(info), (size_t)XLENGTH(info));
  sh->worker_info_len = (size_t)XLENGTH(info);
  server.prepared = 1;
  return R_NilValue;
}

SEXP C_server_start_io(void) {
  if (!server.prepared || server.running) Rf_error("rbridge: the server is not prepared, or already running");
  rb_io_shared *sh = &server.shared;
  sh->main_thread = pthread_self();   /* of this process: it may be a fork of the one that prepared */
  /* libzmq's own threads start with the first socket: block every signal
   * while they are created so that SIGINT is only ever taken by R's thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  sh->zctx = zmq_ctx_new();
  char err[1200];
  int rc = sh->zctx ? rb_io_open(sh, err, sizeof err) : -1;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!sh->zctx) Rf_error("rbridge: cannot create a ZeroMQ context: %s", zmq_strerror(errno));
  if (rc < 0) {
    zmq_ctx_term(sh->zctx);
    Rf_error("rbridge: %s", err);
  }
  rb_requests_bind(sh);
  if (rb_io_start(&server.io_tid, err, sizeof err) < 0) {
    rb_io_close();
    zmq_ctx_term(sh->zctx);
    Rf_error("rbridge: %s", err);
  }
  server.running = 1;
  rb_console_install();
  if (!sh->session) catch_terminate(1);
  return Rf_mkString(sh->bound_endpoint);
}

SEXP C_server_stop(void) {
  if (!server.running) return R_NilValue;
  if (!server.shared.session) catch_terminate(0);
  rb_console_restore();
  rb_shm_forget(NULL, 0);
  rb_arenas_detach(NULL, 0);
  rb_io_stop(server.io_tid);
  zmq_ctx_term(server.shared.zctx);
  rb_sendbuf_trim(1);
  /* libzmq leaves the socket file of an ipc:// endpoint behind */
  if (strncmp(server.shared.bound_endpoint, "ipc://", 6) == 0) unlink(server.shared.bound_endpoint + 6);
  server.shared.zctx = NULL;
  server.running = 0;
  return R_NilValue;
}
