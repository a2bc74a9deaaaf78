/* Shared-memory arenas: one long-lived segment per client and direction, in
 * which payloads are written and read in place (protocol/SPEC.md, "Arenas").
 * A fresh segment per payload costs a page fault for every 4 KiB on both
 * sides, which for 80 MB is slower than the socket; an arena's pages are
 * faulted in once and then reused.
 *
 * Layout: a 4096-byte header (magic, then one u32 state per slot at offset
 * 64), then the data area. The writer allocates a region, sets its slot's
 * state to 1 and sends the region's offset, length and slot; the reader sets
 * the state back to 0 once it no longer needs the region. The writer keeps its
 * own list of regions and trusts the shared header only for those releases.
 * The worker writes into arenas it creates for its clients ('w'), and reads
 * from arenas clients create ('c'), which it maps on first use and unlinks at
 * once. No R API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "rserver.h"

#define MIN_CAPACITY ((size_t)64 << 20)
#define MAX_CAPACITY (2 * RB_ARENA_RESERVE_MAX)

struct rb_arena {
  char name[RB_SHM_NAME_MAX];
  uint8_t rid[RB_MAX_ROUTING_ID];
  size_t rid_len;
  uint8_t *base;
  size_t size;
  int fd;                  /* own: the segment, kept open to reserve more of it */
  size_t reserved;         /* own: bytes reserved so far (rb_shm_reserve) */
  size_t mapped;           /* own: bytes [0, mapped) are mapped in here */
  int own;                 /* created here, for writing */
  int attached;            /* still listed for its client */
  int holds;               /* views of regions in it */
  struct { int used; size_t off, len; } slot[RB_ARENA_SLOTS];
};

static rb_arena **arenas = NULL;
static size_t narenas = 0;

static volatile uint32_t *state_of(rb_arena *a, uint32_t slot) {
  return (volatile uint32_t *)(a->base + RB_ARENA_STATES + 4 * (size_t)slot);
}

static int same_client(const rb_arena *a, const uint8_t *rid, size_t rid_len) {
  return a->rid_len == rid_len && memcmp(a->rid, rid, rid_len) == 0;
}

static void destroy(rb_arena *a) {
  munmap(a->base, a->size);
  if (a->own) {
    shm_unlink(a->name);   /* in case the client never mapped it */
    close(a->fd);
  }
  free(a);
}

static int add(rb_arena *a) {
  rb_arena **na = realloc(arenas, (narenas + 1) * sizeof *na);
  if (!na) return -1;
  arenas = na;
  arenas[narenas++] = a;
  return 0;
}

static void drop(size_t i) {
  rb_arena *a = arenas[i];
  arenas[i] = arenas[--narenas];
  a->attached = 0;
  if (!a->holds) destroy(a);
}

/* ---- reading a client's arena ---- */

rb_arena *rb_arena_attach(const char *name, const uint8_t *rid, size_t rid_len, const char **err) {
  for (size_t i = 0; i < narenas; i++)
    if (!arenas[i]->own && same_client(arenas[i], rid, rid_len) && strcmp(arenas[i]->name, name) == 0) return arenas[i];
  rb_arena *a = calloc(1, sizeof *a);
  if (!a) { *err = "out of memory"; return NULL; }
  void *p = rb_shm_map_rw(name, RB_ARENA_HEADER, &a->size, err);
  if (!p) { free(a); return NULL; }
  a->base = p;
  if (memcmp(a->base, RB_ARENA_MAGIC, 8) != 0 || a->size > ((size_t)1 << 40)) {
    *err = "the shared-memory segment is not an arena";
    munmap(p, a->size);
    free(a);
    return NULL;
  }
  snprintf(a->name, sizeof a->name, "%s", name);
  memcpy(a->rid, rid, rid_len);
  a->rid_len = rid_len;
  a->attached = 1;
  if (add(a)) { *err = "out of memory"; destroy(a); return NULL; }
  return a;
}

