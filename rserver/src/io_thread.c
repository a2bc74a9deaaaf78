/* The client-facing ROUTER socket and everything done at it (SPEC §9), and
 * the I/O thread. This file does not include any R header.
 *
 * One thread at a time drives the socket. R's main thread drives it whenever
 * it waits for a request or a callback's reply, so a request goes from the
 * client to R, and R's reply back, without a hand-off between threads. When R
 * has run R code for TAKEOVER seconds without reading the socket, the I/O
 * thread takes it over until R waits again; what R sends meanwhile goes to
 * the I/O thread (the hand-off queue). Whoever drives the socket:
 *  - answers ping, hello and interrupt (so they work while R computes);
 *  - answers malformed or oversized envelopes with an error;
 *  - queues other requests for R (the inbox), by the flow control below;
 *  - watches request deadlines, departed clients and the parent process.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "rserver.h"

#define ORPHAN_GRACE 5.0     /* seconds an orphan may take to shut down */
/* How often an idle worker looks at its timers: a private worker's clients
 * heartbeat it anyway; a session (no heartbeats) is woken by its parent's
 * exit through a pidfd, so it needs to look only rarely (fallback: 2 s). */
#define IDLE_TICK 0.5
#define SESSION_IDLE_TICK 10.0
#define SESSION_IDLE_TICK_NO_PIDFD 2.0
#define MAX_CLIENTS 4096     /* clients with state in the worker at once */
#define SOCKETS_PER_CLIENT 4 /* routing ids remembered per client key */
#define RECHECK_EVERY 0.5    /* while some client is unreachable */
/* Flow control (SPEC "Flow control"). A client's requests are forwarded to R
 * at most MAX_IN_FLIGHT at a time; the next MAX_BACKLOG wait here, in order,
 * so that a client that floods cannot queue itself ahead of everyone else;
 * beyond that it gets rbridge_busy_error. */
#define MAX_IN_FLIGHT 16
#define MAX_BACKLOG 10000
/* Messages queued in the socket for one client that it has not read. Past
 * this, R's messages for that client wait here (its out queue), and none of
 * its requests is forwarded; past OUT_MAX_* of them, the I/O thread stops
 * taking R's messages (R waits, as it would for a slow terminal), until the
 * client reads, goes, or has read nothing for the liveness (evicted). Other
 * clients' replies are never held up by it (up to that point). */
#define SEND_HWM 64
#define OUT_MAX_MESSAGES 1000
#define OUT_MAX_BYTES ((size_t)64 << 20)
#define HELD_RETRY_MS 2

/* How long R may run R code before the I/O thread takes the socket over:
 * short enough that a ping or an interrupt is answered at once, long enough
 * that a small call never waits for a thread to wake. */
#define TAKEOVER 0.001
/* R's messages waiting for the I/O thread to send them */
#define HANDOFF_MAX 64

/* A message waiting: a client's request in its backlog or in R's inbox, or
 * R's message in a client's out queue or in the hand-off queue. */
typedef struct queued {
  struct queued *next;
  double arrived;            /* when it was queued */
  size_t bytes;
  int flags;                 /* inbox: RB_ARRIVAL_*; hand-off: FINAL */
  int n;
  zmq_msg_t f[];             /* routing id, envelope, payload frames */
} queued;

typedef struct {
  queued *head, *tail;
  int count;
  size_t bytes;
} msg_queue;

/* A client of the worker: its key and the routing ids of its sockets. */
typedef struct {
  uint8_t rid[SOCKETS_PER_CLIENT][RB_MAX_ROUTING_ID];
  uint8_t rid_len[SOCKETS_PER_CLIENT];
  int n_rids;
  int shm;                   /* its handshake probe proved shared memory */
  int chunks;                /* its handshake asked for payloads in chunks */
  double unreachable_since;  /* 0 = reachable at the last check */
  int in_flight;             /* requests forwarded to R, not yet answered */
  msg_queue backlog;         /* its requests, not yet forwarded */
  msg_queue out;             /* R's messages it could not take yet */
  int evicted;               /* read nothing for the liveness: ignored until it disconnects */
} client_entry;

/* The socket side: touched only by the thread that drives the socket. */
typedef struct {
  rb_io_shared *sh;
  void *router;
  double orphaned_at;
  int parent_fd;             /* pidfd of the watched parent: readable when it exits; -1 = none */
  void *monitor;             /* disconnect events of the ROUTER */
  int monitor_used;          /* read since rb_poll last asked it */
  int wakefd;                /* eventfd: the main thread wants the I/O thread's attention */
  int timerfd;               /* expires when the I/O thread may take the socket over */
  msg_queue inbox;           /* requests for R's main thread, in order */
  double check_at;           /* when to look for clients that are gone; 0 = no need */
  client_entry *clients;     /* clients that may have state in R */
  size_t n_clients;
  int paused;                /* some client's out queue is full: R's messages wait */
  int held_clients;          /* some client has an out queue */
} io_state;

#define FINAL 1   /* hand-off: a request's final reply (its client may send the next) */

static io_state io;

/* Who drives the socket, and what the two threads tell each other; guarded
 * by mu. The I/O thread sleeps in poll() on its eventfd and timerfd: R's main
 * thread arms the timer when it starts R code and the timer is not armed yet;
 * while requests keep coming, the I/O thread wakes once per TAKEOVER to
 * re-arm it (main_runs_r). */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t to_main;
  int io_drives;             /* else R's main thread does */
  int main_busy;             /* R's main thread runs R code: it does not read the socket */
  int main_sending;          /* ... and sends on it itself: the I/O thread keeps off */
  double served_at;          /* when R's main thread last read the socket */
  int timer_armed;           /* the takeover timer has not expired yet */
  int wanted;                /* R's main thread waits to drive the socket again */
  int stopping;
  msg_queue handoff;         /* R's messages for the I/O thread to send */
} own = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, {0}};

