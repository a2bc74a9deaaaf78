/* The stack of requests in progress, and what is sent to their clients.
 *
 * Nested requests (made from inside callbacks) stack above the request that
 * made the callback; the innermost one is active: console output goes to its
 * client, and a callback R makes belongs to it. Each level is also published
 * to the I/O thread (rb_io_shared.levels), which sets its deadline and stop.
 * Messages to clients go to the I/O thread over the main thread's PAIR. This
 * file calls no other part of the worker but the I/O thread's clock and the
 * send buffers, so every part may use it (no cycle). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"

extern int R_interrupts_pending;

static struct {
  rb_io_shared *shared;     /* the levels, with the I/O thread */
  void *pair;               /* to the I/O thread */
  rb_request *active;       /* innermost request in progress */
  double spin_until;        /* busy-poll until then: see rb_spin_after_send */
} requests;

void rb_requests_bind(rb_io_shared *shared, void *pair) {
  requests.shared = shared;
  requests.pair = pair;
  requests.active = NULL;
  requests.spin_until = 0;
}

rb_request *rb_active_request(void) { return requests.active; }

/* The request behind a request context (an external pointer R holds). */
rb_request *rb_request_from(SEXP ctx) {
  if (TYPEOF(ctx) != EXTPTRSXP || !R_ExternalPtrAddr(ctx)) Rf_error("rbridge: not a request context");
  return R_ExternalPtrAddr(ctx);
}

/* After sending, poll for the next message without sleeping for a while. */
void rb_spin_after_send(void) { requests.spin_until = rb_monotonic() + rb_spin_seconds; }

/* Consumes the busy-poll window: its end, or 0 when none is open. */
double rb_take_spin_until(void) {
  double until = requests.spin_until;
  requests.spin_until = 0;
  return until;
}

/* ---- sending ---------------------------------------------------------------- */

static void free_data(void *data, void *hint) { (void)hint; free(data); }

int rb_send_retry(void *sock, const void *buf, size_t len, int flags) {
  int rc;
  while ((rc = zmq_send(sock, buf, len, flags)) < 0 && errno == EINTR) {}
  return rc;
}

/* Sends a frame without copying; zmq releases it with release(data, hint). */
static int send_owned(void *data, size_t n, int flags, zmq_free_fn *release, void *hint) {
  zmq_msg_t m;
  if (zmq_msg_init_data(&m, data, n, release, hint)) { release(data, hint); return -1; }
  int rc;
  while ((rc = zmq_msg_send(&m, requests.pair, flags)) < 0 && errno == EINTR) {}
  if (rc < 0) zmq_msg_close(&m);
  return rc;
}

/* Sends [kind + rid, envelope, payload frames...] to the request's client,
 * taking the memory of the buffer and of the payloads. */
static int send_message(const rb_request *rq, msgpack_sbuffer *sb, rb_payload *pl, int npl) {
  size_t n = sb->size;
  void *data = msgpack_sbuffer_release(sb);
  int nframes = 0, rc = 0;
  for (int i = 0; i < npl; i++) {
    if (pl[i].data) nframes++;
    else if (pl[i].shm[0]) rb_shm_track(pl[i].shm, rq->rid, rq->client_len);   /* unlinked later if unread */
  }
  /* the routing id, after a kind byte: 'F' for a request's final reply (which
   * lets the I/O thread forward that client's next request), 'M' otherwise */
  uint8_t head[1 + RB_MAX_ROUTING_ID];
  head[0] = rq->done && !rq->is_reply ? 'F' : 'M';
  memcpy(head + 1, rq->rid, rq->rid_len);
  if (rb_send_retry(requests.pair, head, 1 + rq->rid_len, ZMQ_SNDMORE) < 0) {
    free(data);
    rc = -1;
  } else {
    rc = send_owned(data, n, nframes ? ZMQ_SNDMORE : 0, free_data, NULL);
  }
  for (int i = 0; i < npl; i++) {
    if (!pl[i].data) continue;
    void *cap = (void *)(uintptr_t)pl[i].cap;
    if (rc >= 0) rc = send_owned(pl[i].data, pl[i].len, --nframes ? ZMQ_SNDMORE : 0, rb_sendbuf_put, cap);
    else rb_sendbuf_put(pl[i].data, cap);
    pl[i].data = NULL;
  }
  return rc;
}

int rb_send_to_client(const rb_request *rq, msgpack_sbuffer *sb) { return send_message(rq, sb, NULL, 0); }

int rb_send_encoded(const rb_request *rq, rb_encoder *e) {
  int rc = send_message(rq, &e->sb, e->payloads, e->npayloads);
  for (int i = 0; i < e->npayloads; i++) {   /* handed over */
    e->payloads[i].shm[0] = 0;
    e->payloads[i].arena = NULL;
  }
  e->npayloads = 0;
  return rc;
}

/* ---- the stack -------------------------------------------------------------- */

static void publish_top(void) {
  if (requests.active) memcpy(requests.shared->current_op, requests.active->op, RB_OP_MAX);
}

void rb_request_push(rb_request *rq) {
  rb_io_shared *sh = requests.shared;
  double now = rb_monotonic();
  R_interrupts_pending = 0;    /* a late interrupt meant for an earlier request */
  rq->outer = requests.active;
  requests.active = rq;
  /* from its arrival: the time it waited behind other requests counts */
  rq->deadline = rq->timeout > 0 ? rq->arrived + rq->timeout : 0;
  pthread_mutex_lock(&sh->mu);
  rq->level = sh->busy_depth++;
  if (rq->level == 0) sh->busy_since = now;
  if (rq->level < RB_MAX_LEVELS) {
    rb_level *lv = &sh->levels[rq->level];
    lv->id = rq->id;
    memcpy(lv->client, rq->rid, rq->client_len);
    lv->client_len = rq->client_len;
    lv->deadline = rq->deadline;
    lv->stop = RB_STOP_NONE;
    if (rq->deadline > 0 && now >= rq->deadline) {   /* expired in the queue: it does not start */
      lv->stop = RB_STOP_TIMEOUT;
      lv->deadline = 0;
    }
  }
  publish_top();
  pthread_mutex_unlock(&sh->mu);
}

void rb_request_pop(rb_request *rq) {
  rb_io_shared *sh = requests.shared;
  rq->done = 1;
  if (requests.active != rq) return;   /* cannot happen: replies are sent innermost first */
  requests.active = rq->outer;
  pthread_mutex_lock(&sh->mu);
  if (rq->level < RB_MAX_LEVELS) rq->stop = sh->levels[rq->level].stop;
  sh->busy_depth--;
  publish_top();
  pthread_mutex_unlock(&sh->mu);
}

/* How a request was told to stop (RB_STOP_*), on the stack or after. */
int rb_request_stop(const rb_request *rq) {
  if (rq->is_reply) return RB_STOP_NONE;
  if (rq->done || rq->level >= RB_MAX_LEVELS) return rq->stop;
  pthread_mutex_lock(&requests.shared->mu);
  int stop = requests.shared->levels[rq->level].stop;
  pthread_mutex_unlock(&requests.shared->mu);
  return stop;
}
