/* The stack of requests in progress, and what is sent to their clients.
 *
 * Nested requests (made from inside callbacks) stack above the request that
 * made the callback; the innermost one is active: console output goes to its
 * client, and a callback R makes belongs to it. Each level is also published
 * to the I/O thread (rb_io_shared.levels), which sets its deadline and stop.
 * Messages to clients go out through the socket side (io_thread.c). This
 * file calls no other part of the worker but the socket side and the send
 * buffers, so every part may use it (no cycle). */
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
  rb_request *active;       /* innermost request in progress */
} requests;

void rb_requests_bind(rb_io_shared *shared) {
  requests.shared = shared;
  requests.active = NULL;
}

rb_request *rb_active_request(void) { return requests.active; }

/* The request behind a request context (an external pointer R holds). */
rb_request *rb_request_from(SEXP ctx) {
  if (TYPEOF(ctx) != EXTPTRSXP || !R_ExternalPtrAddr(ctx)) Rf_error("rbridge: not a request context");
  return R_ExternalPtrAddr(ctx);
}

/* ---- sending ---------------------------------------------------------------- */

static void free_data(void *data, void *hint) { (void)hint; free(data); }

/* Sends [rid, envelope, payload frames...] to the request's client, taking
 * the memory of the buffer and of the payloads (sent without copies). */
static int send_message(const rb_request *rq, msgpack_sbuffer *sb, rb_payload *pl, int npl) {
  size_t n = sb->size;
  void *data = msgpack_sbuffer_release(sb);
  int nframes = 2;
  for (int i = 0; i < npl; i++) {
    if (pl[i].data) nframes += (int)pl[i].nframes;
    else if (pl[i].segment[0]) rb_shm_track(pl[i].segment, rq->rid, rq->client_len);   /* unlinked later if unread */
  }
  zmq_msg_t *f = malloc((size_t)nframes * sizeof *f);
  if (!f || zmq_msg_init_size(&f[0], rq->rid_len)) {
    free(f);
    free(data);
    for (int i = 0; i < npl; i++)
      if (pl[i].data) { rb_sendbuf_put(pl[i].data, (void *)(uintptr_t)pl[i].cap); pl[i].data = NULL; }
    return -1;
  }
  memcpy(zmq_msg_data(&f[0]), rq->rid, rq->rid_len);
  zmq_msg_init_data(&f[1], data, n, free_data, NULL);
  for (int i = 0, k = 2; i < npl; i++) {
    if (!pl[i].data) continue;
    /* out of memory leaves the payload's frames empty: the client reports an
     * undecodable payload rather than waiting for a reply */
    rb_sendbuf_frames(&f[k], pl[i].data, pl[i].len, pl[i].cap, pl[i].nframes);
    k += (int)pl[i].nframes;
    pl[i].data = NULL;
  }
  /* a request's final reply lets the socket side take that client's next request */
  rb_io_send(f, nframes, rq->done && !rq->is_reply);
  free(f);
  return 0;
}

int rb_send_to_client(const rb_request *rq, msgpack_sbuffer *sb) { return send_message(rq, sb, NULL, 0); }

int rb_send_encoded(const rb_request *rq, rb_encoder *e) {
  int rc = send_message(rq, &e->sb, e->payloads, e->npayloads);
  for (int i = 0; i < e->npayloads; i++) {   /* handed over */
    e->payloads[i].segment[0] = 0;
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
