/* Shared-memory segments for Arrow payloads between processes on one host
 * (protocol/SPEC.md, "Shared memory"). A segment is a POSIX shm object named
 * /rbridge-<c|w><creator pid>-<32 random hex digits>, mode 0600. The receiver
 * maps it and unlinks it at once; the worker also remembers the segments it
 * sent until the client's next request, and unlinks what is left. Segments of
 * dead processes are swept at start-up. No R API. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include "rserver.h"

#define PREFIX "/rbridge-"

int rb_shm_name_ok(const char *name, size_t n, char kind) {
  size_t p = sizeof PREFIX - 1;
  if (n >= RB_SHM_NAME_MAX || n < p + 4 || memcmp(name, PREFIX, p) != 0 || name[p] != kind) return 0;
  size_t digits = 0, hex = 0;
  for (p++; p < n && name[p] >= '0' && name[p] <= '9'; p++) digits++;
  if (!digits || p >= n || name[p++] != '-') return 0;
  for (; p < n && ((name[p] >= '0' && name[p] <= '9') || (name[p] >= 'a' && name[p] <= 'f')); p++) hex++;
  return p == n && hex == 32;
}

/* Opens a segment made by someone else: it must be ours (same user), private
 * (no group or other access) and at least `len` bytes. */
static int open_checked(const char *name, size_t len, int flags, const char **err) {
  int fd = shm_open(name, flags | O_NOFOLLOW, 0);
  if (fd < 0) { *err = "cannot open the shared-memory segment"; return -1; }
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) ||
      (uint64_t)st.st_size < (uint64_t)len) {
    close(fd);
    *err = "the shared-memory segment is not a private segment of the stated size";
    return -1;
  }
  return fd;
}

int rb_shm_probe(const char *name, const uint8_t *token, size_t n) {
  const char *err;
  if (!rb_shm_name_ok(name, strlen(name), 'c')) return 0;
  int fd = open_checked(name, n, O_RDONLY, &err);
  if (fd < 0) return 0;
  uint8_t got[64];
  int ok = n <= sizeof got && pread(fd, got, n, 0) == (ssize_t)n && memcmp(got, token, n) == 0;
  close(fd);
  shm_unlink(name);
  return ok;
}

const void *rb_shm_map(const char *name, size_t len, const char **err) {
  if (!rb_shm_name_ok(name, strlen(name), 'c')) { *err = "invalid shared-memory segment name"; return NULL; }
  int fd = open_checked(name, len, O_RDONLY, err);
  if (fd < 0) return NULL;
  void *p = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : NULL;
  close(fd);
  shm_unlink(name);   /* promptly: the mapping keeps the memory */
  if (p == MAP_FAILED) { *err = "cannot map the shared-memory segment"; return NULL; }
  return p;
}

/* Maps a whole segment made by a client, for reading and writing (arenas:
 * the reader hands regions back through the header). */
void *rb_shm_map_rw(const char *name, size_t min_len, size_t *size, const char **err) {
  if (!rb_shm_name_ok(name, strlen(name), 'c')) { *err = "invalid shared-memory segment name"; return NULL; }
  int fd = open_checked(name, min_len, O_RDWR, err);
  if (fd < 0) return NULL;
  struct stat st;
  void *p = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    *size = (size_t)st.st_size;
    p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  close(fd);
  shm_unlink(name);
  if (p == MAP_FAILED) { *err = "cannot map the shared-memory segment"; return NULL; }
  return p;
}

/* Reserves bytes [from, to) of a segment (fd, mapped at base): fallocate, not
 * only ftruncate, so that a full /dev/shm (64 MB in a default Docker
 * container) fails here, not with SIGBUS on first touch. With populate, the
 * pages are also mapped in, in one call, which costs far less than a fault
 * per page; without, the caller writes most of them through fd. Returns -1
 * when there is no room, 1 when the pages were mapped in, else 0. */
int rb_shm_reserve(int fd, uint8_t *base, size_t from, size_t to, int populate) {
  if (to <= from) return populate;
  if (posix_fallocate(fd, (off_t)from, (off_t)(to - from)) != 0) return -1;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), start = from / page * page;
  if (!populate) return 0;
  if (madvise(base + start, to - start, MADV_POPULATE_WRITE) != 0) {   /* Linux < 5.14: on first touch */
    errno = 0;
    return 0;
  }
  return 1;
}

/* A new segment of `len` bytes, of which the first `reserve` are reserved
 * (rb_shm_reserve). Its fd stays open in *fd when fd is given. */
void *rb_shm_create(size_t len, size_t reserve, char name[RB_SHM_NAME_MAX], int *fd_out) {
  uint8_t rnd[16];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) return NULL;
  int at = snprintf(name, RB_SHM_NAME_MAX, PREFIX "w%ld-", (long)getpid());
  for (int i = 0; i < 16; i++) at += snprintf(name + at, RB_SHM_NAME_MAX - (size_t)at, "%02x", rnd[i]);
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return NULL;
  void *p = MAP_FAILED;
  if (ftruncate(fd, (off_t)len) == 0) p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p != MAP_FAILED && rb_shm_reserve(fd, p, 0, reserve < len ? reserve : len, 1) < 0) {
    munmap(p, len);
    p = MAP_FAILED;
  }
  if (p == MAP_FAILED || !fd_out) close(fd);
  else *fd_out = fd;
  if (p == MAP_FAILED) { shm_unlink(name); return NULL; }
  return p;
}

/* Removes segments whose creator (the pid in the name) no longer exists. */
void rb_shm_sweep(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return;
  struct dirent *e;
  char name[300];   /* d_name is at most 255 bytes */
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, PREFIX + 1, sizeof PREFIX - 2) != 0) continue;
    snprintf(name, sizeof name, "/%s", e->d_name);
    size_t n = strlen(name);
    if (!rb_shm_name_ok(name, n, 'c') && !rb_shm_name_ok(name, n, 'w')) continue;
    long pid = strtol(name + sizeof PREFIX, NULL, 10);
    if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH) shm_unlink(name);
  }
  closedir(d);
}

/* ---- segments sent to clients and not yet known to be consumed ---- */

typedef struct {
  char name[RB_SHM_NAME_MAX];
  uint8_t rid[RB_MAX_ROUTING_ID];
  size_t rid_len;
} sent_segment;

static sent_segment *sent = NULL;
static size_t nsent = 0, capsent = 0;

void rb_shm_track(const char *name, const uint8_t *rid, size_t rid_len) {
  if (nsent == capsent) {
    size_t cap = capsent ? 2 * capsent : 16;
    sent_segment *ns = realloc(sent, cap * sizeof *ns);
    if (!ns) { shm_unlink(name); return; }   /* cannot track it: never leak it */
    sent = ns;
    capsent = cap;
  }
  sent_segment *s = &sent[nsent++];
  snprintf(s->name, sizeof s->name, "%s", name);
  memcpy(s->rid, rid, rid_len);
  s->rid_len = rid_len;
}

/* Unlinks the tracked segments of one client (rid != NULL) or of all. */
void rb_shm_forget(const uint8_t *rid, size_t rid_len) {
  size_t keep = 0;
  for (size_t i = 0; i < nsent; i++) {
    if (!rid || (sent[i].rid_len == rid_len && memcmp(sent[i].rid, rid, rid_len) == 0)) shm_unlink(sent[i].name);
    else sent[keep++] = sent[i];
  }
  nsent = keep;
}
