/* The front of a server of sessions (protocol/SPEC.md §10): a process of its
 * own, forked from the preloaded R process before any ZeroMQ context exists
 * there, that owns the one public socket. It authenticates clients (CURVE and
 * a ZAP handler), admits them (--max-sessions, the drain), asks the fork
 * server (sessions.c, over `ctl`) for a session per client, and relays each
 * client's messages to and from its session's private ipc socket. Every
 * socket of a client gets its own link to the session, with the client
 * socket's routing id, so the session sees its client exactly as a private
 * worker would. It ends sessions that are idle, whose client is gone, or when
 * the server drains, and tells clients why a session ended. No R API. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>
#include "rserver.h"

#define LINKS_MAX 4            /* sockets per client (SPEC "Clients") */
#define IN_FLIGHT_MAX 64       /* a session's requests tracked for the drain */
#define TOMBSTONES 64          /* ended sessions whose clients are told why */
#define RELAY_BATCH 64         /* messages taken from one socket per round */
#define KILL_AFTER 2.0         /* seconds from SIGTERM to SIGKILL */
#define RECONNECT_MS 2         /* a link connects before its session has bound */
#define LINK_HWM 1000
#define HELD_RETRY 0.002       /* a client that could not take a message */
#define REASON_MAX 2000
#define USER_MAX 320
#define FRONT_HEARTBEAT_MS 10000  /* for clients without heartbeats of their own: those of sessions have a TTL */

typedef struct {
  uint8_t rid[RB_MAX_ROUTING_ID];
  size_t len;
  void *dealer;              /* to the session, with this routing id */
  int used;                  /* used since rb_poll() last asked it */
} link_t;

typedef struct {
  int number;                /* 0: a free slot */
  pid_t pid;                 /* 0 until forked */
  uint8_t key[RB_MAX_ROUTING_ID];   /* the client's key */
  size_t key_len;
  char user[USER_MAX];       /* ZAP user id ("<Z85> <name>"); "" without CURVE */
  link_t links[LINKS_MAX];
  int nlinks;
  uint64_t in_flight[IN_FLIGHT_MAX];
  int n_in_flight;
  double active_at, unreachable_since;
  double term_at;            /* SIGTERM sent (0: not ending) */
  int killed;                /* SIGKILL sent */
  int told;                  /* its client was sent `ended` */
  char reason[REASON_MAX];   /* why it ends */
  zmq_msg_t *held;           /* a message its client could not take yet */
  int nheld;
} session_t;

typedef struct {
  uint8_t key[RB_MAX_ROUTING_ID];
  size_t key_len;
  char reason[REASON_MAX];
} tombstone;

typedef struct {
  const rb_front_config *cfg;
  void *ctx, *router, *zap, *monitor;
  int ctl;
  session_t *sessions;       /* cfg->max_sessions slots */
  int open, next_number;
  tombstone tombs[TOMBSTONES];
  int next_tomb;
  double started, check_at, drain_until;
  long auth_failures, admitted;
  int draining;
} front_state;

static front_state fr;
/* Room for one message at a time: a client's has at most RB_MAX_FRAMES frames
 * after its routing id; a session's grows as needed (its payloads are its
 * client's, and a client takes any number). */
typedef struct {
  zmq_msg_t *f;
  int cap;
  int grows;
} frame_buf;

static zmq_msg_t client_frames[RB_MAX_FRAMES + 1];
static frame_buf from_client = {client_frames, RB_MAX_FRAMES + 1, 0};
static frame_buf from_session = {NULL, 0, 1};

/* ---- paths, shared with the fork server ------------------------------------- */

void rb_session_path(char *out, size_t n, const char *dir, int number, const char *leaf) {
  snprintf(out, n, "%s/s%d%s%s", dir, number, leaf[0] ? "/" : "", leaf);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)flag; (void)ftw;
  remove(path);
  return 0;
}

void rb_remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int rb_ctl_send(int fd, int kind, int number, int pid, int status, const char *text) {
  rb_ctl_msg m;
  memset(&m, 0, sizeof m);
  m.kind = kind;
  m.number = number;
  m.pid = pid;
  m.status = status;
  if (text) snprintf(m.text, sizeof m.text, "%s", text);
  return send(fd, &m, sizeof m, MSG_NOSIGNAL) == (ssize_t)sizeof m ? 0 : -1;
}

/* ---- messages ------------------------------------------------------------------ */

