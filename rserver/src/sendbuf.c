/* Large payload buffers, sent to clients or gathered from their chunks: their
 * reuse, and the chunks they are sent in.
 *
 * A fresh 80 MB malloc costs tens of milliseconds of page faults (the kernel
 * zeroes every page), far more than writing the payload; keeping the last
 * buffer given back (by zmq once sent, by R's garbage collector once no view
 * of a gathered stream is left) lets the next payload of a similar size be
 * written into memory already mapped. One buffer is kept, and dropped after
 * RB_SENDBUF_IDLE seconds unused. zmq frees sent frames from its I/O thread,
 * hence the mutex and the atomic chunk counts. No R API.
 *
 * A large payload goes out in chunks, frames of at least RB_CHUNK_MIN bytes
 * and at most RB_MAX_CHUNKS of them, all pointing into the one buffer (SPEC
 * "Arrow payloads"): with CURVE one 80 MB frame is encrypted, sent and
 * decrypted one step after the other, while chunks let the sender encrypt one
 * while the receiver decrypts the one before; and the receiver's buffers stay
 * small enough to be reused instead of faulted in. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include "rserver.h"

#define RB_SENDBUF_MIN ((size_t)1 << 20)   /* smaller buffers are malloc'd and freed as usual */
#define RB_SENDBUF_IDLE 10.0

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void *kept = NULL;
static size_t kept_cap = 0;
static double kept_since = 0;

void *rb_sendbuf_get(size_t len, size_t *cap) {
  void *p = NULL;
  pthread_mutex_lock(&mu);
  /* not a much bigger buffer than needed: that one is better given back */
  if (kept && len >= RB_SENDBUF_MIN && kept_cap >= len && kept_cap / 4 <= len) {
    p = kept;
    *cap = kept_cap;
    kept = NULL;
  }
  pthread_mutex_unlock(&mu);
  if (!p) {
    p = malloc(len ? len : 1);
    *cap = len;
  }
  return p;
}

/* A zmq free function: hint is the buffer's capacity. */
void rb_sendbuf_put(void *data, void *hint) {
  size_t cap = (size_t)(uintptr_t)hint;
  void *drop = data;
  if (cap >= RB_SENDBUF_MIN) {
    pthread_mutex_lock(&mu);
    drop = kept;
    kept = data;
    kept_cap = cap;
    kept_since = rb_monotonic();
    pthread_mutex_unlock(&mu);
  }
  free(drop);
}

/* Called from the main loop while idle. */
void rb_sendbuf_trim(int all) {
  void *drop = NULL;
  pthread_mutex_lock(&mu);
  if (kept && (all || rb_monotonic() - kept_since > RB_SENDBUF_IDLE)) {
    drop = kept;
    kept = NULL;
  }
  pthread_mutex_unlock(&mu);
  free(drop);
}

/* ---- chunks ----------------------------------------------------------------- */

static size_t chunk_size(size_t len) {
  size_t c = (len + RB_MAX_CHUNKS - 1) / RB_MAX_CHUNKS;
  if (c < RB_CHUNK_MIN) c = RB_CHUNK_MIN;
  return (c + 4095) & ~(size_t)4095;
}

uint32_t rb_chunk_count(size_t len) {
  size_t c = chunk_size(len);
  return len > c ? (uint32_t)((len + c - 1) / c) : 1;
}

typedef struct {
  void *data;
  size_t cap;
  int refs;   /* chunks not yet freed by zmq */
} shared_buf;

static void put_chunk(void *data, void *hint) {
  shared_buf *b = hint;
  (void)data;
  if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    rb_sendbuf_put(b->data, (void *)(uintptr_t)b->cap);
    free(b);
  }
}

/* Makes f[0..count) the frames of a payload buffer from rb_sendbuf_get, which
 * they take over (count: 1, or rb_chunk_count(len)). -1 when out of memory:
 * the buffer is given back and the frames are empty. */
int rb_sendbuf_frames(zmq_msg_t *f, void *data, size_t len, size_t cap, uint32_t count) {
  if (count <= 1) {
    if (zmq_msg_init_data(f, data, len, rb_sendbuf_put, (void *)(uintptr_t)cap) == 0) return 0;
    rb_sendbuf_put(data, (void *)(uintptr_t)cap);
    zmq_msg_init(f);
    return -1;
  }
  shared_buf *b = malloc(sizeof *b);
  if (!b) {
    rb_sendbuf_put(data, (void *)(uintptr_t)cap);
    for (uint32_t i = 0; i < count; i++) zmq_msg_init(&f[i]);
    return -1;
  }
  b->data = data;
  b->cap = cap;
  b->refs = (int)count + 1;   /* + 1 while the frames are being made */
  size_t c = chunk_size(len), at = 0;
  int rc = 0;
  for (uint32_t i = 0; i < count; i++, at += c) {
    size_t n = i + 1 < count ? c : len - at;
    if (rc == 0 && zmq_msg_init_data(&f[i], (char *)data + at, n, put_chunk, b) == 0) continue;
    if (rc == 0)   /* close the frames already made: the message cannot go */
      for (uint32_t k = 0; k < i; k++) zmq_msg_close(&f[k]);
    rc = -1;
    put_chunk(NULL, b);   /* this chunk's reference */
  }
  if (rc < 0)
    for (uint32_t i = 0; i < count; i++) zmq_msg_init(&f[i]);
  put_chunk(NULL, b);
  return rc;
}
