/* Internal header of the rserver C core.
 *
 * Files and their concerns:
 *   mpack_reader.c  bounds-checked msgpack reader (pure C, no R API)
 *   protocol.c      envelope constants, peeking and packing helpers (pure C)
 *   io_thread.c     the client socket, and the I/O thread that drives it while R computes (pure C)
 *   sessions.c      a server of sessions: the fork server in the preloaded R process (R/sessions.R)
 *   front.c         a server of sessions: the front process with the public socket (pure C)
 *   auth.c          CurveZMQ key files and the ZAP handler (pure C)
 *   server.c        server state and lifecycle, taking requests, plain calls, replies (R/dispatch.R: the serve loop)
 *   request.c       the stack of requests in progress, and sending to their clients
 *   calls.c         the `call` op: calls of scalars built (plain ones run) in C; weak references for R/calls.R
 *   callbacks.c     Python callables as R functions
 *   decode.c        msgpack -> R objects (main thread)
 *   encode.c        R objects -> msgpack (main thread)
 *   flatbuf.c       flatbuffers, the encoding of Arrow metadata (pure C)
 *   arrow_read.c    Arrow IPC stream parsing and validation; NA bit patterns in large buffers (pure C)
 *   arrow_to_r.c    Arrow IPC stream -> R objects (main thread)
 *   arrow_from_r.c  R objects -> Arrow IPC stream (main thread)
 *   shm.c           shared-memory segments for payloads on one host (pure C)
 *   arena.c         shared-memory arenas: payload regions reused per client (pure C)
 *   views.c         zero-copy R vectors over received payload memory (ALTREP)
 *   sendbuf.c       large payload buffers: their reuse, and the chunks they are sent in (pure C)
 *   handles.c       the table of R objects held for clients
 *   console.c       capture of R console output per request
 *   plots.c         plot capture: display messages (R/plots.R)
 *   png_read.c      the pixel check for blank plot pages (pure C)
 *   constants.c     the numbers the protocol fixes, for the tests (vectors/constants.json)
 *   init.c          .Call registration (prototypes: rserver_calls.h)
 */
#ifndef RSERVER_H
#define RSERVER_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <msgpack.h>
#include <zmq.h>

#define RB_PROTOCOL_VERSION 1
#define RB_EXT_HANDLE 1
#define RB_EXT_VECTOR 2
#define RB_EXT_PAYLOAD 3
#define RB_EXT_CALLABLE 4
#define RB_EXT_CODE 5
#define RB_MAX_FRAMES 1024       /* frames in one message from a client */
#define RB_SHM_NAME_MAX 64
#define RB_SHM_MIN ((size_t)1 << 20)   /* payloads this big go through shared memory */
#define RB_ARROW_MIN_LENGTH 4096  /* plain vectors this long travel as Arrow payloads */
#define RB_WORKER_ID_BIT ((uint64_t)1 << 52)   /* set in ids the worker chooses (callbacks) */
#define RB_MAX_DEPTH 64          /* nesting of msgpack containers */
#define RB_MAX_ROUTING_ID 255
#define RB_OP_MAX 16
#define RB_NO_REQUEST UINT64_MAX   /* no request id: ids are below 2^53 */
/* Sockets facing clients never pause a client's input (no receive high-water
 * mark): in libzmq 4.3, a peer that hangs up while its input is paused leaves
 * its connection with an I/O error but in place, and the next heartbeat or
 * message to it aborts the process (stream_engine_base.cpp, out_event's
 * assert(!_io_error)). A flooding client is bounded by the reader instead
 * (SPEC §7). */
#define RB_CLIENT_RCVHWM 0

/* ---- mpack_reader.c ---------------------------------------------------- */
typedef enum {
  MP_NIL, MP_BOOL, MP_INT, MP_UINT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT
} mp_kind;

typedef struct {
  mp_kind kind;
  int8_t ext_type;
  uint32_t len;           /* bytes for STR/BIN/EXT, items for ARRAY/MAP */
  const uint8_t *ptr;     /* STR/BIN/EXT body, inside the reader's buffer */
  union { int b; int64_t i; uint64_t u; double f; } v;
} mp_item;

typedef struct {
  const uint8_t *buf;
  size_t len;
  size_t pos;
  const char *err;        /* first error, static string */
} mp_reader;

void mp_init(mp_reader *r, const void *buf, size_t len);
int mp_next(mp_reader *r, mp_item *it);           /* 0 ok, -1 error */
int mp_skip_value(mp_reader *r, int depth);       /* skip one whole value */
int mp_validate(const void *buf, size_t len, int max_depth, const char **err);
int mp_utf8_valid(const uint8_t *s, size_t n);
int mp_str_eq(const mp_item *it, const char *s);