static void close_frames(zmq_msg_t *f, int n) {
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

/* Whether b has room for frame n, growing it if it may. */
static int room_for(frame_buf *b, int n) {
  if (n < b->cap) return 1;
  if (!b->grows) return 0;
  int cap = b->cap ? 2 * b->cap : RB_MAX_FRAMES + 1;
  zmq_msg_t *grown = realloc(b->f, (size_t)cap * sizeof *grown);
  if (!grown) return 0;
  b->f = grown;
  b->cap = cap;
  return 1;
}

/* Takes one whole message from sock into b->f[at..]; *overflow when b had no
 * room for all of it (the rest is dropped). Returns the count, 0 when none
 * was waiting. */
static int recv_message(void *sock, frame_buf *b, int at, int *overflow) {
  int n = at, more = 1;
  size_t sz = sizeof more;
  *overflow = 0;
  while (more) {
    zmq_msg_t extra, *m = room_for(b, n) ? &b->f[n] : &extra;
    zmq_msg_init(m);
    if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) { zmq_msg_close(m); break; }
    if (m == &extra) { zmq_msg_close(m); *overflow = 1; } else n++;
    if (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) < 0) more = 0;
  }
  return n - at;
}

static void free_sb(void *data, void *hint) { (void)hint; free(data); }

/* Sends [rid, packed] to a client, never blocking (a client that cannot take
 * it loses it: these are answers to its own protocol errors). */
static void send_packed(const void *rid, size_t rid_len, msgpack_sbuffer *sb) {
  zmq_msg_t body;
  size_t n = sb->size;
  zmq_msg_init_data(&body, msgpack_sbuffer_release(sb), n, free_sb, NULL);
  if (zmq_send(fr.router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_msg_send(&body, fr.router, ZMQ_DONTWAIT) < 0)
    zmq_msg_close(&body);
}

#define PACKER(sb, pk) msgpack_sbuffer sb; msgpack_packer pk; \
  msgpack_sbuffer_init(&sb); msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write)

static void reply_error(const void *rid, size_t rid_len, uint64_t id, const char *cls, const char *message) {
  PACKER(sb, pk);
  rb_pack_error_reply(&pk, id, cls, message);
  send_packed(rid, rid_len, &sb);
}

/* `ended` (SPEC §10): the client's session is over, and why. */
static void send_ended(const void *rid, size_t rid_len, const char *reason) {
  PACKER(sb, pk);
  rb_pack_header(&pk, 4, 0, "ended");
  rb_pack_kv_str(&pk, "reason", reason);
  send_packed(rid, rid_len, &sb);
}

static void reply_pong(const void *rid, size_t rid_len, uint64_t id) {
  PACKER(sb, pk);
  rb_pack_header(&pk, 5, id, "pong");
  rb_pack_kv_str(&pk, "state", "server");
  rb_pack_cstr(&pk, "pid");
  msgpack_pack_int64(&pk, (int64_t)getpid());
  send_packed(rid, rid_len, &sb);
}

/* ---- sessions ------------------------------------------------------------------ */

static session_t *session_of(const uint8_t *rid, size_t len) {
  size_t key = rb_client_key_len(len);
  for (int i = 0; i < fr.cfg->max_sessions; i++) {
    session_t *s = &fr.sessions[i];
    if (s->number && s->key_len == key && memcmp(s->key, rid, key) == 0) return s;
  }
  return NULL;
}

static session_t *session_numbered(int number) {
  for (int i = 0; i < fr.cfg->max_sessions; i++)
    if (fr.sessions[i].number == number) return &fr.sessions[i];
  return NULL;
}

static void set_int(void *s, int opt, int v) { zmq_setsockopt(s, opt, &v, sizeof v); }

/* The link of the client socket `rid` to its session, made (and connected)
 * when new; NULL when the client has LINKS_MAX sockets already. */
static link_t *link_of(session_t *s, const uint8_t *rid, size_t len) {
  for (int i = 0; i < s->nlinks; i++)
    if (s->links[i].len == len && memcmp(s->links[i].rid, rid, len) == 0) return &s->links[i];
  if (s->nlinks == LINKS_MAX) return NULL;
  void *d = zmq_socket(fr.ctx, ZMQ_DEALER);
  if (!d) return NULL;
  char ep[1200], path[1100];
  rb_session_path(path, sizeof path, fr.cfg->dir, s->number, "socket");
  snprintf(ep, sizeof ep, "ipc://%s", path);
  zmq_setsockopt(d, ZMQ_ROUTING_ID, rid, len);
  set_int(d, ZMQ_LINGER, 0);
  set_int(d, ZMQ_RECONNECT_IVL, RECONNECT_MS);   /* the session binds a moment after the fork */
  set_int(d, ZMQ_SNDHWM, LINK_HWM);
  set_int(d, ZMQ_RCVHWM, LINK_HWM);
  if (zmq_connect(d, ep) < 0) { zmq_close(d); return NULL; }
  link_t *l = &s->links[s->nlinks++];
  memcpy(l->rid, rid, len);
  l->len = len;
  l->dealer = d;
  l->used = 1;
  return l;
}

