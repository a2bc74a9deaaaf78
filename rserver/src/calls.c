/* The fast path of the `call` op, and the weak references R/calls.R uses to
 * publish argument values (see there for the design). */
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

/* Written into the call as it is: NULL, or a length-1 logical, integer,
 * double, complex or string without attributes, except a string with a `~`
 * (which may have to become a formula). */
static int scalar_value(SEXP v) {
  switch (TYPEOF(v)) {
  case NILSXP: return 1;
  case LGLSXP: case INTSXP: case REALSXP: case CPLXSXP:
    return XLENGTH(v) == 1 && ATTRIB(v) == R_NilValue;
  case STRSXP:
    return XLENGTH(v) == 1 && ATTRIB(v) == R_NilValue &&
           (STRING_ELT(v, 0) == NA_STRING || !strchr(CHAR(STRING_ELT(v, 0)), '~'));
  default: return 0;
  }
}

/* fn(args..., kwargs...) when every argument is a scalar and no name needs
 * resolving (pkg::name, or an underscore that may stand for a dot); else NULL,
 * and R/calls.R builds the call. Evaluated in the global environment. */
SEXP C_make_call(SEXP fn, SEXP args, SEXP kwargs) {
  if (TYPEOF(fn) == STRSXP) {
    if (XLENGTH(fn) != 1 || STRING_ELT(fn, 0) == NA_STRING || !CHAR(STRING_ELT(fn, 0))[0])
      Rf_error("'fn' must be a function name or a handle to a function");
    if (has_char(fn, ":_")) return R_NilValue;
  }
  if (!Rf_isNull(args) && TYPEOF(args) != VECSXP) Rf_error("'args' must be an array");
  if (!Rf_isNull(kwargs) && TYPEOF(kwargs) != VECSXP) Rf_error("'kwargs' must be a map");
  SEXP knames = Rf_getAttrib(kwargs, R_NamesSymbol);
  R_xlen_t na = Rf_isNull(args) ? 0 : XLENGTH(args), nk = Rf_isNull(kwargs) ? 0 : XLENGTH(kwargs);
  if (nk && TYPEOF(knames) != STRSXP) Rf_error("'kwargs' must be a map");
  if (has_char(knames, "_")) return R_NilValue;
  for (R_xlen_t i = 0; i < na + nk; i++)
    if (!scalar_value(i < na ? VECTOR_ELT(args, i) : VECTOR_ELT(kwargs, i - na))) return R_NilValue;
  SEXP call = PROTECT(Rf_allocVector(LANGSXP, (R_xlen_t)(1 + na + nk)));
  SETCAR(call, TYPEOF(fn) == STRSXP ? Rf_installChar(STRING_ELT(fn, 0)) : fn);
  SEXP cell = CDR(call);
  for (R_xlen_t i = 0; i < na + nk; i++, cell = CDR(cell)) {
    if (i >= na) SET_TAG(cell, Rf_installChar(STRING_ELT(knames, i - na)));
    SETCAR(cell, i < na ? VECTOR_ELT(args, i) : VECTOR_ELT(kwargs, i - na));
  }
  UNPROTECT(1);
  return call;
}

/* A weak reference to an environment, and its key (NULL once collected). */
SEXP C_weak_ref(SEXP env) {
  if (TYPEOF(env) != ENVSXP) Rf_error("rbridge: a weak reference needs an environment");
  return R_MakeWeakRef(env, R_NilValue, R_NilValue, FALSE);
}

SEXP C_weak_ref_key(SEXP ref) {
  if (TYPEOF(ref) != WEAKREFSXP) Rf_error("rbridge: not a weak reference");
  return R_WeakRefKey(ref);
}
