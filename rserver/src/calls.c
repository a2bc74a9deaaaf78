/* Building the R call for the `call` op without per-argument R-level work. */
#include <string.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"

static int has_char(SEXP names, const char *set) {
  if (TYPEOF(names) != STRSXP) return 0;
  for (R_xlen_t i = 0; i < XLENGTH(names); i++)
    if (strpbrk(CHAR(STRING_ELT(names, i)), set)) return 1;
  return 0;
}

/* Returns fn(args..., kwargs...) as a call, with language values quoted so that
 * they arrive as values. Returns NULL when the names need R-level resolution
 * first (pkg::name, or an underscore that may stand for a dot) and `resolved`
 * is FALSE. */
SEXP C_make_call(SEXP fn, SEXP args, SEXP kwargs, SEXP resolved) {
  int done = Rf_asLogical(resolved) == TRUE;
  SEXP target;
  if (TYPEOF(fn) == STRSXP) {
    if (XLENGTH(fn) != 1 || STRING_ELT(fn, 0) == NA_STRING || !CHAR(STRING_ELT(fn, 0))[0])
      Rf_error("'fn' must be a function name or a handle to a function");
    if (!done && has_char(fn, ":_")) return R_NilValue;
    target = Rf_installChar(STRING_ELT(fn, 0));
  } else {
    target = fn;
  }
  if (!Rf_isNull(args) && TYPEOF(args) != VECSXP) Rf_error("'args' must be an array");
  if (!Rf_isNull(kwargs) && TYPEOF(kwargs) != VECSXP) Rf_error("'kwargs' must be a map");
  SEXP knames = Rf_getAttrib(kwargs, R_NamesSymbol);
  if (!done && has_char(knames, "_")) return R_NilValue;
  R_xlen_t na = Rf_isNull(args) ? 0 : XLENGTH(args), nk = Rf_isNull(kwargs) ? 0 : XLENGTH(kwargs);
  if (nk && TYPEOF(knames) != STRSXP) Rf_error("'kwargs' must be a map");
  SEXP call = PROTECT(Rf_allocVector(LANGSXP, (R_xlen_t)(1 + na + nk)));
  SETCAR(call, target);
  SEXP cell = CDR(call);
  SEXP quote = Rf_install("quote");
  for (R_xlen_t i = 0; i < na + nk; i++, cell = CDR(cell)) {
    SEXP v = i < na ? VECTOR_ELT(args, i) : VECTOR_ELT(kwargs, i - na);
    if (Rf_isLanguage(v) || TYPEOF(v) == SYMSXP || TYPEOF(v) == PROMSXP) v = Rf_lang2(quote, v);
    SETCAR(cell, v);
    if (i >= na) SET_TAG(cell, Rf_installChar(STRING_ELT(knames, i - na)));
  }
  UNPROTECT(1);
  return call;
}
