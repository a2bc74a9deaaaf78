/* The `call` op in C: calls of scalars only (the fast path), and the binding
 * and publishing of argument values for R/calls.R (see there for the design). */
#include <string.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include <R_ext/Parse.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

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

/* The function a symbol names, seen from env (as R finds the function of a
 * call: non-functions are skipped), or NULL when there is none. */
static SEXP find_function(SEXP sym, SEXP env) {
  for (; env != R_EmptyEnv; env = ENCLOS(env)) {
    SEXP v = Rf_findVarInFrame3(env, sym, TRUE);
    if (v == R_UnboundValue) continue;
    if (TYPEOF(v) == PROMSXP) v = Rf_eval(v, env);
    if (Rf_isFunction(v)) return v;
  }
  return R_NilValue;
}

/* fn(args..., kwargs...) when every argument is a scalar and no name needs
 * resolving (pkg::name, or an underscore that may stand for a dot). When some
 * value is not a scalar but the name needs no resolving: list(target, the
 * function or NULL), for R/calls.R to build the call. Else NULL: R/calls.R
 * resolves the name first. A call is evaluated in the global environment. */
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
    if (!scalar_value(i < na ? VECTOR_ELT(args, i) : VECTOR_ELT(kwargs, i - na))) {
      SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
      SEXP target = TYPEOF(fn) == STRSXP ? Rf_installChar(STRING_ELT(fn, 0)) : fn;
      SET_VECTOR_ELT(out, 0, target);
      SET_VECTOR_ELT(out, 1, TYPEOF(target) == SYMSXP ? find_function(target, R_GlobalEnv)
                                                      : (Rf_isFunction(fn) ? fn : R_NilValue));
      UNPROTECT(1);
      return out;
    }
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

/* ---- binding argument values (see R/calls.R for the design) ---- */

static double arg_counter = 0;     /* numbers the names of bound values */
static int binds_since_sweep = 0, names_at_sweep = 0;
#define SWEEP_EVERY 256

/* The value of rserver:::name (namespace bindings may be lazy-load promises). */
static SEXP own_value(const char *name) {
  SEXP ns = PROTECT(R_FindNamespace(PROTECT(Rf_mkString("rserver"))));
  SEXP v = Rf_eval(Rf_install(name), ns);
  UNPROTECT(2);
  return v;
}

/* rserver:::fn(), fn(a) or fn(a, b) (NULL for absent arguments), evaluated
 * in the base environment. */
static SEXP call_own(const char *fn, SEXP a, SEXP b) {
  SEXP f = PROTECT(own_value(fn));
  SEXP call = PROTECT(a == NULL ? Rf_lang1(f) : b == NULL ? Rf_lang2(f, a) : Rf_lang3(f, a, b));
  SEXP out = Rf_eval(call, R_BaseEnv);
  UNPROTECT(2);
  return out;
}

static int is_spliced(SEXP v) {
  return (TYPEOF(v) == LANGSXP || TYPEOF(v) == SYMSXP) && Rf_getAttrib(v, R_ClassSymbol) == R_NilValue;
}

static int is_scalar(SEXP v) {
  switch (TYPEOF(v)) {
  case NILSXP: return 1;
  case LGLSXP: case INTSXP: case REALSXP: case CPLXSXP: case STRSXP: case RAWSXP:
    return XLENGTH(v) == 1 && ATTRIB(v) == R_NilValue;
  default: return 0;
  }
}

/* A string that parses to a `~` call, as that call; else the string. */
static SEXP formula_code(SEXP v) {
  if (TYPEOF(v) != STRSXP || STRING_ELT(v, 0) == NA_STRING || !strchr(CHAR(STRING_ELT(v, 0)), '~')) return v;
  ParseStatus status;
  SEXP exprs = PROTECT(R_ParseVector(v, -1, &status, R_NilValue));
  SEXP out = v;
  if (status == PARSE_OK && XLENGTH(exprs) == 1) {
    SEXP e = VECTOR_ELT(exprs, 0);
    if (TYPEOF(e) == LANGSXP && CAR(e) == Rf_install("~")) out = e;
  }
  UNPROTECT(1);
  return out;
}