static void enqueue(msg_queue *mq, zmq_msg_t *f, int n, double arrived, int flags);
static void to_client(io_state *st, client_entry *c, zmq_msg_t *f, int n, int from_io);
static void close_frames(zmq_msg_t *f, int n);
static client_entry *note_client(io_state *st, const uint8_t *rid, size_t len);
static void clear_queue(msg_queue *mq);

static void free_sbuffer_data(void *data, void *hint) {
  (void)hint;
  free(data);
}

/* Sends [rid, envelope] to a client; never blocks the I/O thread. */
/* Sends [rid, envelope] from this thread to a client; never blocks the I/O
 * thread. Behind what waits in its out queue, like R's messages. */
static void send_to_client(io_state *st, const void *rid, size_t rid_len, msgpack_sbuffer *sb) {
  zmq_msg_t f[2];
  zmq_msg_init_size(&f[0], rid_len);
  memcpy(zmq_msg_data(&f[0]), rid, rid_len);
  size_t n = sb->size;
  zmq_msg_init_data(&f[1], msgpack_sbuffer_release(sb), n, free_sbuffer_data, NULL);
  client_entry *c = rid_len <= RB_MAX_ROUTING_ID ? note_client(st, rid, rid_len) : NULL;
  to_client(st, c, f, 2, 1);
  close_frames(f, 2);
}

static void reply_error(io_state *st, const void *rid, size_t rid_len, uint64_t id,
                        const char *cls, const char *message) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_error_reply(&pk, id, cls, message);
  send_to_client(st, rid, rid_len, &sb);
}

static void reply_pong(io_state *st, const void *rid, size_t rid_len, uint64_t id) {
  rb_io_shared *sh = st->sh;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  pthread_mutex_lock(&sh->mu);
  int depth = sh->busy_depth;
  uint64_t cur = depth > 0 && depth <= RB_MAX_LEVELS ? sh->levels[depth - 1].id : 0;
  char op[RB_OP_MAX];
  memcpy(op, sh->current_op, RB_OP_MAX);
  double since = sh->busy_since;
  pthread_mutex_unlock(&sh->mu);

  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 9, id, "pong");
  rb_pack_kv_str(&pk, "state", depth > 0 ? "busy" : "idle");
  rb_pack_cstr(&pk, "request");
  if (depth > 0) msgpack_pack_uint64(&pk, cur); else msgpack_pack_nil(&pk);
  rb_pack_cstr(&pk, "request_op");
  if (depth > 0) rb_pack_cstr(&pk, op); else msgpack_pack_nil(&pk);
  rb_pack_cstr(&pk, "busy_for");
  msgpack_pack_double(&pk, depth > 0 ? rb_monotonic() - since : 0.0);
  rb_pack_cstr(&pk, "depth");
  msgpack_pack_int(&pk, depth);
  rb_pack_cstr(&pk, "pid");
  msgpack_pack_int64(&pk, (int64_t)getpid());
  send_to_client(st, rid, rid_len, &sb);
}

static void reply_hello(io_state *st, const void *rid, size_t rid_len, const rb_peek *pk_in) {
  if (!pk_in->versions_ok) {
    reply_error(st, rid, rid_len, pk_in->id, "rbridge_protocol_error",
                "no common protocol version: this worker speaks version 1");
    return;
  }
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  /* shared memory is used only when this process can read the client's probe */
  int shm = pk_in->probe_name[0] && rb_shm_probe(pk_in->probe_name, pk_in->probe_token, pk_in->probe_token_len);
  client_entry *c = rid_len <= RB_MAX_ROUTING_ID ? note_client(st, rid, rid_len) : NULL;
  if (c) {
    c->shm = shm;
    c->chunks = pk_in->chunks || st->sh->session;   /* a front relays a session's payloads */
  } else {
    shm = 0;
  }
  rb_pack_header(&pk, 6, pk_in->id, "hello");
  rb_pack_cstr(&pk, "version");
  msgpack_pack_uint8(&pk, RB_PROTOCOL_VERSION);
  rb_pack_cstr(&pk, "worker");
  msgpack_sbuffer_write(&sb, st->sh->worker_info, st->sh->worker_info_len);
  rb_pack_cstr(&pk, "shm");
  if (shm) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
  send_to_client(st, rid, rid_len, &sb);
}

/* Interrupts R. The time is noted, so that R can tell these from a Ctrl-C at
 * its terminal, which stops an idle server. */
static void signal_main(io_state *st) {
  pthread_mutex_lock(&st->sh->mu);
  st->sh->own_interrupt_at = rb_monotonic();
  if (st->sh->unanswered_at == 0) st->sh->unanswered_at = st->sh->own_interrupt_at;
  pthread_mutex_unlock(&st->sh->mu);
  pthread_kill(st->sh->main_thread, SIGINT);
}

static int watched_depth(const rb_io_shared *sh) {
  return sh->busy_depth < RB_MAX_LEVELS ? sh->busy_depth : RB_MAX_LEVELS;
}

static int level_of(const rb_level *lv, const uint8_t *rid, size_t rid_len) {
  return rb_same_client(lv->client, lv->client_len, rid, rid_len);
}

/* Tells request `at` to stop (reason RB_STOP_*), and with it the requests its
 * client made above it (nested in its callbacks; other clients' requests above
 * it are left alone, and it stops when they are done). Returns whether the
 * running request is among them, so that R must be interrupted. Call with mu. */
