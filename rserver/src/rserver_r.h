/* Internal prototypes of the parts that use the R API (main thread only).
 * Include after Rinternals.h and rserver.h. */
#ifndef RSERVER_R_H
#define RSERVER_R_H

/* handles.c */
uint64_t rb_handle_put(SEXP x);
SEXP rb_handle_get(uint64_t id);
int rb_handle_release(uint64_t id);
size_t rb_handle_count(void);
size_t rb_handle_release_client(const uint8_t *rid, size_t len);

/* decode.c: resolve = 1 looks handles up, 0 keeps them as "rbridge_handle_ref" */
SEXP rb_decode(const void *buf, size_t len, int resolve);

/* encode.c */
typedef struct {
  msgpack_sbuffer sb;       /* the message being built */
  msgpack_sbuffer scratch;  /* bodies that need their length first */
  msgpack_packer pk;
} rb_encoder;
void rb_encoder_init(rb_encoder *e);
void rb_encoder_free(rb_encoder *e);
void rb_pack_value(rb_encoder *e, SEXP x, int depth, int as_handle);
void rb_pack_strings(msgpack_packer *pk, SEXP x);
/* Runs fill(e, data) with e freed if an R error jumps out of it. */
void rb_encode_protected(rb_encoder *e, void (*fill)(rb_encoder *, void *), void *data);

/* callbacks.c */
SEXP rb_make_callable(const uint8_t *p, uint32_t len);
void rb_report_released_callables(const rb_request *rq);

/* arrow_to_r.c, arrow_from_r.c: Arrow IPC streams (SPEC "Arrow payloads") */
enum { RB_AK_NONE, RB_AK_PLAIN, RB_AK_VECTOR, RB_AK_ARRAY, RB_AK_FRAME };
typedef struct rb_arrow_plan rb_arrow_plan;
SEXP rb_arrow_to_r(const uint8_t *buf, size_t len);
int rb_arrow_kind(SEXP x);                 /* RB_AK_NONE: no Arrow form */
rb_arrow_plan *rb_arrow_plan_new(SEXP x);  /* may raise; R_alloc'd, then malloc'd builders */
size_t rb_arrow_plan_size(const rb_arrow_plan *p);
void rb_arrow_write(const rb_arrow_plan *p, uint8_t *dst);   /* never raises */
void rb_arrow_plan_free(rb_arrow_plan *p);

/* server.c */
rb_request *rb_request_from(SEXP ctx);
#endif