/* ---- protocol.c -------------------------------------------------------- */
typedef struct {
  int has_id;
  uint64_t id;
  int version;            /* -1 when absent */
  char op[RB_OP_MAX];
  double timeout;
  double deadline;            /* monotonic seconds, 0 = none */         /* seconds, <= 0 when absent */
  int has_target;
  uint64_t target;        /* "target" of an interrupt */
  int has_parent;         /* a call made from inside a callback */
  int versions_ok;        /* hello: client offers our version */
  int shm;                /* request: the client takes shared-memory payloads */
  int chunks;             /* hello: the client asks for payloads in chunks */
  int doubles_checked;    /* request: the client checked its payloads' doubles (SPEC §8a) */
  char probe_name[RB_SHM_NAME_MAX];   /* hello: shm_probe */
  uint8_t probe_token[32];
  size_t probe_token_len;
} rb_peek;

int rb_peek_envelope(const void *buf, size_t len, rb_peek *pk, const char **err);

/* The op table (SPEC §4): where each message a client sends is handled. The
 * I/O thread routes by it, and the hello capabilities list its requests. */
typedef enum {
  RB_OP_IO,        /* answered by the I/O thread, even while R computes */
  RB_OP_MAIN,      /* a request, run in order on R's main thread */
  RB_OP_REPLY      /* a client's reply to a callback, for R's main thread */
} rb_op_place;
typedef struct { const char *name; rb_op_place place; } rb_op;
extern const rb_op rb_ops[];   /* ends with a NULL name */
const rb_op *rb_find_op(const char *name);
/* A client's key: the part of its routing id that all of its sockets share
 * (SPEC "Clients"): the first RB_CLIENT_KEY bytes of a routing id of
 * RB_CLIENT_KEY + 1 bytes, else the whole routing id. */