static int stop_from(rb_io_shared *sh, int at, int reason) {
  int depth = watched_depth(sh), top = 0;
  const rb_level *owner = &sh->levels[at];
  for (int i = at; i < depth; i++) {
    rb_level *lv = &sh->levels[i];
    if (i != at && !rb_same_client(lv->client, lv->client_len, owner->client, owner->client_len)) continue;
    if (lv->stop == RB_STOP_NONE) lv->stop = i == at ? reason : RB_STOP_INTERRUPT;
    if (i == sh->busy_depth - 1) top = 1;
  }
  return top;
}

/* interrupt: only the sender's own requests (its innermost, or `target`). */
static void reply_interrupt(io_state *st, const void *rid, size_t rid_len, const rb_peek *p) {
  rb_io_shared *sh = st->sh;
  int found = 0, running = 0;
  pthread_mutex_lock(&sh->mu);
  for (int i = watched_depth(sh) - 1; i >= 0; i--) {
    rb_level *lv = &sh->levels[i];
    if (!level_of(lv, rid, rid_len) || (p->has_target && lv->id != p->target)) continue;
    found = 1;
    running = stop_from(sh, i, RB_STOP_INTERRUPT);
    break;
  }
  pthread_mutex_unlock(&sh->mu);
  if (running) signal_main(st);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 5, p->id, "result");
  rb_pack_cstr(&pk, "value");
  if (found) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
  rb_pack_cstr(&pk, "warnings");
  msgpack_pack_array(&pk, 0);
  send_to_client(st, rid, rid_len, &sb);
}

/* ---- clients ------------------------------------------------------------- */

static client_entry *find_client(io_state *st, const uint8_t *rid, size_t len) {
  for (size_t i = 0; i < st->n_clients; i++)
    if (rb_same_client(st->clients[i].rid[0], st->clients[i].rid_len[0], rid, len)) return &st->clients[i];
  return NULL;
}

/* The entry of the client that sent from `rid`, added when new; NULL when the
 * table is full. */
static client_entry *note_client(io_state *st, const uint8_t *rid, size_t len) {
  client_entry *c = find_client(st, rid, len);
  if (!c) {
    if (st->n_clients == MAX_CLIENTS) return NULL;
    client_entry *bigger = realloc(st->clients, (st->n_clients + 1) * sizeof *bigger);
    if (!bigger) return NULL;
    st->clients = bigger;
    c = &st->clients[st->n_clients++];
    memset(c, 0, sizeof *c);
  }
  for (int j = 0; j < c->n_rids; j++)
    if (c->rid_len[j] == len && memcmp(c->rid[j], rid, len) == 0) return c;
  int j = c->n_rids < SOCKETS_PER_CLIENT ? c->n_rids++ : SOCKETS_PER_CLIENT - 1;
  memcpy(c->rid[j], rid, len);
  c->rid_len[j] = (uint8_t)len;
  return c;
}

/* Whether a message to `rid` on a ROUTER with ROUTER_MANDATORY can be routed
 * now (it refuses one to a routing id with no connection). The probe is an
 * unsolicited pong with id 0, which clients ignore (SPEC "ping"). */
int rb_reachable(void *router, const uint8_t *rid, size_t len) {
  if (zmq_send(router, rid, len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return errno != EHOSTUNREACH;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 3, 0, "pong");
  zmq_send(router, sb.data, sb.size, ZMQ_DONTWAIT);
  msgpack_sbuffer_destroy(&sb);
  return 1;
}

/* A request this thread makes for R's main thread in a client's name (rid;
 * none for an empty one): an envelope of id 0 with nothing but its op. */
static void internal_request(io_state *st, const void *rid, size_t rid_len, const char *op) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 3, 0, op);
  zmq_msg_t f[2];
  zmq_msg_init_size(&f[0], rid_len);
  memcpy(zmq_msg_data(&f[0]), rid, rid_len);
  size_t n = sb.size;
  zmq_msg_init_data(&f[1], msgpack_sbuffer_release(&sb), n, free_sbuffer_data, NULL);
  enqueue(&st->inbox, f, 2, rb_monotonic(), 0);
  close_frames(f, 2);
}

/* A client is gone: its requests stop (the running one is interrupted, even
 * `repeat {}`), and the main thread frees what it held, through a request
 * made in its name. */
static void client_gone(io_state *st, client_entry *c) {
  rb_io_shared *sh = st->sh;
  int running = 0;
  pthread_mutex_lock(&sh->mu);
  for (int i = 0; i < watched_depth(sh); i++)
    if (level_of(&sh->levels[i], c->rid[0], c->rid_len[0])) {
      running |= stop_from(sh, i, RB_STOP_INTERRUPT);
      break;   /* stop_from covers its requests above */
    }
  pthread_mutex_unlock(&sh->mu);
  if (running) signal_main(st);
  internal_request(st, c->rid[0], c->rid_len[0], "client_gone");
}

static void free_queues(client_entry *c) {
  clear_queue(&c->backlog);
  clear_queue(&c->out);
}

/* After a disconnection: which clients can no longer be reached, and which of
 * those have been unreachable for the grace period (gone). */
static void check_clients(io_state *st) {
  double now = rb_monotonic();
  int waiting = 0;
  for (size_t i = 0; i < st->n_clients;) {
    client_entry *c = &st->clients[i];
    int ok = 0;
    for (int j = 0; j < c->n_rids && !ok; j++) ok = rb_reachable(st->router, c->rid[j], c->rid_len[j]);
    if (ok) c->unreachable_since = 0;
    else if (c->unreachable_since == 0) c->unreachable_since = now;
    if (!ok && now - c->unreachable_since >= RB_CLIENT_GRACE) {
      if (!c->evicted) client_gone(st, c);   /* an evicted one is gone already */
      free_queues(c);
      st->clients[i] = st->clients[--st->n_clients];
      continue;
    }
    waiting |= !ok;
    i++;
  }
  st->check_at = waiting ? now + RECHECK_EVERY : 0;
}