/* Relays a client's message f[1..n) (after its routing id) on its link:
 * -1, with nothing sent, when the session's queue is full. */
static int relay(link_t *l, zmq_msg_t *f, int n) {
  l->used = 1;
  if (zmq_msg_send(&f[1], l->dealer, ZMQ_DONTWAIT | (n > 2 ? ZMQ_SNDMORE : 0)) < 0) return -1;
  for (int i = 2; i < n; i++) zmq_msg_send(&f[i], l->dealer, i + 1 < n ? ZMQ_SNDMORE : 0);
  return 0;
}

static void drop_held(session_t *s) {
  if (!s->held) return;
  close_frames(s->held, s->nheld);
  free(s->held);
  s->held = NULL;
  s->nheld = 0;
}

static void tell_client(session_t *s) {
  if (s->told || !s->reason[0]) return;
  s->told = 1;
  for (int i = 0; i < s->nlinks; i++) send_ended(s->links[i].rid, s->links[i].len, s->reason);
}

/* Ends a session: its client is told why, and its process is asked to exit
 * (SIGTERM, then SIGKILL after KILL_AFTER, or at once with `now`). */
static void end_session(session_t *s, const char *reason, int now) {
  if (!s->reason[0]) snprintf(s->reason, sizeof s->reason, "%s", reason);
  tell_client(s);
  if (s->term_at == 0) s->term_at = rb_monotonic();
  if (s->pid > 0 && !s->killed) {
    if (now) s->killed = 1;
    kill(s->pid, now ? SIGKILL : SIGTERM);
  }
}

static void bury(session_t *s) {
  tombstone *t = &fr.tombs[fr.next_tomb++ % TOMBSTONES];
  memcpy(t->key, s->key, s->key_len);
  t->key_len = s->key_len;
  snprintf(t->reason, sizeof t->reason, "%s", s->reason[0] ? s->reason : "the session has ended");
  for (int i = 0; i < s->nlinks; i++) zmq_close(s->links[i].dealer);
  drop_held(s);
  memset(s, 0, sizeof *s);
  fr.open--;
}

static const tombstone *tomb_of(const uint8_t *rid, size_t len) {
  size_t key = rb_client_key_len(len);
  for (int i = 0; i < TOMBSTONES; i++)
    if (fr.tombs[i].key_len == key && memcmp(fr.tombs[i].key, rid, key) == 0) return &fr.tombs[i];
  return NULL;
}

/* A session's process exited (from the fork server): status as waitpid's,
 * tail its last output. */
static void on_exited(int number, int status, const char *tail) {
  session_t *s = session_numbered(number);
  if (!s) return;
  if (!s->reason[0] && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    char why[256];
    if (WIFEXITED(status) && WEXITSTATUS(status) == RB_EXIT_UNRESPONSIVE)
      snprintf(why, sizeof why, "R did not stop within %g s of an interrupt (--interrupt-grace), so the "
               "session was ended", fr.cfg->interrupt_grace);
    else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU)
      snprintf(why, sizeof why, "the session used its CPU limit of %g s (--session-cpu)", fr.cfg->session_cpu);
    else if (WIFSIGNALED(status))
      snprintf(why, sizeof why, "the session's R process was killed by signal %d (%s)", WTERMSIG(status),
               strsignal(WTERMSIG(status)));
    else
      snprintf(why, sizeof why, "the session's R process exited with status %d", WEXITSTATUS(status));
    snprintf(s->reason, sizeof s->reason, "%s%s%s", why, tail[0] ? "; its last output:\n" : "", tail);
  }
  tell_client(s);
  bury(s);
}

