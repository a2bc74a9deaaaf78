/* The network I/O thread. It owns the client-facing ROUTER socket and never
 * calls the R API (this file does not include any R header).
 *
 *  - ping, hello and interrupt are answered here, so they work while R computes;
 *  - malformed or oversized envelopes get an error reply here;
 *  - everything else is forwarded to R's main thread over an inproc PAIR;
 *  - replies from the main thread are forwarded to the client unchanged;
 *  - request deadlines and the parent process are watched here.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "rserver.h"

#define ORPHAN_GRACE 5.0     /* seconds an orphan may take to shut down */
#define MAX_CLIENTS 4096     /* clients with state in the worker at once */
#define SOCKETS_PER_CLIENT 4 /* routing ids remembered per client key */
/* A client whose sockets have all been unreachable this long is gone: a
 * client that reconnects (with the same routing id) within it keeps its state. */
#define CLIENT_GRACE 2.0
#define RECHECK_EVERY 0.5    /* while some client is unreachable */

/* After forwarding a request (and, on the main thread, after a reply), poll
 * without sleeping for this long: a small call's reply usually comes sooner,
 * and a sleeping thread's wake-up costs tens of microseconds on a VM. */
double rb_spin_seconds = 0.0002;

double rb_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A client of the worker: its key and the routing ids of its sockets. */
typedef struct {
  uint8_t rid[SOCKETS_PER_CLIENT][RB_MAX_ROUTING_ID];
  uint8_t rid_len[SOCKETS_PER_CLIENT];
  int n_rids;
  int shm;                   /* its handshake probe proved shared memory */
  double unreachable_since;  /* 0 = reachable at the last check */
} client_entry;

typedef struct {
  rb_io_shared *sh;
  void *router;
  void *pair;
  double orphaned_at;
  double spin_until;
  void *monitor;             /* disconnect events of the ROUTER */
  double check_at;           /* when to look for clients that are gone; 0 = no need */
  client_entry *clients;     /* clients that may have state in R */
  size_t n_clients;
} io_state;

static int send_arrival(io_state *st, int shm, int flags);
static client_entry *note_client(io_state *st, const uint8_t *rid, size_t len);

static void free_sbuffer_data(void *data, void *hint) {
  (void)hint;
  free(data);
}