/* Receives the rest of a multipart message so that nothing is left queued. */
static void drain(void *sock) {
  int more;
  size_t sz = sizeof more;
  zmq_msg_t m;
  for (;;) {
    if (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) < 0 || !more) return;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, sock, 0);
    zmq_msg_close(&m);
  }
}

static void close_frames(zmq_msg_t *f, int n) {
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

/* Queues a client's request (frames f[0..n): routing id, envelope, payloads)
 * for R's main thread, with the time it arrived here (the start of its
 * timeout: the time it waits behind other clients' requests counts) and
 * what its client's handshake settled (shared memory, chunks). */
static void forward(io_state *st, zmq_msg_t *f, int n, double arrived, const client_entry *c) {
  enqueue(&st->inbox, f, n, arrived, (c->shm ? RB_ARRIVAL_SHM : 0) | (c->chunks ? RB_ARRIVAL_CHUNKS : 0));
}

/* Moves frames f[0..n) to the end of a queue. */
static void enqueue(msg_queue *mq, zmq_msg_t *f, int n, double arrived, int flags) {
  queued *q = malloc(sizeof *q + (size_t)n * sizeof(zmq_msg_t));
  if (!q) return;   /* out of memory: the message is lost, like one the kernel dropped */
  q->next = NULL;
  q->arrived = arrived;
  q->flags = flags;
  q->n = n;
  q->bytes = 0;
  for (int i = 0; i < n; i++) {
    zmq_msg_init(&q->f[i]);
    zmq_msg_move(&q->f[i], &f[i]);
    q->bytes += zmq_msg_size(&q->f[i]);
  }
  if (mq->tail) mq->tail->next = q; else mq->head = q;
  mq->tail = q;
  mq->count++;
  mq->bytes += q->bytes;
}

/* Detaches the head of a queue (not empty). */
static queued *take_head(msg_queue *mq) {
  queued *q = mq->head;
  mq->head = q->next;
  if (!mq->head) mq->tail = NULL;
  mq->count--;
  mq->bytes -= q->bytes;
  return q;
}

static void pop_queued(msg_queue *mq) {
  queued *q = take_head(mq);
  for (int i = 0; i < q->n; i++) zmq_msg_close(&q->f[i]);
  free(q);
}

static void clear_queue(msg_queue *mq) {
  while (mq->head) pop_queued(mq);
}

/* Forwards a client's waiting requests while it has room in flight and
 * reads its replies. */
static void pump(io_state *st, client_entry *c) {
  while (c->backlog.head && c->in_flight < MAX_IN_FLIGHT && !c->evicted && !c->out.head) {
    queued *q = c->backlog.head;
    forward(st, q->f, q->n, q->arrived, c);
    pop_queued(&c->backlog);
    c->in_flight++;
  }
}

/* Whether the request R is running is this client's. */
static int runs_on_top(io_state *st, const client_entry *c) {
  rb_io_shared *sh = st->sh;
  pthread_mutex_lock(&sh->mu);
  int depth = sh->busy_depth, top = 0;
  if (depth > 0 && depth <= RB_MAX_LEVELS)
    top = level_of(&sh->levels[depth - 1], c->rid[0], c->rid_len[0]);
  pthread_mutex_unlock(&sh->mu);
  return top;
}

static void on_client_message(io_state *st) {
  static zmq_msg_t f[RB_MAX_FRAMES];   /* only this thread runs here */
  const rb_op *op;
  int n = 0, more = 1;
  size_t sz = sizeof more;
  while (more && n < RB_MAX_FRAMES) {
    zmq_msg_init(&f[n]);
    if (zmq_msg_recv(&f[n], st->router, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&f[n]); break; }
    n++;
    zmq_getsockopt(st->router, ZMQ_RCVMORE, &more, &sz);
  }
  if (n == 0) return;
  const void *rid = zmq_msg_data(&f[0]);
  size_t rid_len = zmq_msg_size(&f[0]);
  if (more) {
    drain(st->router);
    reply_error(st, rid, rid_len, 0, "rbridge_protocol_error", "too many frames in one message");
    close_frames(f, n);
    return;
  }
  if (n < 2) {
    reply_error(st, rid, rid_len, 0, "rbridge_protocol_error", "the message has no envelope frame");
    close_frames(f, n);
    return;
  }
  const void *env = zmq_msg_data(&f[1]);
  size_t env_len = zmq_msg_size(&f[1]);
  const char *err = NULL;
  rb_peek pk;
  memset(&pk, 0, sizeof pk);
  if (env_len > st->sh->max_envelope) {
    char msg[160];
    snprintf(msg, sizeof msg, "the envelope has %zu bytes, more than the limit of %zu",
             env_len, st->sh->max_envelope);
    reply_error(st, rid, rid_len, 0, "rbridge_limit_error", msg);
  } else if (mp_validate(env, env_len, RB_MAX_DEPTH, &err) ||
             rb_peek_envelope(env, env_len, &pk, &err)) {
    char msg[200];
    snprintf(msg, sizeof msg, "malformed envelope: %s", err);
    /* answer to the request id when it could be read, so the sender can match it */
    reply_error(st, rid, rid_len, pk.has_id ? pk.id : 0, "rbridge_protocol_error", msg);
  } else if (strcmp(pk.op, "ping") == 0) {
    reply_pong(st, rid, rid_len, pk.id);
  } else if (strcmp(pk.op, "hello") == 0) {
    reply_hello(st, rid, rid_len, &pk);   /* notes the client */
  } else if (strcmp(pk.op, "interrupt") == 0) {
    reply_interrupt(st, rid, rid_len, &pk);
  } else if ((op = rb_find_op(pk.op)) != NULL && op->place != RB_OP_IO) {
    client_entry *c = rid_len <= RB_MAX_ROUTING_ID ? note_client(st, rid, rid_len) : NULL;
    int is_reply = op->place == RB_OP_REPLY;
    double now = rb_monotonic();
    if (!c) {
      reply_error(st, rid, rid_len, pk.id, "rbridge_limit_error", "the worker has too many clients");
    } else if (c->evicted) {
      /* ignored: it reads nothing */
    } else if (is_reply || (c->in_flight < MAX_IN_FLIGHT && !c->backlog.head && !c->out.head) ||
               (pk.has_parent && c->in_flight < MAX_IN_FLIGHT + RB_MAX_LEVELS && runs_on_top(st, c))) {
      /* replies to callbacks, and calls made from inside a callback of its
       * running request (as deep as callbacks nest), are not held back */
      forward(st, f, n, now, c);
      if (!is_reply) c->in_flight++;
    } else if (c->backlog.count < MAX_BACKLOG) {
      enqueue(&c->backlog, f, n, now, 0);
    } else {
      reply_error(st, rid, rid_len, pk.id, "rbridge_busy_error",
                  "this client has too many requests queued at the worker");
    }
  } else {
    char msg[64];
    snprintf(msg, sizeof msg, "unknown op '%s'", pk.op);
    reply_error(st, rid, rid_len, pk.id, "rbridge_protocol_error", msg);
  }
  close_frames(f, n);  /* frames already sent are empty; closing them is a no-op */
}

/* Sends R's message f[0..n) (routing id first) to its client. Returns 0 when
 * done with it (sent, or dropped: the client is gone), -1 when the client
 * cannot take it yet (SEND_HWM unread messages). */
static int deliver(io_state *st, zmq_msg_t *f, int n) {
  if (zmq_msg_send(&f[0], st->router, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return errno == EAGAIN ? -1 : 0;
  for (int i = 1; i < n; i++)
    if (zmq_msg_send(&f[i], st->router, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) break;
  return 0;
}

/* A client that has read nothing for the liveness while R had messages for
 * it: its requests stop and its state goes (as if it were gone), and what it
 * sends is ignored until it disconnects. R then moves on. */
static void evict(io_state *st, client_entry *c) {
  c->evicted = 1;
  free_queues(c);
  client_gone(st, c);
}

static int out_full(const client_entry *c) {
  return c->out.count >= OUT_MAX_MESSAGES || c->out.bytes >= OUT_MAX_BYTES;
}

/* Sends a message to client `c` (NULL: one the table has no room for, best
 * effort), or queues it behind what waits for it. When the out queue of the
 * client whose request R runs is full, R's messages pause (R waits); the I/O
 * thread's own replies (errors, pongs) to a client that leaves that many
 * unread are dropped instead. */
static void to_client(io_state *st, client_entry *c, zmq_msg_t *f, int n, int from_io) {
  if (!c) {
    deliver(st, f, n);
    return;
  }
  if (c->evicted || (c->out.head && from_io && out_full(c))) return;
  if (!c->out.head && deliver(st, f, n) == 0) return;
  enqueue(&c->out, f, n, rb_monotonic(), 0);   /* in order, behind what waits already */
  st->held_clients = 1;
  if (out_full(c) && runs_on_top(st, c)) st->paused = 1;   /* its running request writes more */
}

/* Sends what waits in the clients' out queues, as far as they take it;
 * evicts a client whose oldest message has waited for the liveness. */
static void flush_out_queues(io_state *st) {
  double now = rb_monotonic();
  int full = 0, waiting = 0;
  for (size_t i = 0; i < st->n_clients; i++) {
    client_entry *c = &st->clients[i];
    if (!c->out.head) continue;
    while (c->out.head && deliver(st, c->out.head->f, c->out.head->n) == 0) pop_queued(&c->out);
    if (c->out.head && now - c->out.head->arrived >= st->sh->liveness) evict(st, c);
    if (!c->out.head) pump(st, c);
    full |= out_full(c) && runs_on_top(st, c);
    waiting |= c->out.head != NULL;
  }
  st->paused = full;
  st->held_clients = waiting;
}

/* R's message f[0..n) (routing id first) to its client; `final` when it is
 * a request's final reply, which lets that client's next request through. */
static void from_main(io_state *st, zmq_msg_t *f, int n, int final) {
  client_entry *c = find_client(st, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
  if (final && c && c->in_flight > 0) c->in_flight--;
  to_client(st, c, f, n, 0);
  if (c && final) pump(st, c);
}

/* A connection closed (a client closed, died, or stopped answering
 * heartbeats). Which client it was is not known here (a file descriptor can
 * be reused by the next connection before this event is read), so every
 * client is checked by its routing ids, shortly after (check_clients). */
static void on_monitor_event(io_state *st) {
  st->monitor_used = 1;
  zmq_msg_t ev, addr;
  zmq_msg_init(&ev);
  zmq_msg_init(&addr);
  if (zmq_msg_recv(&ev, st->monitor, 0) >= 0 && zmq_msg_recv(&addr, st->monitor, 0) >= 0 &&
      zmq_msg_size(&ev) >= 2) {
    uint16_t event;
    memcpy(&event, zmq_msg_data(&ev), 2);
    double soon = rb_monotonic() + 0.1;   /* once libzmq has dropped the route */
    if (event == ZMQ_EVENT_DISCONNECTED && (st->check_at == 0 || st->check_at > soon)) st->check_at = soon;
  }
  zmq_msg_close(&ev);
  zmq_msg_close(&addr);
}

/* Asks the main thread to shut down as if a client had sent "shutdown". */
static void request_shutdown(io_state *st) { internal_request(st, "", 0, "shutdown"); }

/* A private worker's directory (RBRIDGE_OWNED_DIR) holds only plain files. */
static void remove_owned_dir(void) {
  const char *dir = getenv("RBRIDGE_OWNED_DIR");
  if (!dir || !*dir) return;
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(dir);
}

static void check_timers(io_state *st) {
  rb_io_shared *sh = st->sh;
  double now = rb_monotonic();
  int fire = 0;
  pthread_mutex_lock(&sh->mu);
  for (int i = 0; i < watched_depth(sh); i++) {   /* an outer deadline holds while nested requests run */
    rb_level *lv = &sh->levels[i];
    if (lv->deadline > 0 && now >= lv->deadline) {
      lv->deadline = 0;
      fire |= stop_from(sh, i, RB_STOP_TIMEOUT);
    }
  }
  /* R ignores the interrupt (compiled code that never checks): a session ends */
  int unresponsive = sh->interrupt_grace > 0 && sh->unanswered_at > 0 && now - sh->unanswered_at > sh->interrupt_grace &&
                     !pthread_equal(pthread_self(), sh->main_thread);
  pthread_mutex_unlock(&sh->mu);
  if (unresponsive) {
    fprintf(stderr, "rserver: R did not stop within %g s of an interrupt; ending\n", sh->interrupt_grace);
    _exit(RB_EXIT_UNRESPONSIVE);
  }
  if (fire) signal_main(st);
  if (st->check_at > 0 && now >= st->check_at) check_clients(st);

  if (sh->parent_pid > 0 && getppid() != (pid_t)sh->parent_pid) {
    if (st->orphaned_at == 0) {
      st->orphaned_at = now;
      request_shutdown(st);
      signal_main(st);   /* a busy worker stops what it is doing first */
    } else if (now - st->orphaned_at > ORPHAN_GRACE) {
      if (strncmp(sh->bound_endpoint, "ipc://", 6) == 0) unlink(sh->bound_endpoint + 6);
      remove_owned_dir();
      _exit(3);
    }
  }
}

/* The earlier of `until` and a timer set for `at` (0: not set). */
static double sooner(double until, double at) { return at > 0 && at < until ? at : until; }

/* Timers that fire once a grace has passed wake just after it. */
#define PAST 0.01

static int poll_timeout_ms(io_state *st) {
  rb_io_shared *sh = st->sh;
  double tick = sh->heartbeat_ms > 0 ? IDLE_TICK : st->parent_fd >= 0 ? SESSION_IDLE_TICK : SESSION_IDLE_TICK_NO_PIDFD;
  double now = rb_monotonic(), until = now + tick;
  pthread_mutex_lock(&sh->mu);
  for (int i = 0; i < watched_depth(sh); i++) until = sooner(until, sh->levels[i].deadline);
  if (sh->interrupt_grace > 0 && sh->unanswered_at > 0)
    until = sooner(until, sh->unanswered_at + sh->interrupt_grace + PAST);
  pthread_mutex_unlock(&sh->mu);
  if (st->orphaned_at > 0) until = sooner(until, st->orphaned_at + ORPHAN_GRACE + PAST);
  until = sooner(until, st->check_at);
  return until <= now ? 0 : (int)((until - now) * 1000.0) + 1;
}

static void set_int(void *s, int opt, int v) { zmq_setsockopt(s, opt, &v, sizeof v); }

/* One round at the socket: waits up to wait_ms (less when a timer is due;
 * -1: until one is) for the socket, its monitor and extra[0..nextra), and
 * handles what came. Returns rb_poll's count, -1 when a signal came. */
static int serve_step(io_state *st, int wait_ms, zmq_pollitem_t *extra, int nextra) {
  zmq_pollitem_t items[3 + RB_MAX_EXTRA];
  struct pollfd fds[3 + RB_MAX_EXTRA];
  char check[3 + RB_MAX_EXTRA] = {1};   /* the router, used by every message, is always asked */
  if (nextra > RB_MAX_EXTRA) nextra = RB_MAX_EXTRA;
  items[0] = (zmq_pollitem_t){st->router, 0, ZMQ_POLLIN, 0};
  items[1] = (zmq_pollitem_t){st->monitor, 0, ZMQ_POLLIN, 0};
  check[1] = (char)st->monitor_used;
  st->monitor_used = 0;
  int fixed = 2;
  if (st->parent_fd >= 0) items[fixed++] = (zmq_pollitem_t){NULL, st->parent_fd, ZMQ_POLLIN, 0};
  for (int i = 0; i < nextra; i++) items[fixed + i] = extra[i];
  int due = poll_timeout_ms(st);
  if (st->held_clients && due > HELD_RETRY_MS) due = HELD_RETRY_MS;
  if (wait_ms < 0 || wait_ms > due) wait_ms = due;
  int rc = rb_poll(items, check, fds, fixed + nextra, wait_ms);
  if (rc < 0) return -1;
  if (items[0].revents & ZMQ_POLLIN) on_client_message(st);
  if (items[1].revents & ZMQ_POLLIN) on_monitor_event(st);
  if (fixed > 2 && items[2].revents) {   /* the parent exited: stop watching its fd (it stays readable) */
    close(st->parent_fd);
    st->parent_fd = -1;
  }
  for (int i = 0; i < nextra; i++) extra[i].revents = items[fixed + i].revents;
  if (st->held_clients) flush_out_queues(st);
  check_timers(st);
  return rc;
}

/* ---- who drives the socket ------------------------------------------------ */

static void wake_io(void) {
  uint64_t one = 1;
  (void)!write(io.wakefd, &one, sizeof one);
}

/* Whether the I/O thread may take the socket over now (call with own.mu). */
static int takeover_due(void) {
  return own.main_busy && !own.main_sending && !own.io_drives && rb_monotonic() >= own.served_at + TAKEOVER;
}

/* Arms the takeover timer to expire at `at` (call with own.mu). */
static void arm_timer(double at) {
  struct itimerspec t;
  memset(&t, 0, sizeof t);
  t.it_value.tv_sec = (time_t)at;
  t.it_value.tv_nsec = (long)((at - (double)t.it_value.tv_sec) * 1e9);
  timerfd_settime(io.timerfd, TFD_TIMER_ABSTIME, &t, NULL);
  own.timer_armed = 1;
}

/* R runs R code from now on, having read the socket at `now` (call with
 * own.mu): the I/O thread takes the socket over if R still runs at
 * now + TAKEOVER. A timer still armed expires sooner than that, and the I/O
 * thread then re-arms it (io_main): re-arming it here per request would cost
 * more than a small call, as setting the nearest timer reprograms the CPU's
 * timer, which exits a virtual machine. */
static void main_runs_r(double now) {
  own.main_busy = 1;
  own.served_at = now;
  if (!own.timer_armed) arm_timer(now + TAKEOVER);
}

/* R's main thread drives the socket again (call with own.mu): waits for the
 * I/O thread to give it back, which it does once it has sent what R handed it. */
static void take_back(void) {
  if (!own.io_drives) return;
  own.wanted = 1;
  wake_io();
  while (own.io_drives) pthread_cond_wait(&own.to_main, &own.mu);
  own.wanted = 0;
}

/* I/O thread: sends R's messages from the hand-off queue, while no client's
 * out queue is full (then R waits for room), or all of them. */
static void send_handoff(io_state *st, int all) {
  for (;;) {
    pthread_mutex_lock(&own.mu);
    queued *q = own.handoff.head && (all || !st->paused) ? take_head(&own.handoff) : NULL;
    if (q) pthread_cond_broadcast(&own.to_main);   /* room for R's next message */
    pthread_mutex_unlock(&own.mu);
    if (!q) return;
    from_main(st, q->f, q->n, q->flags & FINAL);
    close_frames(q->f, q->n);
    free(q);
  }
}

/* I/O thread: drives the socket until R's main thread wants it back. */
static void drive(io_state *st) {
  zmq_pollitem_t wake = {NULL, st->wakefd, ZMQ_POLLIN, 0};
  for (;;) {
    pthread_mutex_lock(&own.mu);
    int give_back = own.wanted || own.stopping;
    pthread_mutex_unlock(&own.mu);
    send_handoff(st, give_back);
    if (give_back) return;
    if (serve_step(st, -1, &wake, 1) > 0 && (wake.revents & ZMQ_POLLIN)) {
      uint64_t v;
      (void)!read(st->wakefd, &v, sizeof v);
    }
  }
}

/* The I/O thread: asleep while R's main thread reads the socket; takes it
 * over when R has run R code for TAKEOVER without reading it. */
static void *io_main(void *arg) {
  io_state *st = arg;
  zmq_pollitem_t items[2] = {{NULL, st->timerfd, ZMQ_POLLIN, 0}, {NULL, st->wakefd, ZMQ_POLLIN, 0}};
  uint64_t v;
  for (;;) {
    zmq_poll(items, 2, -1);
    int expired = items[0].revents && read(st->timerfd, &v, sizeof v) == sizeof v;
    if (items[1].revents) (void)!read(st->wakefd, &v, sizeof v);
    pthread_mutex_lock(&own.mu);
    if (own.stopping) break;
    if (expired) {
      own.timer_armed = 0;
      /* R began other R code since the timer was set: wait for that one's
       * TAKEOVER (one that is due already waits for R's send: rb_io_send) */
      double at = own.served_at + TAKEOVER;
      if (own.main_busy && !own.io_drives && at > rb_monotonic()) arm_timer(at);
    }
    if (takeover_due()) {
      own.io_drives = 1;
      pthread_mutex_unlock(&own.mu);
      drive(st);
      pthread_mutex_lock(&own.mu);
      own.io_drives = 0;
      pthread_cond_broadcast(&own.to_main);
    }
    pthread_mutex_unlock(&own.mu);
  }
  pthread_mutex_unlock(&own.mu);
  return NULL;
}

/* ---- R's main thread --------------------------------------------------------- */

/* Every option of the client socket, from the server's configuration (SPEC
 * §1 "Liveness", §7): later ones (CURVE keys) belong here too. */
static void configure_router(void *s, const rb_io_shared *sh) {
  const struct { int option, value; } options[] = {
    {ZMQ_ROUTER_MANDATORY, 1},   /* an unroutable message is an error: how departures are probed */
    {ZMQ_LINGER, 0},
    {ZMQ_SNDHWM, SEND_HWM},      /* a client that does not read is held back, never dropped from (deliver) */
    {ZMQ_RCVHWM, RB_CLIENT_RCVHWM},   /* see rserver.h */
    {ZMQ_ROUTER_HANDOVER, 1},    /* a client that reconnects takes its routing id (and its state) back */
    {ZMQ_HEARTBEAT_IVL, sh->heartbeat_ms},
    {ZMQ_HEARTBEAT_TIMEOUT, (int)(sh->liveness * 1000)},
    {ZMQ_HEARTBEAT_TTL, (int)(sh->liveness * 1000)},
  };
  for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) set_int(s, options[i].option, options[i].value);
  zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &sh->max_frame, sizeof sh->max_frame);
}

int rb_io_open(rb_io_shared *sh, char *err, size_t errlen) {
  memset(&io, 0, sizeof io);
  io.sh = sh;
  /* the parent's exit wakes the socket's poll at once (Linux 5.3+); else the idle tick finds it */
  io.parent_fd = sh->parent_pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)sh->parent_pid, 0) : -1;
  if (io.parent_fd >= 0 && getppid() != (pid_t)sh->parent_pid) {   /* gone already, or not our parent */
    close(io.parent_fd);
    io.parent_fd = -1;
  }
  io.router = zmq_socket(sh->zctx, ZMQ_ROUTER);
  io.wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  io.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (!io.router || io.wakefd < 0 || io.timerfd < 0) {
    snprintf(err, errlen, "cannot create the socket: %s", io.router ? strerror(errno) : zmq_strerror(errno));
    goto fail;
  }
  configure_router(io.router, sh);
  if (zmq_bind(io.router, sh->endpoint) < 0) {
    snprintf(err, errlen, "cannot bind %s: %s", sh->endpoint, zmq_strerror(errno));
    goto fail;
  }
  size_t elen = sizeof sh->bound_endpoint;
  zmq_getsockopt(io.router, ZMQ_LAST_ENDPOINT, sh->bound_endpoint, &elen);
  zmq_socket_monitor(io.router, "inproc://rserver-monitor", ZMQ_EVENT_DISCONNECTED);
  io.monitor = zmq_socket(sh->zctx, ZMQ_PAIR);
  io.monitor_used = 1;
  zmq_connect(io.monitor, "inproc://rserver-monitor");

  own.io_drives = own.wanted = own.stopping = own.main_sending = own.timer_armed = 0;   /* a new timerfd */
  main_runs_r(rb_monotonic());
  return 0;

fail:
  if (io.parent_fd >= 0) close(io.parent_fd);
  io.parent_fd = -1;
  if (io.router) zmq_close(io.router);
  if (io.wakefd >= 0) close(io.wakefd);
  if (io.timerfd >= 0) close(io.timerfd);
  return -1;
}

int rb_io_start(pthread_t *tid, char *err, size_t errlen) {
  sigset_t all, old;
  sigfillset(&all);
  /* The thread inherits a mask that blocks every signal, so SIGINT always
   * reaches R's main thread. */
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = pthread_create(tid, NULL, io_main, &io);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the I/O thread: %s", strerror(rc));
    return -1;
  }
  return 0;
}