/* Binds v in env and publishes its name in `store`; returns the name's symbol. */
static SEXP bind_value(SEXP env, SEXP label, SEXP v, SEXP store, SEXP published) {
  SEXP sym = NULL;
  if (TYPEOF(v) == VECSXP) {   /* a list or data frame identical to a recent one keeps its name */
    SEXP known = call_own("bound_name", label, v);
    if (TYPEOF(known) == STRSXP && XLENGTH(known) == 1) sym = Rf_installChar(STRING_ELT(known, 0));
  }
  SEXP ref = PROTECT(R_MakeWeakRef(env, R_NilValue, R_NilValue, FALSE));
  if (sym == NULL) {
    const char *base = Rf_translateCharUTF8(STRING_ELT(label, 0));
    size_t len = strlen(base) + 32;
    char *buf = R_alloc(len, 1);
    do {   /* the counter never repeats a name of the store; a global may have it */
      snprintf(buf, len, "%s.%.0f", base, ++arg_counter);
      sym = Rf_install(buf);
    } while (R_existsVarInFrame(R_GlobalEnv, sym));
    SEXP name = PROTECT(Rf_mkString(buf));
    R_MakeActiveBinding(sym, PROTECT(call_own("arg_getter", name, NULL)), store);
    Rf_defineVar(sym, ref, published);
    if (TYPEOF(v) == VECSXP) call_own("remember_name", label, name);
    UNPROTECT(2);
  } else {
    call_own("add_ref", PROTECT(Rf_ScalarString(PRINTNAME(sym))), ref);
    UNPROTECT(1);
  }
  Rf_defineVar(sym, v, env);
  UNPROTECT(1);
  if (++binds_since_sweep >= (names_at_sweep > SWEEP_EVERY ? names_at_sweep : SWEEP_EVERY))
    call_own("sweep_args", NULL, NULL);
  return sym;
}

/* A name for a value of a call whose names need not be unique in the worker:
 * its label, or label.2, label.3, ... when another value of the call has it. */
static SEXP local_name(SEXP env, SEXP label) {
  SEXP sym = Rf_installChar(STRING_ELT(label, 0));
  if (!R_existsVarInFrame(env, sym)) return sym;
  const char *base = Rf_translateCharUTF8(STRING_ELT(label, 0));
  size_t len = strlen(base) + 16;
  char *buf = R_alloc(len, 1);
  for (int k = 2;; k++) {
    snprintf(buf, len, "%s.%d", base, k);
    sym = Rf_install(buf);
    if (!R_existsVarInFrame(env, sym)) return sym;
  }
}

/* The names of f's formal arguments. A primitive's come from R's args(),
 * once: primitives are never freed, so their address is a lasting key. */
#define PRIMITIVE_CACHE 64
static SEXP primitive_fn[PRIMITIVE_CACHE], primitive_names[PRIMITIVE_CACHE];
static int n_primitives = 0;

static SEXP formal_names(SEXP f) {
  if (TYPEOF(f) == CLOSXP) {
    int n = Rf_length(FORMALS(f));
    SEXP out = PROTECT(Rf_allocVector(STRSXP, n));
    int i = 0;
    for (SEXP a = FORMALS(f); a != R_NilValue; a = CDR(a)) SET_STRING_ELT(out, i++, PRINTNAME(TAG(a)));
    UNPROTECT(1);
    return out;
  }
  if (TYPEOF(f) != BUILTINSXP && TYPEOF(f) != SPECIALSXP) return Rf_allocVector(STRSXP, 0);
  for (int i = 0; i < n_primitives; i++) if (primitive_fn[i] == f) return primitive_names[i];
  SEXP names = call_own("formal_names", f, NULL);
  if (n_primitives < PRIMITIVE_CACHE) {
    R_PreserveObject(names);
    primitive_fn[n_primitives] = f;
    primitive_names[n_primitives++] = names;
  }
  return names;
}

/* The name each value is bound under (R/calls.R, arg_labels): a keyword's own
 * name; for a positional value, the formal it fills (formals before `...`,
 * less those given by keyword), or "x". */
static SEXP value_labels(SEXP f, R_xlen_t na, SEXP knames, R_xlen_t nk) {
  SEXP formal = PROTECT(formal_names(f));
  SEXP out = PROTECT(Rf_allocVector(STRSXP, na + nk));
  SEXP x = PROTECT(Rf_mkChar("x"));
  R_xlen_t next = 0, nf = XLENGTH(formal);
  for (R_xlen_t i = 0; i < na; i++) {
    SEXP label = x;
    while (next < nf) {
      SEXP cand = STRING_ELT(formal, next);
      if (strcmp(CHAR(cand), "...") == 0) { next = nf; break; }
      int taken = 0;
      for (R_xlen_t k = 0; k < nk && !taken; k++) taken = strcmp(CHAR(cand), CHAR(STRING_ELT(knames, k))) == 0;
      next++;
      if (!taken) { label = cand; break; }
    }
    SET_STRING_ELT(out, i, CHAR(label)[0] ? label : x);
  }
  for (R_xlen_t k = 0; k < nk; k++) {
    SEXP name = STRING_ELT(knames, k);
    SET_STRING_ELT(out, na + k, name == NA_STRING || !CHAR(name)[0] ? x : name);
  }
  UNPROTECT(3);
  return out;
}