const uint8_t *rb_arena_region(rb_arena *a, uint64_t off, uint64_t len, uint32_t slot, const char **err) {
  if (slot >= RB_ARENA_SLOTS || off < RB_ARENA_HEADER || off > a->size || len > a->size - off) {
    *err = "the region lies outside the arena";
    return NULL;
  }
  return a->base + off;
}

void rb_arena_hold(rb_arena *a) { a->holds++; }

/* The reader is done with a region: hand it back to the writer. */
void rb_arena_release(rb_arena *a, uint32_t slot) {
  if (slot >= RB_ARENA_SLOTS) return;
  __atomic_store_n(state_of(a, slot), 0, __ATOMIC_RELEASE);
}

void rb_arena_unhold(rb_arena *a) {
  if (--a->holds == 0 && !a->attached) destroy(a);
}

/* ---- writing into the worker's arena for a client ---- */

/* An arena for a client; only the header is reserved now, the rest as regions
 * first need it (fresh pages cost about a millisecond per MB on a virtual
 * machine: the first payload should not pay for the second), or at once when
 * the client reserves it (rb_arena_reserve). */
static rb_arena *create_own(size_t capacity, const uint8_t *rid, size_t rid_len) {
  rb_arena *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->size = RB_ARENA_HEADER + capacity;
  a->reserved = a->mapped = RB_ARENA_HEADER;
  a->base = rb_shm_create(a->size, a->reserved, a->name, &a->fd);
  if (!a->base) { free(a); return NULL; }
  memcpy(a->base, RB_ARENA_MAGIC, 8);
  memcpy(a->rid, rid, rid_len);
  a->rid_len = rid_len;
  a->own = a->attached = 1;
  if (add(a)) { destroy(a); return NULL; }
  return a;
}

/* Maps in pages written through the file before, by reading a byte of each:
 * the kernel maps sixteen pages to a read fault but one to a write fault. */
static void map_in(const uint8_t *p, size_t len) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < len; i += page) sink ^= p[i];
  (void)sink;
}

/* Takes back the regions the reader released; returns how many are out. */
static int reclaim(rb_arena *a) {
  int n = 0;
  for (uint32_t i = 0; i < RB_ARENA_SLOTS; i++) {
    if (a->slot[i].used && __atomic_load_n(state_of(a, i), __ATOMIC_ACQUIRE) == 0) a->slot[i].used = 0;
    n += a->slot[i].used;
  }
  return n;
}

/* First fit between the regions still out; the slot to use, or -1. */
static int place(rb_arena *a, size_t len, size_t *off) {
  int order[RB_ARENA_SLOTS], n = 0, free_slot = -1;
  reclaim(a);
  for (int i = 0; i < RB_ARENA_SLOTS; i++) {
    if (!a->slot[i].used) { if (free_slot < 0) free_slot = i; continue; }
    int k = n++;   /* insertion sort by offset */
    while (k > 0 && a->slot[order[k - 1]].off > a->slot[i].off) { order[k] = order[k - 1]; k--; }
    order[k] = i;
  }
  if (free_slot < 0) return -1;
  size_t at = RB_ARENA_HEADER;
  for (int k = 0; k <= n; k++) {
    size_t end = k < n ? a->slot[order[k]].off : a->size;
    if (end >= at && end - at >= len) { *off = at; return free_slot; }
    if (k < n) {
      size_t next = (a->slot[order[k]].off + a->slot[order[k]].len + RB_ARENA_ALIGN - 1) / RB_ARENA_ALIGN * RB_ARENA_ALIGN;
      if (next > at) at = next;
    }
  }
  return -1;
}

/* The index of the client's own arena, or narenas. */
static size_t own_of(const uint8_t *rid, size_t rid_len) {
  size_t i = 0;
  while (i < narenas && !(arenas[i]->own && same_client(arenas[i], rid, rid_len))) i++;
  return i;
}

