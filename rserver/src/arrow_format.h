/* Arrow IPC stream format: a bounds-checked flatbuffer reader and a small
 * flatbuffer builder (flatbuf.c), and the validated stream reader
 * (arrow_read.c). Pure C without the R API, so the fuzz harness can run all of
 * it. Field ids and enum values follow Arrow's Message.fbs and Schema.fbs;
 * the subset accepted is in protocol/SPEC.md ("Arrow payloads"). */
#ifndef RB_ARROW_FORMAT_H
#define RB_ARROW_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- flatbuf.c: reading --------------------------------------------------- */
typedef struct {
  const uint8_t *buf;
  size_t len;
  size_t pos;       /* table start */
  size_t vt;        /* vtable start */
  uint16_t vt_len;
  uint16_t tbl_len;
} fb_table;

typedef struct {
  const uint8_t *buf;
  size_t pos;       /* first element */
  uint32_t n;
} fb_vector;

int fb_root(const uint8_t *buf, size_t len, fb_table *t);
/* Each getter returns 0 when the field is absent (the default applies), 1 when
 * read, -1 when the buffer is malformed. */
int fb_scalar(const fb_table *t, int id, size_t size, void *out);
int fb_table_field(const fb_table *t, int id, fb_table *out);
int fb_vector_field(const fb_table *t, int id, size_t elem_size, fb_vector *out);
int fb_string_field(const fb_table *t, int id, const uint8_t **s, uint32_t *n);
int fb_vector_table(const fb_vector *v, uint32_t i, size_t buflen, fb_table *out);
int64_t fb_i64_at(const uint8_t *p);

/* ---- flatbuf.c: building (front to back, children after their parents) ---- */
typedef struct {
  uint8_t *buf;
  size_t len, cap;
  int failed;       /* out of memory */
} fb_builder;

typedef struct {
  size_t vt;        /* vtable position */
  size_t start;     /* table position */
  int nslots;
} fb_tab;

void fb_builder_init(fb_builder *b);
void fb_builder_free(fb_builder *b);
void fb_align(fb_builder *b, size_t a);
size_t fb_root_offset(fb_builder *b);                 /* placeholder at byte 0 */
fb_tab fb_tab_begin(fb_builder *b, int nslots);
void fb_tab_scalar(fb_builder *b, fb_tab *t, int id, const void *v, size_t size);
size_t fb_tab_offset(fb_builder *b, fb_tab *t, int id);  /* returns the slot to patch */
void fb_tab_end(fb_builder *b, fb_tab *t);
void fb_patch(fb_builder *b, size_t slot, size_t target);
size_t fb_string(fb_builder *b, const char *s, size_t n);
size_t fb_vector_begin(fb_builder *b, uint32_t n, size_t elem_size, size_t align);

/* ---- Arrow enums ------------------------------------------------------------ */
enum { AH_SCHEMA = 1, AH_DICTIONARY = 2, AH_RECORD_BATCH = 3 };
enum {
  AT_NULL = 1, AT_INT = 2, AT_FLOAT = 3, AT_BINARY = 4, AT_UTF8 = 5, AT_BOOL = 6,
  AT_DATE = 8, AT_TIMESTAMP = 10, AT_DURATION = 18, AT_LARGE_BINARY = 19,
  AT_LARGE_UTF8 = 20
};
enum { AU_SECOND = 0, AU_MILLI = 1, AU_MICRO = 2, AU_NANO = 3 };
#define ARROW_V4 3
#define ARROW_V5 4

/* ---- R's NA for doubles: a NaN whose low word is 1954 ------------------------ */
static inline int ar_is_r_na_bits(uint64_t b) {
  return ((b & 0x7FF0000000000000u) == 0x7FF0000000000000u) & ((uint32_t)b == 1954);
}

/* How many of n little-endian doubles at p carry that bit pattern. The low
 * words alone are counted first: that loop vectorizes, and a low word of
 * 1954 is rare, so the exact pass seldom runs. */
static inline int64_t ar_count_r_na(const uint8_t *p, int64_t n) {
  int64_t low_hits = 0, count = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t low;
    memcpy(&low, p + 8 * i, 4);
    low_hits += low == 1954;
  }
  for (int64_t i = 0; low_hits && i < n; i++) {
    uint64_t b;
    memcpy(&b, p + 8 * i, 8);
    count += ar_is_r_na_bits(b);
  }
  return count;
}

/* The same count for a large buffer, split over two threads (arrow_read.c). */
int64_t ar_count_r_na_wide(const uint8_t *p, int64_t n);

/* ---- arrow_read.c --------------------------------------------------------------- */
#define AR_MAX_FIELDS 100000

typedef struct { const uint8_t *p; size_t n; } ar_span;

typedef struct {
  int type;          /* AT_* */
  int bit_width;     /* AT_INT; AT_FLOAT: 16/32/64 */
  int is_signed;
  int unit;          /* AT_DATE: 0 day, 1 ms; AT_TIMESTAMP/AT_DURATION: AU_* */
  ar_span tz;        /* AT_TIMESTAMP; n == 0 when absent */
  int has_tz;
} ar_type;

typedef struct {
  ar_span name;
  ar_type type;      /* for a dictionary-encoded field: the type of the values */
  int nullable;
  int dict;          /* dictionary encoded */
  int64_t dict_id;
  int index_bits, index_signed, ordered;
  int dict_index;    /* index into ar_stream.dicts */
  fb_table table;    /* for lookups in its (validated) custom metadata */
} ar_field;

/* One validated array: buffers lie inside the message body. */
typedef struct {
  int64_t length, null_count;
  ar_span validity;  /* empty when null_count == 0 */
  ar_span offsets;   /* var-width types */
  ar_span values;    /* values, bits, or the data of var-width types */
} ar_array;

typedef struct {
  int64_t length;
  ar_array *columns; /* one per schema field */
} ar_batch;

typedef struct {
  int64_t id;
  ar_type type;      /* of the values */
  ar_array *chunks;  /* the first dictionary, then its deltas */
  int nchunks;
  int used;          /* a record batch has referred to it: no replacement after */
} ar_dict;

typedef struct {
  ar_field *fields;
  int nfields;
  fb_table schema;   /* for lookups in its (validated) custom metadata */
  ar_batch *batches;
  int nbatches;
  int64_t rows;
  ar_dict *dicts;
  int ndicts;
  const ar_span *segs;   /* the input, during ar_read_segments only */
  int nseg;
  size_t stream_len, copied;
  uint8_t **copies;      /* ranges that crossed segments, copied */
  int ncopies;
  char err[200];
} ar_stream;

/* Parses and validates a whole stream (schema, dictionaries, batches, EOS or
 * end of input). Returns 0, or -1 with s->err set; always call ar_free. */
int ar_read(const uint8_t *buf, size_t len, ar_stream *s);
/* The same for a stream split over segments, read as their concatenation. */
int ar_read_segments(const ar_span *segs, int nseg, ar_stream *s);
void ar_free(ar_stream *s);
int ar_valid(const ar_array *a, int64_t i);
int ar_field_meta(const ar_field *f, const char *key, ar_span *value);
int ar_schema_meta(const ar_stream *s, const char *key, ar_span *value);
int ar_fixed_width(const ar_type *t);   /* bytes per value, 0 for others */
int ar_is_var(const ar_type *t);        /* utf8/binary (large or not) */
int ar_is_large(const ar_type *t);
uint64_t ar_offset_at(const ar_array *a, int large, int64_t i);

#endif