/* c(any R code, any string with a `~`) among the values, for R/calls.R. */
SEXP C_call_shape(SEXP args, SEXP kwargs) {
  int code = 0, tilde = 0;
  SEXP lists[2] = {args, kwargs};
  for (int l = 0; l < 2; l++) {
    if (TYPEOF(lists[l]) != VECSXP) continue;
    for (R_xlen_t i = 0; i < XLENGTH(lists[l]); i++) {
      SEXP v = VECTOR_ELT(lists[l], i);
      code |= is_spliced(v);
      tilde |= TYPEOF(v) == STRSXP && XLENGTH(v) == 1 && STRING_ELT(v, 0) != NA_STRING &&
               strchr(CHAR(STRING_ELT(v, 0)), '~') != NULL;
    }
  }
  SEXP out = Rf_allocVector(LGLSXP, 2);
  LOGICAL(out)[0] = code;
  LOGICAL(out)[1] = tilde;
  return out;
}

/* list(call, env): target(args..., kwargs...), with every value that is not
 * a scalar or R code bound in a new environment (R/calls.R, build_call).
 * f: the function called (for the values' names), or NULL; formula_at:
 * positions (1-based) of values that become formulas when they are strings
 * with a `~`; store: the environment that publishes worker-unique names, or
 * NULL when the call is not recorded (values are then bound under their
 * names in this call, and R makes no new symbols). */
SEXP C_bind_call(SEXP target, SEXP f, SEXP args, SEXP kwargs, SEXP formula_at, SEXP store) {
  R_xlen_t na = Rf_isNull(args) ? 0 : XLENGTH(args), nk = Rf_isNull(kwargs) ? 0 : XLENGTH(kwargs);
  SEXP knames = Rf_getAttrib(kwargs, R_NamesSymbol);
  if ((TYPEOF(store) != ENVSXP && store != R_NilValue) || TYPEOF(formula_at) != INTSXP ||
      (!Rf_isNull(args) && TYPEOF(args) != VECSXP) || (!Rf_isNull(kwargs) && TYPEOF(kwargs) != VECSXP) ||
      (nk && TYPEOF(knames) != STRSXP))
    Rf_error("rbridge: bad arguments to C_bind_call");
  SEXP labels = PROTECT(value_labels(f, na, knames, nk));
  SEXP published = PROTECT(Rf_findVarInFrame(PROTECT(own_value("calls_state")), Rf_install("published")));
  if (TYPEOF(published) != ENVSXP) Rf_error("rbridge: the registry of published names is missing");
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
  SEXP call = Rf_allocVector(LANGSXP, (R_xlen_t)(1 + na + nk));
  SET_VECTOR_ELT(out, 0, call);
  SET_VECTOR_ELT(out, 1, R_GlobalEnv);
  SETCAR(call, target);
  SEXP env = R_NilValue, cell = CDR(call);
  for (R_xlen_t i = 0; i < na + nk; i++, cell = CDR(cell)) {
    SEXP v = i < na ? VECTOR_ELT(args, i) : VECTOR_ELT(kwargs, i - na);
    if (i >= na) SET_TAG(cell, Rf_installChar(STRING_ELT(knames, i - na)));
    if (is_spliced(v)) {
      SETCAR(cell, v);
    } else if (is_scalar(v)) {
      int formula = 0;
      for (R_xlen_t k = 0; k < XLENGTH(formula_at); k++) formula |= INTEGER(formula_at)[k] == i + 1;
      SETCAR(cell, formula ? formula_code(v) : v);
    } else {
      if (env == R_NilValue) {
        env = R_NewEnv(R_GlobalEnv, FALSE, 0);
        SET_VECTOR_ELT(out, 1, env);
      }
      SEXP label = PROTECT(Rf_ScalarString(STRING_ELT(labels, i)));
      if (store == R_NilValue) {
        SEXP sym = local_name(env, label);
        Rf_defineVar(sym, v, env);
        SETCAR(cell, sym);
      } else {
        SETCAR(cell, bind_value(env, label, v, store, published));
      }
      UNPROTECT(1);
    }
  }
  UNPROTECT(4);
  return out;
}

/* For R/calls.R: the sweep ran over `names` published names. */
SEXP C_args_swept(SEXP names) {
  binds_since_sweep = 0;
  names_at_sweep = Rf_asInteger(names);
  return R_NilValue;
}

SEXP C_args_bound_since_sweep(void) { return Rf_ScalarInteger(binds_since_sweep); }
