/* Plot capture (R/plots.R): the display messages that carry a request's
 * plots, and R's entry points to the blank-page check (png_read.c). */
#include <string.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_r.h"
#include "rserver_calls.h"

/* The concatenated image data of a PNG (raw), for R to inflate; NULL if the
 * bytes are not a PNG the blank check understands. */
SEXP C_png_image_data(SEXP bytes) {
  if (TYPEOF(bytes) != RAWSXP) Rf_error("a raw vector is required");
  rb_png png;
  if (rb_png_parse(RAW(bytes), (size_t)XLENGTH(bytes), &png, NULL) != 0) return R_NilValue;
  SEXP out = PROTECT(Rf_allocVector(RAWSXP, (R_xlen_t)png.idat_size));
  rb_png_parse(RAW(bytes), (size_t)XLENGTH(bytes), &png, RAW(out));
  UNPROTECT(1);
  return out;
}

/* Whether a PNG is one colour all over; inflated: its image data inflated
 * (unfiltered in place: a copy R made). NA when it cannot tell. */
SEXP C_png_blank(SEXP bytes, SEXP inflated) {
  if (TYPEOF(bytes) != RAWSXP || TYPEOF(inflated) != RAWSXP) Rf_error("raw vectors are required");
  rb_png png;
  if (rb_png_parse(RAW(bytes), (size_t)XLENGTH(bytes), &png, NULL) != 0) return Rf_ScalarLogical(NA_LOGICAL);
  int blank = rb_png_blank(&png, RAW(inflated), (size_t)XLENGTH(inflated));
  return Rf_ScalarLogical(blank < 0 ? NA_LOGICAL : blank);
}

/* Sends one plot to the request's client as a "display" message (SPEC §5b),
 * after the console output written before it. */
SEXP C_display_send(SEXP ctx, SEXP mime, SEXP data, SEXP size) {
  rb_request *rq = rb_request_from(ctx);
  if (!Rf_isString(mime) || XLENGTH(mime) != 1 || TYPEOF(data) != RAWSXP || !Rf_isInteger(size) ||
      XLENGTH(size) != 2)
    Rf_error("C_display_send: bad arguments");
  if (rq->done) return Rf_ScalarLogical(FALSE);
  rb_console_flush();
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 7, rq->id, "display");
  rb_pack_kv_str(&pk, "mime", Rf_translateCharUTF8(STRING_ELT(mime, 0)));
  rb_pack_cstr(&pk, "data");
  msgpack_pack_bin(&pk, (size_t)XLENGTH(data));
  msgpack_pack_bin_body(&pk, RAW(data), (size_t)XLENGTH(data));
  rb_pack_cstr(&pk, "width");
  msgpack_pack_int64(&pk, INTEGER(size)[0]);
  rb_pack_cstr(&pk, "height");
  msgpack_pack_int64(&pk, INTEGER(size)[1]);
  return Rf_ScalarLogical(rb_send_to_client(rq, &sb) == 0);
}