void rb_io_close(void) {
  set_int(io.router, ZMQ_LINGER, 1000);   /* let the last replies out */
  zmq_socket_monitor(io.router, NULL, 0);
  zmq_close(io.monitor);
  zmq_close(io.router);
  close(io.wakefd);
  close(io.timerfd);
  if (io.parent_fd >= 0) close(io.parent_fd);
  io.parent_fd = -1;
  for (size_t i = 0; i < io.n_clients; i++) free_queues(&io.clients[i]);
  free(io.clients);
  clear_queue(&io.inbox);
  clear_queue(&own.handoff);
  memset(&io, 0, sizeof io);
}

void rb_io_stop(pthread_t tid) {
  pthread_mutex_lock(&own.mu);
  take_back();
  own.stopping = 1;
  wake_io();
  pthread_mutex_unlock(&own.mu);
  pthread_join(tid, NULL);
  rb_io_close();
}

int rb_io_wait(int timeout_ms, zmq_pollitem_t *extra, int nextra, volatile int *interrupt, rb_arrival *req) {
  io_state *st = &io;
  pthread_mutex_lock(&own.mu);
  own.main_busy = 0;
  take_back();
  pthread_mutex_unlock(&own.mu);
  pthread_mutex_lock(&st->sh->mu);
  st->sh->unanswered_at = 0;   /* R answers again */
  pthread_mutex_unlock(&st->sh->mu);
  double until = rb_monotonic() + timeout_ms / 1000.0;
  int rc = 0, polled = 0;   /* the socket is read at least once, even with no time to wait */
  for (;;) {
    if (st->inbox.head) {
      queued *q = take_head(&st->inbox);
      req->arrived = q->arrived;
      req->shm = (q->flags & RB_ARRIVAL_SHM) != 0;
      req->chunks = (q->flags & RB_ARRIVAL_CHUNKS) != 0;
      req->n = q->n;
      req->f = q->f;
      req->hold = q;
      rc = 1;
      break;
    }
    if (interrupt && *interrupt) { rc = -1; break; }   /* e.g. a deadline this thread saw pass */
    double left = until - rb_monotonic();
    if (left <= 0 && polled) break;
    int n = serve_step(st, left <= 0 ? 0 : (int)(left * 1000.0) + 1, extra, nextra), ready = 0;
    polled = 1;
    if (n < 0) { rc = -1; break; }
    for (int i = 0; i < nextra; i++) ready |= extra[i].revents != 0;
    if (ready && !st->inbox.head) { rc = 2; break; }
  }
  pthread_mutex_lock(&own.mu);
  main_runs_r(rb_monotonic());
  pthread_mutex_unlock(&own.mu);
  return rc;
}

