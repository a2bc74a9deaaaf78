/* Waiting on ZeroMQ sockets and file descriptors together, as zmq_poll()
 * does, with fewer system calls. zmq_poll asks every ZeroMQ socket for its
 * events (ZMQ_EVENTS: a poll() and a getpid() each) before it sleeps and
 * again when it wakes: per message, for every socket polled, which for the
 * front grows with its sessions. A socket's descriptor (ZMQ_FD) signals
 * commands, not messages, and using a socket may take the command that
 * announced a message; so rb_poll asks a socket when its descriptor is
 * readable, and when the caller says it used it since it was last asked
 * (check[i]), and no other. The clock its deadlines use is here too. No R API. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <zmq.h>
#include "rserver.h"

double rb_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sets it->revents from a socket's ZMQ_EVENTS; whether it is ready. */
static int ask(zmq_pollitem_t *it) {
  int ev = 0;
  size_t sz = sizeof ev;
  if (zmq_getsockopt(it->socket, ZMQ_EVENTS, &ev, &sz) == 0) it->revents = (short)(ev & it->events);
  return it->revents != 0;
}

int rb_poll(zmq_pollitem_t *items, const char *check, struct pollfd *fds, int n, long wait_ms) {
  int ready = 0;
  for (int i = 0; i < n; i++) {
    items[i].revents = 0;
    if (items[i].socket && check[i]) ready += ask(&items[i]);
    size_t sz = sizeof fds[i].fd;
    if (items[i].socket) {
      zmq_getsockopt(items[i].socket, ZMQ_FD, &fds[i].fd, &sz);
      fds[i].events = POLLIN;   /* readable when commands came, whatever events are asked */
    } else {
      fds[i].fd = items[i].fd;
      fds[i].events = (short)((items[i].events & ZMQ_POLLIN ? POLLIN : 0) | (items[i].events & ZMQ_POLLOUT ? POLLOUT : 0));
    }
    fds[i].revents = 0;
  }
  double until = rb_monotonic() + wait_ms / 1000.0;
  for (;;) {
    double left = wait_ms < 0 ? 1 : until - rb_monotonic();   /* wait_ms < 0: no deadline */
    int rc = poll(fds, (nfds_t)n, ready || left <= 0 ? 0 : wait_ms < 0 ? -1 : (int)(left * 1000) + 1);
    if (rc < 0) return ready ? ready : -1;   /* errno tells a signal (EINTR) from an error */
    for (int i = 0; i < n && rc > 0; i++) {
      if (!fds[i].revents) continue;
      if (items[i].socket) {
        if (!items[i].revents) ready += ask(&items[i]);
      } else {
        items[i].revents = (short)((fds[i].revents & POLLIN ? ZMQ_POLLIN : 0) | (fds[i].revents & POLLOUT ? ZMQ_POLLOUT : 0) |
                                   (fds[i].revents & ~(POLLIN | POLLOUT) ? ZMQ_POLLERR : 0));
        ready += items[i].revents != 0;
      }
    }
    if (ready || left <= 0) return ready;   /* a wake-up for commands alone waits on */
  }
}