/* Sends [rid, envelope] to a client; never blocks the I/O thread. */
static void send_to_client(io_state *st, const void *rid, size_t rid_len, msgpack_sbuffer *sb) {
  zmq_msg_t m;
  if (zmq_send(st->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
    msgpack_sbuffer_destroy(sb);
    return;   /* peer gone (ROUTER_MANDATORY) or queue full */
  }
  size_t n = sb->size;
  void *data = msgpack_sbuffer_release(sb);
  zmq_msg_init_data(&m, data, n, free_sbuffer_data, NULL);
  if (zmq_msg_send(&m, st->router, ZMQ_DONTWAIT) < 0) zmq_msg_close(&m);
}

static void reply_error(io_state *st, const void *rid, size_t rid_len, uint64_t id,
                        const char *cls, const char *message) {
  const char *classes[] = {cls, "rbridge_error", "error", "condition"};
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 5, id, "error");
  rb_pack_cstr(&pk, "error");
  rb_pack_error_body(&pk, classes, 4, message);
  rb_pack_cstr(&pk, "warnings");
  msgpack_pack_array(&pk, 0);
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
  if (c) c->shm = shm;
  else shm = 0;
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

/* Whether a message to `rid` can be routed (ROUTER_MANDATORY refuses one to a
 * routing id with no connection). The message is an unsolicited pong with id
 * 0, which clients ignore (SPEC "ping"). */
static int reachable(io_state *st, const uint8_t *rid, size_t len) {
  if (zmq_send(st->router, rid, len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return errno != EHOSTUNREACH;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 3, 0, "pong");
  zmq_send(st->router, sb.data, sb.size, ZMQ_DONTWAIT);
  msgpack_sbuffer_destroy(&sb);
  return 1;
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
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 3, 0, "client_gone");
  send_arrival(st, 0, 0);
  zmq_send(st->pair, c->rid[0], c->rid_len[0], ZMQ_SNDMORE);
  zmq_send(st->pair, sb.data, sb.size, 0);
  msgpack_sbuffer_destroy(&sb);
}

/* After a disconnection: which clients can no longer be reached, and which of
 * those have been unreachable for the grace period (gone). */
static void check_clients(io_state *st) {
  double now = rb_monotonic();
  int waiting = 0;
  for (size_t i = 0; i < st->n_clients;) {
    client_entry *c = &st->clients[i];
    int ok = 0;
    for (int j = 0; j < c->n_rids && !ok; j++) ok = reachable(st, c->rid[j], c->rid_len[j]);
    if (ok) c->unreachable_since = 0;
    else if (c->unreachable_since == 0) c->unreachable_since = now;
    if (!ok && now - c->unreachable_since >= CLIENT_GRACE) {
      client_gone(st, c);
      st->clients[i] = st->clients[--st->n_clients];
      continue;
    }
    waiting |= !ok;
    i++;
  }
  st->check_at = waiting ? now + RECHECK_EVERY : 0;
}

static int is_main_op(const char *op) {
  static const char *ops[] = {"eval", "call", "get", "assign", "release", "shutdown",
                              "result", "error", NULL};   /* the last two answer callbacks */
  for (int i = 0; ops[i]; i++)
    if (strcmp(op, ops[i]) == 0) return 1;
  return 0;
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

/* Every message to the main thread starts with the time it arrived here
 * (a double, monotonic seconds), so that a request's timeout counts the time
 * it waited in the queue behind other clients' requests, and whether its
 * client's handshake proved shared memory (RB_ARRIVAL_SHM). */
static int send_arrival(io_state *st, int shm, int flags) {
  uint8_t frame[RB_ARRIVAL_FRAME];
  double now = rb_monotonic();
  memcpy(frame, &now, sizeof now);
  frame[sizeof now] = shm ? RB_ARRIVAL_SHM : 0;
  return zmq_send(st->pair, frame, sizeof frame, ZMQ_SNDMORE | flags);
}

static void on_client_message(io_state *st) {
  static zmq_msg_t f[RB_MAX_FRAMES];   /* only this thread runs here */
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
  } else if (is_main_op(pk.op)) {
    /* Never block here: a full queue is reported to the client instead. Once
     * the first frame is accepted, the rest of a multipart message is too. */
    client_entry *c = rid_len <= RB_MAX_ROUTING_ID ? note_client(st, rid, rid_len) : NULL;
    if (!c)
      reply_error(st, rid, rid_len, pk.id, "rbridge_limit_error", "the worker has too many clients");
    else if (send_arrival(st, c->shm, ZMQ_DONTWAIT) < 0)
      reply_error(st, rid, rid_len, pk.id, "rbridge_busy_error", "the worker's request queue is full");
    else {
      for (int i = 0; i < n; i++) zmq_msg_send(&f[i], st->pair, i + 1 < n ? ZMQ_SNDMORE : 0);
      st->spin_until = rb_monotonic() + rb_spin_seconds;
    }
  } else {
    char msg[64];
    snprintf(msg, sizeof msg, "unknown op '%s'", pk.op);
    reply_error(st, rid, rid_len, pk.id, "rbridge_protocol_error", msg);
  }
  close_frames(f, n);  /* frames already sent are empty; closing them is a no-op */
}

/* Forwards one message from the main thread; returns 1 when told to stop. */
static int on_main_message(io_state *st) {
  zmq_msg_t m;
  int more = 1, first = 1, to_client = 1, stop = 0;
  size_t sz = sizeof more;
  while (more) {
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, st->pair, 0) < 0) { zmq_msg_close(&m); return 0; }
    zmq_getsockopt(st->pair, ZMQ_RCVMORE, &more, &sz);
    if (first && zmq_msg_size(&m) == 0) to_client = 0;          /* control message */
    if (!to_client && !first && zmq_msg_size(&m) == 4 && memcmp(zmq_msg_data(&m), "stop", 4) == 0)
      stop = 1;
    if (to_client) {
      if (zmq_msg_send(&m, st->router, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        to_client = 0;   /* peer gone: drop the rest */
      }
    } else {
      zmq_msg_close(&m);
    }
    first = 0;
  }
  return stop;
}

/* A connection closed (a client closed, died, or stopped answering
 * heartbeats). Which client it was is not known here (a file descriptor can
 * be reused by the next connection before this event is read), so every
 * client is checked by its routing ids, shortly after (check_clients). */
static void on_monitor_event(io_state *st) {
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
static void request_shutdown(io_state *st) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 3, 0, "shutdown");
  send_arrival(st, 0, 0);
  zmq_send(st->pair, "", 0, ZMQ_SNDMORE);
  zmq_send(st->pair, sb.data, sb.size, 0);
  msgpack_sbuffer_destroy(&sb);
}

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
  pthread_mutex_unlock(&sh->mu);
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

