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

/* Scalars without attributes are written into the call itself; anything else
 * is bound to a name in the call's environment, so that the call R sees (in
 * errors, tracebacks, match.call() and printed model fits) reads
 * lm(formula = "y ~ x", data = data), not the deparsed data. */
static int inline_value(SEXP v) {
  switch (TYPEOF(v)) {
  case NILSXP: return 1;
  case LGLSXP: case INTSXP: case REALSXP: case CPLXSXP: case STRSXP:
    return XLENGTH(v) == 1 && ATTRIB(v) == R_NilValue;
  default: return 0;
  }
}

static int name_taken(SEXP name, SEXP knames, SEXP fn) {
  const char *s = CHAR(name);
  if (TYPEOF(fn) == STRSXP && strcmp(s, CHAR(STRING_ELT(fn, 0))) == 0) return 1;
  if (TYPEOF(knames) == STRSXP)
    for (R_xlen_t i = 0; i < XLENGTH(knames); i++)
      if (strcmp(s, CHAR(STRING_ELT(knames, i))) == 0) return 1;
  return 0;
}

/* The variable an argument value is bound to: its keyword, or argN for a
 * positional one; prefixed with dots while it would clash. */
static SEXP binding_name(R_xlen_t i, R_xlen_t na, SEXP knames, SEXP fn) {
  char buf[64];
  SEXP name;
  if (i >= na) {
    name = STRING_ELT(knames, i - na);
    if (!(TYPEOF(fn) == STRSXP && strcmp(CHAR(name), CHAR(STRING_ELT(fn, 0))) == 0)) return name;
    snprintf(buf, sizeof buf, ".%.60s", CHAR(name));
  } else {
    snprintf(buf, sizeof buf, "arg%lld", (long long)(i + 1));
  }
  for (;;) {
    name = Rf_mkChar(buf);
    if (!name_taken(name, knames, fn) || strlen(buf) >= sizeof buf - 1) return name;
    memmove(buf + 1, buf, strlen(buf) + 1);
    buf[0] = '.';
  }
}

/* Returns list(call, env): fn(args..., kwargs...) and the environment to
 * evaluate it in (the global environment, or a child of it holding the
 * bound argument values). Returns NULL when the names need R-level resolution
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
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
  SEXP call = Rf_allocVector(LANGSXP, (R_xlen_t)(1 + na + nk));
  SET_VECTOR_ELT(out, 0, call);
  SET_VECTOR_ELT(out, 1, R_GlobalEnv);
  SEXP env = R_NilValue;
  SETCAR(call, target);
  SEXP cell = CDR(call);
  for (R_xlen_t i = 0; i < na + nk; i++, cell = CDR(cell)) {
    SEXP v = i < na ? VECTOR_ELT(args, i) : VECTOR_ELT(kwargs, i - na);
    if (i >= na) SET_TAG(cell, Rf_installChar(STRING_ELT(knames, i - na)));
    if (inline_value(v)) {
      SETCAR(cell, v);
      continue;
    }
    if (env == R_NilValue) {
      env = R_NewEnv(R_GlobalEnv, TRUE, 0);
      SET_VECTOR_ELT(out, 1, env);
    }
    SEXP sym = Rf_installChar(binding_name(i, na, knames, fn));
    Rf_defineVar(sym, v, env);
    SETCAR(cell, sym);
  }
  UNPROTECT(1);
  return out;
}