void rb_arrival_free(rb_arrival *req) {
  queued *q = req->hold;
  if (!q) return;
  close_frames(q->f, q->n);
  free(q);
  req->hold = NULL;
}

void rb_io_send(zmq_msg_t *f, int n, int final) {
  io_state *st = &io;
  pthread_mutex_lock(&own.mu);
  while (own.io_drives && own.handoff.count >= HANDOFF_MAX) pthread_cond_wait(&own.to_main, &own.mu);
  if (own.io_drives) {
    enqueue(&own.handoff, f, n, rb_monotonic(), final ? FINAL : 0);
    wake_io();
    pthread_mutex_unlock(&own.mu);
    close_frames(f, n);   /* moved: empty */
    return;
  }
  own.main_sending = 1;   /* keeps the I/O thread off the socket while this thread uses it */
  pthread_mutex_unlock(&own.mu);
  from_main(st, f, n, final);
  close_frames(f, n);
  /* the client whose request R runs has its out queue full: R waits until
   * it reads, goes, or is evicted */
  while (st->paused) serve_step(st, HELD_RETRY_MS, NULL, 0);
  pthread_mutex_lock(&own.mu);
  own.main_sending = 0;
  if (takeover_due()) wake_io();   /* its timer expired while this thread sent */
  pthread_mutex_unlock(&own.mu);
}