static int poll_timeout_ms(io_state *st) {
  rb_io_shared *sh = st->sh;
  double now = rb_monotonic(), until = now + 0.5;
  pthread_mutex_lock(&sh->mu);
  for (int i = 0; i < watched_depth(sh); i++)
    if (sh->levels[i].deadline > 0 && sh->levels[i].deadline < until) until = sh->levels[i].deadline;
  pthread_mutex_unlock(&sh->mu);
  if (st->check_at > 0 && st->check_at < until) until = st->check_at;
  return until <= now ? 0 : (int)((until - now) * 1000.0) + 1;
}

static void set_int(void *s, int opt, int v) { zmq_setsockopt(s, opt, &v, sizeof v); }

static void *io_main(void *arg) {
  io_state st;
  memset(&st, 0, sizeof st);
  st.sh = (rb_io_shared *)arg;
  rb_io_shared *sh = st.sh;
  char status[1100];

  st.pair = zmq_socket(sh->zctx, ZMQ_PAIR);
  zmq_connect(st.pair, "inproc://rserver-main");
  st.router = zmq_socket(sh->zctx, ZMQ_ROUTER);
  set_int(st.router, ZMQ_ROUTER_MANDATORY, 1);
  set_int(st.router, ZMQ_LINGER, 0);
  /* No send limit: at the default of 1000 queued messages per client, a burst
   * of output would make sends fail and replies be lost. */
  set_int(st.router, ZMQ_SNDHWM, 0);
  /* a client that reconnects takes its routing id (and its state) back */
  set_int(st.router, ZMQ_ROUTER_HANDOVER, 1);
  set_int(st.router, ZMQ_HEARTBEAT_IVL, RB_HEARTBEAT_MS);
  set_int(st.router, ZMQ_HEARTBEAT_TIMEOUT, (int)(sh->liveness * 1000));
  set_int(st.router, ZMQ_HEARTBEAT_TTL, (int)(sh->liveness * 1000));
  zmq_setsockopt(st.router, ZMQ_MAXMSGSIZE, &sh->max_frame, sizeof sh->max_frame);
  if (zmq_bind(st.router, sh->endpoint) < 0) {
    snprintf(status, sizeof status, "E%s: %s", sh->endpoint, zmq_strerror(errno));
    zmq_send(st.pair, status, strlen(status), 0);
    zmq_close(st.router);
    zmq_close(st.pair);
    return NULL;
  }
  size_t elen = sizeof sh->bound_endpoint;
  zmq_getsockopt(st.router, ZMQ_LAST_ENDPOINT, sh->bound_endpoint, &elen);
  zmq_socket_monitor(st.router, "inproc://rserver-monitor", ZMQ_EVENT_DISCONNECTED);
  st.monitor = zmq_socket(sh->zctx, ZMQ_PAIR);
  zmq_connect(st.monitor, "inproc://rserver-monitor");
  zmq_send(st.pair, "R", 1, 0);

  for (;;) {
    zmq_pollitem_t items[3] = {{st.router, 0, ZMQ_POLLIN, 0}, {st.pair, 0, ZMQ_POLLIN, 0},
                               {st.monitor, 0, ZMQ_POLLIN, 0}};
    int spin = st.spin_until > 0 && rb_monotonic() < st.spin_until;
    int rc = zmq_poll(items, 3, spin ? 0 : poll_timeout_ms(&st));
    if (rc == 0 && spin) continue;
    st.spin_until = 0;
    if (rc < 0 && errno != EINTR) break;
    if (rc > 0 && (items[1].revents & ZMQ_POLLIN) && on_main_message(&st)) break;
    if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) on_client_message(&st);
    if (rc > 0 && (items[2].revents & ZMQ_POLLIN)) on_monitor_event(&st);
    check_timers(&st);
  }
  set_int(st.router, ZMQ_LINGER, 1000);   /* let the last replies out */
  zmq_socket_monitor(st.router, NULL, 0);
  zmq_close(st.monitor);
  zmq_close(st.router);
  zmq_close(st.pair);
  free(st.clients);
  return NULL;
}

int rb_io_start(rb_io_shared *sh, pthread_t *tid, char *err, size_t errlen) {
  sigset_t all, old;
  sigfillset(&all);
  /* The thread inherits a mask that blocks every signal, so SIGINT always
   * reaches R's main thread. */
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = pthread_create(tid, NULL, io_main, sh);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the I/O thread: %s", strerror(rc));
    return -1;
  }
  return 0;
}
