/* The numbers and the op table the protocol fixes, as this build has them:
 * for the hello capabilities, and for the test that checks them against
 * protocol/vectors/constants.json (as the Python suite does for the client's). */
#include <string.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_calls.h"

SEXP C_constants(void) {
  const char *names[] = {"protocol_version", "ext_handle", "ext_vector", "ext_payload", "ext_callable", "ext_code",
                         "shm_min", "arrow_min_length", "arena_header", "arena_states", "arena_slots",
                         "arena_magic", "arena_align", "arena_reserve_max", "worker_id_bit", "client_key_bytes", "heartbeat_ms",
                         "client_grace", "max_frames", "chunk_min", "max_chunks", "max_depth", "max_routing_id", NULL};
  double values[] = {RB_PROTOCOL_VERSION, RB_EXT_HANDLE, RB_EXT_VECTOR, RB_EXT_PAYLOAD, RB_EXT_CALLABLE,
                     RB_EXT_CODE, (double)RB_SHM_MIN, RB_ARROW_MIN_LENGTH, RB_ARENA_HEADER, RB_ARENA_STATES,
                     RB_ARENA_SLOTS, 0, RB_ARENA_ALIGN, (double)RB_ARENA_RESERVE_MAX, (double)RB_WORKER_ID_BIT, RB_CLIENT_KEY,
                     RB_HEARTBEAT_MS, RB_CLIENT_GRACE, RB_MAX_FRAMES, (double)RB_CHUNK_MIN, RB_MAX_CHUNKS,
                     RB_MAX_DEPTH, RB_MAX_ROUTING_ID};
  int n = 0;
  while (names[n]) n++;
  SEXP out = PROTECT(Rf_allocVector(VECSXP, n));
  SEXP nms = PROTECT(Rf_allocVector(STRSXP, n));
  for (int i = 0; i < n; i++) {
    SET_STRING_ELT(nms, i, Rf_mkChar(names[i]));
    SET_VECTOR_ELT(out, i, strcmp(names[i], "arena_magic") == 0 ? Rf_mkString(RB_ARENA_MAGIC)
                                                                 : Rf_ScalarReal(values[i]));
  }
  Rf_setAttrib(out, R_NamesSymbol, nms);
  UNPROTECT(2);
  return out;
}

/* The op table as a named character vector: op -> "io", "main" or "reply". */
SEXP C_ops(void) {
  static const char *places[] = {"io", "main", "reply"};
  int n = 0;
  while (rb_ops[n].name) n++;
  SEXP out = PROTECT(Rf_allocVector(STRSXP, n));
  SEXP nms = PROTECT(Rf_allocVector(STRSXP, n));
  for (int i = 0; i < n; i++) {
    SET_STRING_ELT(nms, i, Rf_mkChar(rb_ops[i].name));
    SET_STRING_ELT(out, i, Rf_mkChar(places[rb_ops[i].place]));
  }
  Rf_setAttrib(out, R_NamesSymbol, nms);
  UNPROTECT(2);
  return out;
}
