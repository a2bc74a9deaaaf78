/* The handle table: R objects held alive on behalf of clients.
 *
 * Objects live in one preserved R list; a handle id is (generation << 32) | slot.
 * The generation of a slot changes on every release, so a stale id never
 * reaches a newer object that reuses the slot. Release is O(1); R's own
 * precious list is not used per object because its release is O(n). */
#include <stdlib.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"

static SEXP table = NULL;        /* VECSXP, preserved */
static uint32_t *generation = NULL;
static uint32_t *free_slots = NULL;
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
  for (size_t i = capacity; i < cap; i++) generation[i] = 1;
  R_PreserveObject(bigger);
  if (table) R_ReleaseObject(table);
  table = bigger;
  capacity = cap;
  UNPROTECT(1);
}

uint64_t rb_handle_put(SEXP x) {
  size_t slot;
  if (n_free > 0) slot = free_slots[--n_free];
  else {
    if (next_unused == capacity) grow();
    slot = next_unused++;
  }
  SET_VECTOR_ELT(table, (R_xlen_t)slot, x);
  n_live++;
  return ((uint64_t)generation[slot] << 32) | slot;
}

static int lookup(uint64_t id, size_t *slot) {
  *slot = (size_t)(id & 0xffffffffu);
  uint32_t gen = (uint32_t)(id >> 32);
  return *slot < next_unused && generation[*slot] == gen;
}

SEXP rb_handle_get(uint64_t id) {
  size_t slot;
  if (!lookup(id, &slot))
    Rf_error("rbridge: handle %llu is not live (released, or from another worker)",
             (unsigned long long)id);
  return VECTOR_ELT(table, (R_xlen_t)slot);
}

int rb_handle_release(uint64_t id) {
  size_t slot;
  if (!lookup(id, &slot)) return 0;
  SET_VECTOR_ELT(table, (R_xlen_t)slot, R_NilValue);
  generation[slot] = generation[slot] == UINT32_MAX ? 1 : generation[slot] + 1;
  free_slots[n_free++] = (uint32_t)slot;
  n_live--;
  return 1;
}

size_t rb_handle_count(void) { return n_live; }

SEXP C_handle_count(void) { return Rf_ScalarReal((double)n_live); }

/* Releases the handle behind a reference as decoded without resolving
 * (raw(8) of class "rbridge_handle_ref"); for tests and tools. */
SEXP C_handle_release(SEXP ref) {
  if (TYPEOF(ref) != RAWSXP || XLENGTH(ref) != 8) Rf_error("rbridge: expected a handle reference");
  uint64_t id = 0;
  for (int i = 0; i < 8; i++) id = (id << 8) | RAW(ref)[i];
  return Rf_ScalarLogical(rb_handle_release(id));
}