/* A hello from a client without a session: a new session, or ServerBusy. */
static void admit(const uint8_t *rid, size_t rid_len, const char *user, zmq_msg_t *f, int n, uint64_t id) {
  char why[200];
  session_t *s = NULL;
  for (int i = 0; i < fr.cfg->max_sessions && !s; i++)
    if (!fr.sessions[i].number) s = &fr.sessions[i];
  if (fr.draining || !s) {
    if (fr.draining) snprintf(why, sizeof why, "the server is shutting down");
    else snprintf(why, sizeof why, "the server has its maximum of %d sessions open (--max-sessions)",
                  fr.cfg->max_sessions);
    reply_error(rid, rid_len, id, "rbridge_server_busy", why);
    return;
  }
  memset(s, 0, sizeof *s);
  s->number = ++fr.next_number;
  s->key_len = rb_client_key_len(rid_len);
  memcpy(s->key, rid, s->key_len);
  snprintf(s->user, sizeof s->user, "%s", user);
  s->active_at = rb_monotonic();
  fr.open++;
  fr.admitted++;
  link_t *l = link_of(s, rid, rid_len);
  if (!l || rb_ctl_send(fr.ctl, RB_CTL_FORK, s->number, 0, 0, user) != 0 || relay(l, f, n) < 0) {
    reply_error(rid, rid_len, id, "rbridge_server_busy", "the server could not start a session");
    bury(s);
  }
}

static void note_request(session_t *s, const rb_peek *pk) {
  const rb_op *op = rb_find_op(pk->op);
  if (op && op->place == RB_OP_MAIN && s->n_in_flight < IN_FLIGHT_MAX) s->in_flight[s->n_in_flight++] = pk->id;
}

static void note_reply(session_t *s, const rb_peek *pk) {
  if (strcmp(pk->op, "result") != 0 && strcmp(pk->op, "error") != 0) return;
  for (int i = 0; i < s->n_in_flight; i++)
    if (s->in_flight[i] == pk->id) {
      s->in_flight[i] = s->in_flight[--s->n_in_flight];
      return;
    }
}

static void reply_status(const void *rid, size_t rid_len, uint64_t id);

/* ---- the public socket ---------------------------------------------------------- */

static void on_client_message(void) {
  zmq_msg_t *frames = from_client.f;
  int overflow, n = recv_message(fr.router, &from_client, 0, &overflow);
  if (n == 0) return;
  const uint8_t *rid = zmq_msg_data(&frames[0]);
  size_t rid_len = zmq_msg_size(&frames[0]);
  if (n < 2 || rid_len > RB_MAX_ROUTING_ID) {
    if (n < 2) reply_error(rid, rid_len, 0, "rbridge_protocol_error", "the message has no envelope frame");
    close_frames(frames, n);
    return;
  }
  const char *user = zmq_msg_gets(&frames[1], "User-Id");
  if (!user) user = "";
  rb_peek pk;
  const char *err = NULL;
  memset(&pk, 0, sizeof pk);
  const void *env = zmq_msg_data(&frames[1]);
  size_t env_len = zmq_msg_size(&frames[1]);
  session_t *s = session_of(rid, rid_len);
  /* what goes to a session is validated there: the front only peeks at it
   * (op, id, parent), and validates what it answers itself */
  int ok = env_len <= fr.cfg->max_envelope &&
           (s || mp_validate(env, env_len, RB_MAX_DEPTH, &err) == 0) &&
           rb_peek_envelope(env, env_len, &pk, &err) == 0;
  if (s && strcmp(s->user, user) != 0) {   /* another key claims this client's routing id */
    fr.auth_failures++;
  } else if (overflow) {
    reply_error(rid, rid_len, pk.has_id ? pk.id : 0, "rbridge_protocol_error", "too many frames in one message");
  } else if (ok && strcmp(pk.op, "status") == 0) {
    reply_status(rid, rid_len, pk.id);
  } else if (s) {
    /* while the server drains, requests of calls already in flight (nested
     * in their callbacks) still pass; new ones are refused */
    const rb_op *op = ok ? rb_find_op(pk.op) : NULL;
    int refused = fr.draining && op && op->place == RB_OP_MAIN && !pk.has_parent;
    link_t *l = s->term_at > 0 || refused ? NULL : link_of(s, rid, rid_len);
    if (s->term_at > 0) {
      send_ended(rid, rid_len, s->reason);
    } else if (refused) {
      reply_error(rid, rid_len, pk.id, "rbridge_server_busy", "the server is shutting down");
    } else if (!l) {
      reply_error(rid, rid_len, pk.id, "rbridge_limit_error", "this client has too many sockets");
    } else if (relay(l, frames, n) < 0) {
      reply_error(rid, rid_len, pk.id, "rbridge_busy_error", "the session is not taking messages this fast");
    } else {
      if (ok) note_request(s, &pk);
      s->active_at = rb_monotonic();
    }
  } else if (!ok) {
    char msg[200];
    snprintf(msg, sizeof msg, "malformed envelope: %s", err ? err : "too large");
    reply_error(rid, rid_len, pk.has_id ? pk.id : 0, "rbridge_protocol_error", msg);
  } else if (strcmp(pk.op, "ping") == 0) {
    reply_pong(rid, rid_len, pk.id);
  } else if (strcmp(pk.op, "hello") == 0) {
    admit(rid, rid_len, user, frames, n, pk.id);
  } else {
    const tombstone *t = tomb_of(rid, rid_len);
    if (t) send_ended(rid, rid_len, t->reason);
    else reply_error(rid, rid_len, pk.id, "rbridge_no_session",
                     "this client has no session (no hello, or it has ended): connect again");
  }
  close_frames(frames, n);   /* frames already sent are empty */
}

