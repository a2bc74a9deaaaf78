/* Internal prototypes of the parts that use the R API (main thread only).
 * Include after Rinternals.h and rserver.h. */
#ifndef RSERVER_R_H
#define RSERVER_R_H

#include <R_ext/Rdynload.h>
#include "arrow_format.h"

/* handles.c */
/* rq: the request the handle is made or used for (NULL: none, for tests) */
uint64_t rb_handle_put(SEXP x, const rb_request *rq);
SEXP rb_handle_get(uint64_t id, const rb_request *rq);
int rb_handle_release(uint64_t id, const rb_request *rq);
size_t rb_handle_count(void);
size_t rb_handle_release_client(const uint8_t *rid, size_t len);

/* decode.c: lookup = 1 looks handles up, 0 keeps them (and payload
 * references) as raw references of class "rbridge_*_ref" */
SEXP rb_decode(const void *buf, size_t len, int lookup);
SEXP rb_decode_request(rb_request *rq);   /* the envelope with its payload frames */

/* encode.c */
typedef struct {
  void *data;                   /* frame payload (from rb_sendbuf_get), NULL for shared memory */
  rb_arena *arena;              /* a region of the client's arena, or NULL */
  uint32_t slot;
  size_t len, cap;
  uint32_t nframes;             /* frames (chunks) the data goes out in */
  char segment[RB_SHM_NAME_MAX];   /* a payload in shared memory: its segment's name */
} rb_payload;

typedef struct {
  msgpack_sbuffer sb;       /* the message being built */
  msgpack_sbuffer scratch;  /* bodies that need their length first */
  msgpack_packer pk;
  const rb_request *client; /* for shared-memory payloads: NULL, or whether and where */
  rb_payload *payloads;     /* Arrow payloads referenced by the message */
  int npayloads, cap;
} rb_encoder;
void rb_encoder_init(rb_encoder *e);
void rb_encoder_free(rb_encoder *e);   /* also drops payloads not sent */
void rb_pack_value(rb_encoder *e, SEXP x, int depth, int as_handle);
void rb_pack_strings(msgpack_packer *pk, SEXP x);
void rb_pack_payload(rb_encoder *e, SEXP x);   /* raises when x has no Arrow form */
/* Runs fill(e, data) with e freed if an R error jumps out of it. */
void rb_encode_protected(rb_encoder *e, void (*fill)(rb_encoder *, void *), void *data);

/* callbacks.c */
SEXP rb_make_callable(const uint8_t *p, uint32_t len, const rb_request *rq);
void rb_report_released_callables(const rb_request *rq);

/* arrow_to_r.c, arrow_from_r.c: Arrow IPC streams (SPEC "Arrow payloads") */
enum { RB_AK_NONE, RB_AK_PLAIN, RB_AK_VECTOR, RB_AK_ARRAY, RB_AK_FRAME };
typedef struct rb_arrow_plan rb_arrow_plan;
SEXP rb_arrow_to_r(const uint8_t *buf, size_t len);
#define RB_MAX_VIEWS 256
typedef struct {
  ar_span span[RB_MAX_VIEWS];   /* the memory views of one message cover */
  int n;
} rb_view_spans;
typedef struct {
  const ar_span *segs;      /* the stream, possibly split over frames */
  int nseg;
  SEXP (*backing)(void *ctx, int seg);   /* owner of a segment, for views */
  void *ctx;
  rb_view_spans *viewed;    /* NULL: never view, always copy */
  int doubles_checked;      /* the sender found no float64 with R's NA bit pattern (SPEC §8a) */
} rb_arrow_input;
SEXP rb_arrow_to_r_input(const rb_arrow_input *in);
int rb_arrow_kind(SEXP x);                 /* RB_AK_NONE: no Arrow form */
SEXP rb_arrow_form(SEXP x);                /* list(object, extra metadata), or NULL: none */
/* may raise; R_alloc'd, then malloc'd builders; extra_meta a named character vector or NULL */
rb_arrow_plan *rb_arrow_plan_new(SEXP x, SEXP extra_meta);
size_t rb_arrow_plan_size(const rb_arrow_plan *p);
void rb_arrow_write(const rb_arrow_plan *p, uint8_t *dst);   /* never raises */
/* the same, with large int and double buffers written at file_off + their
 * place in dst through fd, whose file dst maps (fd < 0: into memory) */
void rb_arrow_write_file(const rb_arrow_plan *p, uint8_t *dst, int fd, uint64_t file_off);
void rb_arrow_plan_free(rb_arrow_plan *p);

/* views.c */
SEXP rb_backing_frame(void *zmq_frame);
SEXP rb_backing_region(rb_arena *a, uint32_t slot, size_t bytes);
SEXP rb_view(int type, SEXP backing, const void *p, R_xlen_t n);
void rb_views_init(DllInfo *dll);
void rb_views_collect(int idle);   /* runs R's collector when views have grown */

/* request.c */
rb_request *rb_request_from(SEXP ctx);
/* Sends the encoder's message and payload frames; the payloads are handed over. */
int rb_send_encoded(const rb_request *rq, rb_encoder *e);
#endif