/* A new arena for the client, with room for two payloads of len bytes, in
 * place of its present one (arenas[i], when i < narenas) unless regions of
 * that are still out: NULL then, or when no segment can be made. */
static rb_arena *replace_own(size_t i, const uint8_t *rid, size_t rid_len, size_t len) {
  if (i < narenas) {
    if (reclaim(arenas[i])) return NULL;
    drop(i);
  }
  size_t cap = 2 * len + RB_ARENA_ALIGN > MIN_CAPACITY ? 2 * len + RB_ARENA_ALIGN : MIN_CAPACITY;
  return create_own(cap, rid, rid_len);
}

int rb_arena_alloc(const uint8_t *rid, size_t rid_len, size_t len, rb_arena_ref *out) {
  if (len > RB_ARENA_RESERVE_MAX) return -1;
  size_t i = own_of(rid, rid_len);
  rb_arena *a = i < narenas ? arenas[i] : NULL;
  size_t off;
  int slot = a ? place(a, len, &off) : -1;
  if (slot < 0) {   /* none, or too small */
    if (!(a = replace_own(i, rid, rid_len, len))) return -1;
    rb_shm_track(a->name, rid, rid_len);   /* unlinked if the client never maps it */
    if ((slot = place(a, len, &off)) < 0) return -1;
  }
  out->fd = -1;
  if (off + len > a->reserved) {   /* a full /dev/shm: the caller sends frames instead */
    if (rb_shm_reserve(a->fd, a->base, a->reserved, off + len, 0) < 0) return -1;
    a->reserved = off + len;
    out->fd = a->fd;   /* fresh pages: cheaper written through the file than faulted in */
  } else if (off + len > a->mapped) {
    map_in(a->base + a->mapped, off + len - a->mapped);
    a->mapped = off + len;
  }
  a->slot[slot].used = 1;
  a->slot[slot].off = off;
  a->slot[slot].len = len;
  __atomic_store_n(state_of(a, (uint32_t)slot), 1, __ATOMIC_RELEASE);
  out->arena = a;
  out->data = a->base + off;
  out->off = off;
  out->slot = (uint32_t)slot;
  snprintf(out->name, sizeof out->name, "%s", a->name);
  return 0;
}

/* The reserve op: a new arena for the client's results whose first len data
 * bytes are allocated and mapped in now, so that its first large results are
 * written into pages that exist (80 MB of fresh pages cost about 25 ms on a
 * virtual machine, more than the copy). It replaces the client's arena,
 * unless regions of that are out. Its name, which the client maps at once,
 * or NULL (regions out, or /dev/shm has no room: nothing is kept). Not
 * tracked as a sent segment: its name must outlive the client's next
 * request, and detaching the client unlinks it. */
const char *rb_arena_reserve(const uint8_t *rid, size_t rid_len, size_t len) {
  if (len > RB_ARENA_RESERVE_MAX) return NULL;
  rb_arena *a = replace_own(own_of(rid, rid_len), rid, rid_len, len);
  if (!a) return NULL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t end = RB_ARENA_HEADER + (len + page - 1) / page * page;
  if (end > a->size) end = a->size;
  int got = rb_shm_reserve(a->fd, a->base, a->reserved, end, 1);
  if (got < 0) {
    drop(narenas - 1);   /* create_own appended it */
    return NULL;
  }
  a->reserved = end;
  if (got == 1) a->mapped = end;   /* else (Linux < 5.14) mapped on first write */
  return a->name;
}

/* A client is gone (rid) or the server stops (NULL): forget its arenas. Mapped
 * ones stay mapped while views of them live. */
void rb_arenas_detach(const uint8_t *rid, size_t rid_len) {
  for (size_t i = narenas; i-- > 0;)
    if (!rid || same_client(arenas[i], rid, rid_len)) drop(i);
}
