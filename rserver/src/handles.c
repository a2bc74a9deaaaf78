/* The handle table: R objects held alive on behalf of clients.
 *
 * Objects live in one preserved R list; a handle id is (generation << 32) | slot.
 * The generation of a slot changes on every release, so a stale id never
 * reaches a newer object that reuses the slot. Release is O(1); R's own
 * precious list is not used per object because its release is O(n).
 * Each handle records the client it was made for (an index into a table of
 * client keys): only that client can use or release it, and its handles are
 * freed when it disappears. */
#include <stdlib.h>
#include <string.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

static SEXP table = NULL;        /* VECSXP, preserved */
static uint32_t *generation = NULL;
static uint32_t *free_slots = NULL;
static uint32_t *owner = NULL;           /* client index per slot, 0 = none */

typedef struct { uint8_t rid[RB_MAX_ROUTING_ID]; size_t len; } client_id;
static client_id *clients = NULL;        /* clients[i - 1] is client index i */
static size_t n_clients = 0;
static size_t capacity = 0, n_free = 0, n_live = 0, next_unused = 0;

static void grow(void) {
  size_t cap = capacity ? capacity * 2 : 64;
  if (cap > UINT32_MAX) Rf_error("rbridge: the handle table is full");
  SEXP bigger = PROTECT(Rf_allocVector(VECSXP, (R_xlen_t)cap));
  for (size_t i = 0; i < capacity; i++) SET_VECTOR_ELT(bigger, (R_xlen_t)i, VECTOR_ELT(table, (R_xlen_t)i));
  uint32_t *gen = realloc(generation, cap * sizeof *gen);
  if (!gen) Rf_error("rbridge: out of memory growing the handle table");
  generation = gen;
  uint32_t *fr = realloc(free_slots, cap * sizeof *fr);
  if (!fr) Rf_error("rbridge: out of memory growing the handle table");
  free_slots = fr;
  uint32_t *ow = realloc(owner, cap * sizeof *ow);
  if (!ow) Rf_error("rbridge: out of memory growing the handle table");
  owner = ow;
  for (size_t i = capacity; i < cap; i++) generation[i] = 1;
  R_PreserveObject(bigger);
  if (table) R_ReleaseObject(table);
  table = bigger;
  capacity = cap;
  UNPROTECT(1);
}

/* The index of a client key in the client table (added when new); 0 for
 * none. Entries of clients that are gone are reused (len 0). */
static uint32_t client_index(const uint8_t *key, size_t len, int add) {
  size_t unused = n_clients;
  if (len == 0) return 0;
  for (size_t i = 0; i < n_clients; i++) {
    if (clients[i].len == len && memcmp(clients[i].rid, key, len) == 0) return (uint32_t)(i + 1);
    if (clients[i].len == 0 && unused == n_clients) unused = i;
  }
  if (!add) return 0;
  if (unused == n_clients) {
    client_id *bigger = realloc(clients, (n_clients + 1) * sizeof *bigger);
    if (!bigger) return 0;    /* untracked: the handle then lives until released */
    clients = bigger;
    n_clients++;
  }
  memcpy(clients[unused].rid, key, len);
  clients[unused].len = len;
  return (uint32_t)(unused + 1);
}

/* Whether request `rq` may use the handle in `slot`: one made for its client
 * (or for none). Other clients' handles look released. */
static int usable(size_t slot, const rb_request *rq) {
  return owner[slot] == 0 || !rq || owner[slot] == client_index(rq->rid, rq->client_len, 0);
}

uint64_t rb_handle_put(SEXP x, const rb_request *rq) {
  size_t slot;
  if (n_free > 0) slot = free_slots[--n_free];
  else {
    if (next_unused == capacity) grow();
    slot = next_unused++;
  }
  SET_VECTOR_ELT(table, (R_xlen_t)slot, x);
  owner[slot] = rq ? client_index(rq->rid, rq->client_len, 1) : 0;
  n_live++;
  return ((uint64_t)generation[slot] << 32) | slot;
}

static int lookup(uint64_t id, size_t *slot) {
  *slot = (size_t)(id & 0xffffffffu);
  uint32_t gen = (uint32_t)(id >> 32);
  return *slot < next_unused && generation[*slot] == gen;
}

SEXP rb_handle_get(uint64_t id, const rb_request *rq) {
  size_t slot;
  if (!lookup(id, &slot) || !usable(slot, rq))
    Rf_error("rbridge: handle %llu is not live (released, or from another worker)",
             (unsigned long long)id);
  return VECTOR_ELT(table, (R_xlen_t)slot);
}

int rb_handle_release(uint64_t id, const rb_request *rq) {
  size_t slot;
  if (!lookup(id, &slot) || !usable(slot, rq)) return 0;
  SET_VECTOR_ELT(table, (R_xlen_t)slot, R_NilValue);
  owner[slot] = 0;
  generation[slot] = generation[slot] == UINT32_MAX ? 1 : generation[slot] + 1;
  free_slots[n_free++] = (uint32_t)slot;
  n_live--;
  return 1;
}

size_t rb_handle_count(void) { return n_live; }

/* Releases every handle made for the client with this routing id. */
size_t rb_handle_release_client(const uint8_t *rid, size_t len) {
  uint32_t c = client_index(rid, len, 0);
  size_t n = 0;
  if (c == 0) return 0;
  for (size_t slot = 0; slot < next_unused; slot++)
    if (owner[slot] == c)   /* reset to 0 on release, so this slot is live */
      n += (size_t)rb_handle_release(((uint64_t)generation[slot] << 32) | slot, NULL);
  clients[c - 1].len = 0;   /* the entry can be reused */
  return n;
}

SEXP C_handle_count(void) { return Rf_ScalarReal((double)n_live); }

/* Releases the handle behind a reference as decoded without resolving
 * (raw(8) of class "rbridge_handle_ref"); for tests and tools. */
SEXP C_handle_release(SEXP ref) {
  if (TYPEOF(ref) != RAWSXP || XLENGTH(ref) != 8) Rf_error("rbridge: expected a handle reference");
  uint64_t id = 0;
  for (int i = 0; i < 8; i++) id = (id << 8) | RAW(ref)[i];
  return Rf_ScalarLogical(rb_handle_release(id, NULL));
}