/* Sends f[0..n) (routing id first) to its client; 0 when done with it (sent,
 * or the client gone for good), -1 when the client cannot take it yet. */
static int deliver(zmq_msg_t *f, int n) {
  if (zmq_msg_send(&f[0], fr.router, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
    return errno == EAGAIN || errno == EHOSTUNREACH ? -1 : 0;
  for (int i = 1; i < n; i++) zmq_msg_send(&f[i], fr.router, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
  return 0;
}

static int flush_held(session_t *s) {
  if (!s->held) return 0;
  if (deliver(s->held, s->nheld) < 0) return -1;
  drop_held(s);
  return 0;
}

/* Messages from a session to its client, until one cannot be delivered yet
 * (then it is held, and this session is not read until it goes). Out of
 * memory for a message's frames, the rest of it is dropped: the client
 * reports the missing frames. */
static void on_session_message(session_t *s, link_t *l) {
  l->used = 1;
  for (int k = 0; k < RELAY_BATCH && !s->held; k++) {
    int overflow, n = recv_message(l->dealer, &from_session, 1, &overflow);
    if (n == 0) return;
    n++;
    zmq_msg_t *frames = from_session.f;
    zmq_msg_init_size(&frames[0], l->len);
    memcpy(zmq_msg_data(&frames[0]), l->rid, l->len);
    rb_peek pk;
    const char *err;
    if (rb_peek_envelope(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), &pk, &err) == 0) note_reply(s, &pk);
    s->active_at = rb_monotonic();
    if (deliver(frames, n) < 0) {
      s->held = malloc((size_t)n * sizeof *s->held);
      if (s->held) {
        for (int i = 0; i < n; i++) { zmq_msg_init(&s->held[i]); zmq_msg_move(&s->held[i], &frames[i]); }
        s->nheld = n;
      }
    }
    close_frames(frames, n);
  }
}

/* ---- liveness, limits, the drain --------------------------------------------------- */

static void on_monitor_event(void) {
  zmq_msg_t ev, addr;
  zmq_msg_init(&ev);
  zmq_msg_init(&addr);
  if (zmq_msg_recv(&ev, fr.monitor, 0) >= 0 && zmq_msg_recv(&addr, fr.monitor, 0) >= 0 && zmq_msg_size(&ev) >= 2) {
    uint16_t event;
    memcpy(&event, zmq_msg_data(&ev), 2);
    if (event == ZMQ_EVENT_DISCONNECTED) fr.check_at = rb_monotonic() + 0.1;
    else fr.auth_failures++;   /* a failed handshake: wrong keys, or plaintext */
  }
  zmq_msg_close(&ev);
  zmq_msg_close(&addr);
}

static void check_sessions(double now) {
  int unreachable = 0, check = fr.check_at > 0 && now >= fr.check_at;
  for (int i = 0; i < fr.cfg->max_sessions; i++) {
    session_t *s = &fr.sessions[i];
    if (!s->number) continue;
    if (s->held && flush_held(s) < 0 && s->unreachable_since == 0) check = 1;
    if (s->term_at > 0) {
      if (!s->killed && s->pid > 0 && now - s->term_at > KILL_AFTER) end_session(s, "", 1);
      continue;
    }
    if (check) {
      int ok = 0;
      for (int j = 0; j < s->nlinks && !ok; j++) ok = rb_reachable(fr.router, s->links[j].rid, s->links[j].len);
      if (ok) s->unreachable_since = 0;
      else if (s->unreachable_since == 0) s->unreachable_since = now;
    }
    if (s->unreachable_since > 0) {
      unreachable = 1;
      if (now - s->unreachable_since >= fr.cfg->client_grace) {
        char why[160];
        snprintf(why, sizeof why, "its client was gone for %g s", fr.cfg->client_grace);
        end_session(s, why, 0);
      }
    } else if (fr.cfg->idle_timeout > 0 && s->n_in_flight == 0 && now - s->active_at >= fr.cfg->idle_timeout) {
      char why[160];
      snprintf(why, sizeof why, "the session was idle for %g s (--idle-timeout)", fr.cfg->idle_timeout);
      end_session(s, why, 0);
    } else if (fr.draining) {
      if (s->n_in_flight == 0) end_session(s, "the server is shutting down", 0);
      else if (now >= fr.drain_until) end_session(s, "the server is shutting down (--drain-timeout passed)", 1);
    }
  }
  if (check) fr.check_at = unreachable ? now + 0.5 : 0;
}

/* ---- status --------------------------------------------------------------------- */

static double proc_cpu(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double proc_rss(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "r");
  long size = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = 0;
    fclose(f);
  }
  return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static const char *state_of(const session_t *s) {
  if (s->term_at > 0) return "ending";
  if (s->pid == 0) return "starting";
  return s->n_in_flight > 0 ? "busy" : "idle";
}

static void reply_status(const void *rid, size_t rid_len, uint64_t id) {
  double now = rb_monotonic();
  PACKER(sb, pk);
  rb_pack_header(&pk, 5, id, "status");
  rb_pack_cstr(&pk, "server");
  msgpack_pack_map(&pk, 8);
  rb_pack_cstr(&pk, "pid");             msgpack_pack_int64(&pk, (int64_t)getppid());
  rb_pack_cstr(&pk, "uptime");          msgpack_pack_double(&pk, now - fr.started);
  rb_pack_cstr(&pk, "sessions_open");   msgpack_pack_int(&pk, fr.open);
  rb_pack_cstr(&pk, "max_sessions");    msgpack_pack_int(&pk, fr.cfg->max_sessions);
  rb_pack_cstr(&pk, "sessions_started"); msgpack_pack_long(&pk, fr.admitted);
  rb_pack_cstr(&pk, "auth_failures");   msgpack_pack_long(&pk, fr.auth_failures);
  rb_pack_cstr(&pk, "draining");        if (fr.draining) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
  rb_pack_cstr(&pk, "curve");           if (fr.cfg->server_secret[0]) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
  rb_pack_cstr(&pk, "sessions");
  msgpack_pack_array(&pk, (size_t)fr.open);
  for (int i = 0; i < fr.cfg->max_sessions; i++) {
    const session_t *s = &fr.sessions[i];
    if (!s->number) continue;
    const char *name = strchr(s->user, ' ');
    msgpack_pack_map(&pk, 7);
    rb_pack_cstr(&pk, "number");  msgpack_pack_int(&pk, s->number);
    rb_pack_cstr(&pk, "pid");     msgpack_pack_int64(&pk, (int64_t)s->pid);
    rb_pack_kv_str(&pk, "key", name ? name + 1 : "");
    rb_pack_kv_str(&pk, "state", state_of(s));
    rb_pack_cstr(&pk, "rss");     msgpack_pack_double(&pk, s->pid ? proc_rss(s->pid) : 0);
    rb_pack_cstr(&pk, "cpu");     msgpack_pack_double(&pk, s->pid ? proc_cpu(s->pid) : 0);
    rb_pack_cstr(&pk, "idle");    msgpack_pack_double(&pk, s->n_in_flight ? 0 : now - s->active_at);
  }
  send_packed(rid, rid_len, &sb);
}

/* ---- the fork server's messages ------------------------------------------------------ */

/* Returns -1 when the fork server is gone. */
static int on_ctl(void) {
  rb_ctl_msg m;
  ssize_t got = recv(fr.ctl, &m, sizeof m, MSG_DONTWAIT);
  if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) return -1;
  if (got != (ssize_t)sizeof m) return 0;
  m.text[sizeof m.text - 1] = '\0';
  session_t *s;
  switch (m.kind) {
  case RB_CTL_FORKED:
    if ((s = session_numbered(m.number)) != NULL) {
      s->pid = m.pid;
      if (s->term_at > 0) kill(s->pid, SIGKILL);
    }
    break;
  case RB_CTL_FORK_FAILED:
    if ((s = session_numbered(m.number)) != NULL) {
      snprintf(s->reason, sizeof s->reason, "the server could not start a session: %s", m.text);
      tell_client(s);
      bury(s);
    }
    break;
  case RB_CTL_EXITED:
    on_exited(m.number, m.status, m.text);
    break;
  case RB_CTL_DRAIN:
    if (!fr.draining) {
      fr.draining = 1;
      fr.drain_until = rb_monotonic() + fr.cfg->drain_timeout;
    }
    break;
  case RB_CTL_DRAIN_NOW:
    fr.draining = 1;
    fr.drain_until = rb_monotonic();
    break;
  }
  return 0;
}

/* ---- start-up and the loop ----------------------------------------------------------- */

static int open_socket(char *err, size_t errlen) {
  const rb_front_config *c = fr.cfg;
  fr.router = zmq_socket(fr.ctx, ZMQ_ROUTER);
  if (!fr.router) { snprintf(err, errlen, "cannot create the socket: %s", zmq_strerror(errno)); return -1; }
  const struct { int option, value; } options[] = {
    {ZMQ_ROUTER_MANDATORY, 1}, {ZMQ_LINGER, 0}, {ZMQ_ROUTER_HANDOVER, 1},
    {ZMQ_RCVHWM, RB_CLIENT_RCVHWM},
    {ZMQ_HEARTBEAT_IVL, FRONT_HEARTBEAT_MS},
    {ZMQ_HEARTBEAT_TIMEOUT, (int)(c->liveness * 1000)}, {ZMQ_HEARTBEAT_TTL, (int)(c->liveness * 1000)},
  };
  for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) set_int(fr.router, options[i].option, options[i].value);
  zmq_setsockopt(fr.router, ZMQ_MAXMSGSIZE, &c->max_frame, sizeof c->max_frame);
  if (c->server_secret[0]) {
    /* fail closed: without a ZAP handler, CURVE would admit any key */
    fr.zap = zmq_socket(fr.ctx, ZMQ_REP);
    if (!fr.zap || zmq_bind(fr.zap, "inproc://zeromq.zap.01") < 0) {
      snprintf(err, errlen, "cannot start the ZAP handler: %s", zmq_strerror(errno));
      return -1;
    }
    set_int(fr.router, RB_ZMQ_ZAP_ENFORCE_DOMAIN, 1);
    zmq_setsockopt(fr.router, ZMQ_ZAP_DOMAIN, "rbridge", 7);
    set_int(fr.router, ZMQ_CURVE_SERVER, 1);
    if (zmq_setsockopt(fr.router, ZMQ_CURVE_SECRETKEY, c->server_secret, 41) < 0) {
      snprintf(err, errlen, "cannot use the server key: %s", zmq_strerror(errno));
      return -1;
    }
  }
  if (zmq_bind(fr.router, c->endpoint) < 0) {
    snprintf(err, errlen, "cannot bind %s: %s", c->endpoint, zmq_strerror(errno));
    return -1;
  }
  zmq_socket_monitor(fr.router, "inproc://rserver-front-monitor",
                     ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
  fr.monitor = zmq_socket(fr.ctx, ZMQ_PAIR);
  zmq_connect(fr.monitor, "inproc://rserver-front-monitor");
  return 0;
}

/* Ends the front: code 0 after a drain, 1 when it could not start, 2 when
 * the fork server died (then nobody else cleans up after the sessions). */
__attribute__((noreturn)) static void finish(int code) {
  int left = 0;
  for (int i = 0; i < fr.cfg->max_sessions; i++)
    if (fr.sessions[i].number && fr.sessions[i].pid > 0) left += kill(fr.sessions[i].pid, SIGKILL) == 0;
  for (int t = 0; left && t < 200; t++) {   /* up to 2 s for them to be gone */
    left = 0;
    for (int i = 0; i < fr.cfg->max_sessions; i++)
      if (fr.sessions[i].number && fr.sessions[i].pid > 0) left += kill(fr.sessions[i].pid, 0) == 0;
    if (left) usleep(10000);
  }
  if (code == 2) {
    rb_shm_sweep();
    rb_remove_tree(fr.cfg->dir);
    if (fr.cfg->r_tempdir[0]) rb_remove_tree(fr.cfg->r_tempdir);
  }
  if (fr.router) {
    set_int(fr.router, ZMQ_LINGER, 500);   /* the last `ended` messages */
    zmq_socket_monitor(fr.router, NULL, 0);
  }
  for (int i = 0; i < fr.cfg->max_sessions; i++) {
    session_t *s = &fr.sessions[i];
    for (int j = 0; j < s->nlinks; j++) zmq_close(s->links[j].dealer);
    drop_held(s);
  }
  if (fr.monitor) zmq_close(fr.monitor);
  if (fr.zap) zmq_close(fr.zap);
  if (fr.router) zmq_close(fr.router);
  zmq_ctx_term(fr.ctx);
  _exit(code);
}

void rb_front_main(const rb_front_config *cfg, int ctl) {
  memset(&fr, 0, sizeof fr);
  fr.cfg = cfg;
  fr.ctl = ctl;
  fr.started = rb_monotonic();
  fr.sessions = calloc((size_t)cfg->max_sessions, sizeof *fr.sessions);
  fr.ctx = zmq_ctx_new();
  char err[1200];
  if (!fr.sessions || !fr.ctx) {
    rb_ctl_send(ctl, RB_CTL_FAILED, 0, 0, 0, "out of memory");
    _exit(1);
  }
  if (open_socket(err, sizeof err) < 0) {
    rb_ctl_send(ctl, RB_CTL_FAILED, 0, 0, 0, err);
    finish(1);
  }
  size_t elen = sizeof err;
  zmq_getsockopt(fr.router, ZMQ_LAST_ENDPOINT, err, &elen);
  rb_ctl_send(ctl, RB_CTL_BOUND, 0, 0, 0, err);

  int cap = 4 + cfg->max_sessions * LINKS_MAX;
  zmq_pollitem_t *items = calloc((size_t)cap, sizeof *items);
  struct pollfd *fds = calloc((size_t)cap, sizeof *fds);
  char *check = calloc((size_t)cap, 1);
  struct { session_t *s; link_t *l; } *who = calloc((size_t)cap, sizeof *who);
  if (!items || !fds || !check || !who) finish(1);
  for (;;) {
    int n = 0;
    /* the router, its monitor and ZAP are asked every time: every message uses the router */
    items[n++] = (zmq_pollitem_t){fr.router, 0, ZMQ_POLLIN, 0};
    items[n++] = (zmq_pollitem_t){fr.monitor, 0, ZMQ_POLLIN, 0};
    items[n++] = (zmq_pollitem_t){NULL, ctl, ZMQ_POLLIN, 0};
    if (fr.zap) items[n++] = (zmq_pollitem_t){fr.zap, 0, ZMQ_POLLIN, 0};
    int fixed = n, held = 0;
    memset(check, 1, (size_t)fixed);
    for (int i = 0; i < cfg->max_sessions; i++) {
      session_t *s = &fr.sessions[i];
      held |= s->held != NULL;
      if (!s->number || s->held) continue;
      for (int j = 0; j < s->nlinks; j++) {
        link_t *l = &s->links[j];
        who[n].s = s;
        who[n].l = l;
        check[n] = (char)l->used;
        l->used = 0;
        items[n++] = (zmq_pollitem_t){l->dealer, 0, ZMQ_POLLIN, 0};
      }
    }
    long wait = fr.draining || fr.check_at > 0 ? 100 : 500;
    if (held) wait = (long)(HELD_RETRY * 1000) + 1;
    if (rb_poll(items, check, fds, n, wait) < 0 && errno != EINTR) finish(1);
    for (int k = 0; k < RELAY_BATCH && (items[0].revents & ZMQ_POLLIN); k++) {
      on_client_message();
      int ev = 0;
      size_t sz = sizeof ev;
      zmq_getsockopt(fr.router, ZMQ_EVENTS, &ev, &sz);
      if (!(ev & ZMQ_POLLIN)) break;
    }
    if (items[1].revents & ZMQ_POLLIN) on_monitor_event();
    if ((items[2].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) && on_ctl() < 0) finish(2);   /* the fork server died */
    if (fr.zap && (items[3].revents & ZMQ_POLLIN)) rb_zap_answer(fr.zap, cfg->allow_dir);
    for (int i = fixed; i < n; i++)
      if ((items[i].revents & ZMQ_POLLIN) && who[i].s->number && who[i].l->dealer == items[i].socket)
        on_session_message(who[i].s, who[i].l);   /* (a slot reused this round has other sockets) */
    check_sessions(rb_monotonic());
    if (fr.draining && fr.open == 0) finish(0);
  }
}