#define RB_CLIENT_KEY 16
size_t rb_client_key_len(size_t rid_len);
int rb_same_client(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
void rb_pack_cstr(msgpack_packer *pk, const char *s);
void rb_pack_kv_str(msgpack_packer *pk, const char *k, const char *v);
void rb_pack_header(msgpack_packer *pk, uint32_t nfields, uint64_t id, const char *op);
void rb_pack_error_body(msgpack_packer *pk, const char *const *classes, int nclass,
                        const char *message);
void rb_pack_error_reply(msgpack_packer *pk, uint64_t id, const char *cls, const char *message);

/* ---- io_thread.c ------------------------------------------------------- */
/* One request on the main thread's stack, as the I/O thread sees it. */
#define RB_MAX_LEVELS 128        /* deeper levels are not watched (callbacks nest at most 100 deep) */
enum { RB_STOP_NONE, RB_STOP_INTERRUPT, RB_STOP_TIMEOUT };
typedef struct {
  uint64_t id;
  uint8_t client[RB_MAX_ROUTING_ID];   /* the client's key */
  size_t client_len;
  double deadline;        /* monotonic seconds, 0 = none */
  int stop;               /* RB_STOP_*: set by the I/O thread, taken by the main thread */
} rb_level;

typedef struct {
  /* configuration, fixed before the thread starts */
  void *zctx;
  char endpoint[1024];
  char bound_endpoint[1024];
  size_t max_envelope;
  int64_t max_frame;
  long parent_pid;        /* exit when orphaned; 0 = no watch */
  double liveness;        /* seconds of silence after which a client's connection is dropped */
  double interrupt_grace; /* a session: seconds R may ignore an interrupt before it ends; 0 = no limit */
  int heartbeat_ms;       /* ZMTP heartbeat interval; 0 = none (a session: its front is on this host) */
  int session;            /* a session of a server: large payloads go in chunks (its front relays them) */
  char worker_info[1024]; /* msgpack map bytes for hello, built by main */
  size_t worker_info_len;
  pthread_t main_thread;

  /* shared with the main thread; guarded by mu */
  pthread_mutex_t mu;
  int busy_depth;
  rb_level levels[RB_MAX_LEVELS];   /* the request stack, outermost first */
  char current_op[RB_OP_MAX];
  double busy_since;      /* monotonic seconds */
  double own_interrupt_at; /* when the I/O thread last sent R a SIGINT (monotonic) */
  double unanswered_at;   /* the first SIGINT since R last waited at the socket; 0 = none */
} rb_io_shared;

#define RB_HEARTBEAT_MS 1000
#define RB_CLIENT_GRACE 2.0      /* seconds a client may be unreachable and keep its state */
#define RB_MAX_EXTRA 64          /* R's input handlers polled with the socket */
#define RB_ARRIVAL_SHM 1
#define RB_ARRIVAL_CHUNKS 2
/* A client's request, as R's main thread takes it from the inbox. */
typedef struct {
  double arrived;           /* monotonic seconds: when the socket took it */
  int shm;                  /* its client's handshake proved shared memory */
  int chunks;               /* its client's handshake asked for payloads in chunks */
  int n;
  zmq_msg_t *f;             /* routing id, envelope, payload frames */
  void *hold;               /* what rb_arrival_free frees */
} rb_arrival;
int rb_reachable(void *router, const uint8_t *rid, size_t len);   /* a ROUTER_MANDATORY probe */
double rb_monotonic(void);   /* seconds (poll.c) */
/* zmq_poll(items, n, wait_ms) with fewer system calls (poll.c): check[i] says
 * socket i was used since it was last polled; fds has room for n. Returns the
 * ready count, -1 on an error (or a signal before anything was ready). */
struct pollfd;
int rb_poll(zmq_pollitem_t *items, const char *check, struct pollfd *fds, int n, long wait_ms);
/* R's main thread: */
int rb_io_open(rb_io_shared *sh, char *err, size_t errlen);   /* binds; call before rb_io_start */
int rb_io_start(pthread_t *tid, char *err, size_t errlen);
void rb_io_stop(pthread_t tid);                              /* ends the thread, closes the socket */
void rb_io_close(void);                                      /* closes the socket (no thread) */
/* Drives the socket until a request comes (1, in *req), one of extra[] is
 * ready (2), *interrupt is set or a signal came (-1), or timeout_ms pass (0). */
int rb_io_wait(int timeout_ms, zmq_pollitem_t *extra, int nextra, volatile int *interrupt, rb_arrival *req);
void rb_arrival_free(rb_arrival *req);
/* Sends R's message f[0..n) (routing id first) to its client, taking the
 * frames; `final`: a request's final reply. */
void rb_io_send(zmq_msg_t *f, int n, int final);

/* ---- png_read.c -------------------------------------------------------------  */
typedef struct {
  uint32_t width, height;
  int depth, color;
  uint8_t palette[768];
  size_t palette_size;
  uint8_t alpha[256];
  size_t alpha_size;
  size_t idat_size;
} rb_png;
int rb_png_parse(const uint8_t *p, size_t n, rb_png *png, uint8_t *idat);
int rb_png_blank(const rb_png *png, uint8_t *pixels, size_t n);

/* ---- auth.c ---------------------------------------------------------------- */
#define RB_ZMQ_ZAP_ENFORCE_DOMAIN 93   /* a draft option in zmq.h; libzmq 4.3 takes it */
int rb_parse_cert(const char *text, char public_key[41], char secret_key[41]);
int rb_read_cert(const char *path, char public_key[41], char secret_key[41], char *err, size_t errlen);
int rb_zap_answer(void *zap, const char *allow_dir);

/* ---- front.c, sessions.c: a server of sessions (SPEC §10) --------------------- */
#define RB_EXIT_UNRESPONSIVE 75   /* a session's exit status: R ignored an interrupt */
typedef struct {
  char endpoint[1024];
  char dir[512];            /* the server's private directory (sessions' sockets) */
  char r_tempdir[512];      /* the fork server's tempdir(), which R cannot remove if it is killed */
  char server_secret[41];   /* Z85; "" = no CURVE */
  char allow_dir[1024];     /* client public keys */
  int max_sessions;
  double idle_timeout;      /* seconds; 0 = none */
  double client_grace;      /* seconds a client may be gone before its session ends */
  double drain_timeout;
  double liveness;
  double session_cpu;       /* for the reasons told to clients */
  double interrupt_grace;
  size_t max_envelope;
  int64_t max_frame;
} rb_front_config;
/* Messages between the fork server and the front, on a SOCK_SEQPACKET pair
 * (both are forks of one process image). */
enum { RB_CTL_BOUND, RB_CTL_FAILED, RB_CTL_FORK, RB_CTL_FORKED, RB_CTL_FORK_FAILED, RB_CTL_EXITED,
       RB_CTL_DRAIN, RB_CTL_DRAIN_NOW };
typedef struct {
  int kind, number, pid, status;
  char text[1600];          /* endpoint, error, ZAP user id, or a session's last output */
} rb_ctl_msg;
void rb_front_main(const rb_front_config *cfg, int ctl) __attribute__((noreturn));
int rb_ctl_send(int fd, int kind, int number, int pid, int status, const char *text);
void rb_session_path(char *out, size_t n, const char *dir, int number, const char *leaf);
void rb_remove_tree(const char *path);

/* ---- console.c --------------------------------------------------------- */
void rb_console_install(void);
void rb_console_restore(void);
void rb_console_flush(void);

/* ---- server.c (main thread) -------------------------------------------- */
typedef struct rb_request {
  uint8_t rid[RB_MAX_ROUTING_ID];   /* routing id: where replies go */
  size_t rid_len;
  size_t client_len;          /* the client's key is rid[0, client_len) */
  uint64_t id;
  char op[RB_OP_MAX];
  double timeout;
  double arrived;             /* monotonic seconds, when the I/O thread took it */
  double deadline;            /* monotonic seconds, 0 = none */
  void *envelope;         /* malloc'd copy of the envelope frame */
  size_t envelope_len;
  int done;
  int is_reply;               /* a client's reply to a callback, not a request */
  int plain;                  /* a plain call whose user code has started (server.c) */
  int shm;                    /* the client takes shared-memory payloads */
  int chunks;                 /* the client takes frame payloads in chunks */
  int doubles_checked;        /* no float64 of its payloads has R's NA bit pattern, says the client */
  int level;                  /* index in the stack (rb_io_shared.levels) */
  int stop;                   /* RB_STOP_* taken when it left the stack */
  void *frames;               /* zmq_msg_t[nframes]: payload frames after the envelope */
  int nframes;
  struct rb_request *outer;   /* request this one is nested in */
} rb_request;

/* ---- request.c (main thread) ------------------------------------------- */
void rb_requests_bind(rb_io_shared *shared);
rb_request *rb_active_request(void);     /* innermost request in progress, or NULL */
void rb_request_push(rb_request *rq);
void rb_request_pop(rb_request *rq);     /* marks it done */
int rb_request_stop(const rb_request *rq);   /* RB_STOP_* */
int rb_send_to_client(const rb_request *rq, msgpack_sbuffer *sb);

/* ---- sendbuf.c ------------------------------------------------------------- */
void *rb_sendbuf_get(size_t len, size_t *cap);   /* malloc'd, or the kept buffer */
void rb_sendbuf_put(void *data, void *hint);     /* zmq_free_fn; hint = capacity */
void rb_sendbuf_trim(int all);                   /* drops the kept buffer when idle (or always) */
#define RB_CHUNK_MIN ((size_t)1 << 20)   /* a payload's frames (chunks): at least this big ... */
#define RB_MAX_CHUNKS 64                 /* ... and at most this many */
uint32_t rb_chunk_count(size_t len);     /* the frames a payload of len bytes is sent in */
int rb_sendbuf_frames(zmq_msg_t *f, void *data, size_t len, size_t cap, uint32_t count);

/* ---- shm.c ----------------------------------------------------------------- */
int rb_shm_name_ok(const char *name, size_t n, char kind);
int rb_shm_probe(const char *name, const uint8_t *token, size_t n);
const void *rb_shm_map(const char *name, size_t len, const char **err);
void *rb_shm_map_rw(const char *name, size_t min_len, size_t *size, const char **err);
void *rb_shm_create(size_t len, size_t reserve, char name[RB_SHM_NAME_MAX], int *fd);
int rb_shm_reserve(int fd, uint8_t *base, size_t from, size_t to, int populate);
void rb_shm_sweep(void);
void rb_shm_track(const char *name, const uint8_t *rid, size_t rid_len);
void rb_shm_forget(const uint8_t *rid, size_t rid_len);

/* ---- arena.c ---------------------------------------------------------------- */
#define RB_ARENA_MAGIC "RBARENA1"
#define RB_ARENA_ALIGN 64
#define RB_ARENA_HEADER 4096
#define RB_ARENA_STATES 64       /* offset of the slot states in the header */
#define RB_ARENA_SLOTS 64
#define RB_ARENA_RESERVE_MAX ((size_t)1 << 29)   /* the largest payload an arena takes, and the most a client reserves */
typedef struct rb_arena rb_arena;
typedef struct {
  rb_arena *arena;
  uint8_t *data;
  uint64_t off;
  int fd;                  /* >= 0: the region has fresh pages, best written through this fd */
  uint32_t slot;
  char name[RB_SHM_NAME_MAX];
} rb_arena_ref;
rb_arena *rb_arena_attach(const char *name, const uint8_t *rid, size_t rid_len, const char **err);
const uint8_t *rb_arena_region(rb_arena *a, uint64_t off, uint64_t len, uint32_t slot, const char **err);
void rb_arena_hold(rb_arena *a);
void rb_arena_release(rb_arena *a, uint32_t slot);   /* the reader is done with a region */
void rb_arena_unhold(rb_arena *a);
int rb_arena_alloc(const uint8_t *rid, size_t rid_len, size_t len, rb_arena_ref *out);
const char *rb_arena_reserve(const uint8_t *rid, size_t rid_len, size_t len);   /* the arena's name, or NULL */
void rb_arenas_detach(const uint8_t *rid, size_t rid_len);

#endif
