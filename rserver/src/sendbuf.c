/* Reuse of large payload buffers sent to clients. A fresh 80 MB malloc costs
 * tens of milliseconds of page faults (the kernel zeroes every page), far more
 * than writing the payload; keeping the last buffer zmq hands back lets the
 * next payload of a similar size be written into memory already mapped. One
 * buffer is kept, and dropped after RB_SENDBUF_IDLE seconds unused. zmq frees
 * sent frames from its I/O thread, hence the mutex. No R API. */
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
