/* Arrow IPC stream reader: parses the schema, dictionary batches and record
 * batches of a whole stream and validates every length, offset and buffer
 * against the bytes present before anything is built from them. Nothing here
 * assumes alignment. No R API (fuzzed by fuzz/fuzz_arrow.c). */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "arrow_format.h"

static int fail(ar_stream *s, const char *fmt, ...) {
  if (!s->err[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
  }
  return -1;
}

#define CHECK(rc, what) do { if ((rc) < 0) return fail(s, "malformed %s", what); } while (0)

static const char *type_name(int t) {
  static const char *names[] = {"none", "null", "int", "floating point", "binary", "utf8", "bool",
                                "decimal", "date", "time", "timestamp", "interval", "list", "struct",
                                "union", "fixed-size binary", "fixed-size list", "map", "duration",
                                "large binary", "large utf8", "large list", "run-end encoded",
                                "binary view", "utf8 view", "list view", "large list view"};
  return t >= 0 && t < (int)(sizeof names / sizeof *names) ? names[t] : "unknown";
}

int ar_fixed_width(const ar_type *t) {
  switch (t->type) {
  case AT_INT: case AT_FLOAT: return t->bit_width / 8;
  case AT_DATE: return t->unit == 0 ? 4 : 8;
  case AT_TIMESTAMP: case AT_DURATION: return 8;
  default: return 0;
  }
}

int ar_is_var(const ar_type *t) {
  return t->type == AT_UTF8 || t->type == AT_BINARY || t->type == AT_LARGE_UTF8 ||
         t->type == AT_LARGE_BINARY;
}

int ar_is_large(const ar_type *t) { return t->type == AT_LARGE_UTF8 || t->type == AT_LARGE_BINARY; }

uint64_t ar_offset_at(const ar_array *a, int large, int64_t i) {
  if (large) return (uint64_t)fb_i64_at(a->offsets.p + 8 * i);
  int32_t v;
  memcpy(&v, a->offsets.p + 4 * i, 4);
  return (uint64_t)(uint32_t)v;
}

int ar_valid(const ar_array *a, int64_t i) {
  if (a->null_count == 0) return 1;
  if (!a->validity.p) return 0;   /* the null type: no bitmap, every value null */
  return (a->validity.p[i >> 3] >> (i & 7)) & 1;
}

/* Looks `key` up in the custom metadata (field `id`) of a table whose
 * metadata read_meta has already validated. */
static int find_meta(const fb_table *t, int id, const char *key, ar_span *value) {
  fb_vector v;
  size_t kl = strlen(key);
  if (fb_vector_field(t, id, 4, &v) <= 0) return 0;
  for (uint32_t i = 0; i < v.n; i++) {
    fb_table kv;
    const uint8_t *k, *p;
    uint32_t kn, n;
    if (fb_vector_table(&v, i, t->len, &kv) < 0) return 0;
    if (fb_string_field(&kv, 0, &k, &kn) <= 0 || kn != kl || memcmp(k, key, kl) != 0) continue;
    if (fb_string_field(&kv, 1, &p, &n) <= 0) { p = k; n = 0; }
    *value = (ar_span){p, n};
    return 1;
  }
  return 0;
}

int ar_field_meta(const ar_field *f, const char *key, ar_span *value) {
  return find_meta(&f->table, 6, key, value);
}

int ar_schema_meta(const ar_stream *s, const char *key, ar_span *value) {
  return find_meta(&s->schema, 2, key, value);
}

/* ---- schema -------------------------------------------------------------------- */

/* Checks every key and value of the custom metadata in field `id`. */
static int read_meta(ar_stream *s, const fb_table *t, int id) {
  fb_vector v;
  int rc = fb_vector_field(t, id, 4, &v);
  CHECK(rc, "custom metadata");
  for (uint32_t i = 0; rc && i < v.n; i++) {
    fb_table kv;
    const uint8_t *p;
    uint32_t n;
    CHECK(fb_vector_table(&v, i, t->len, &kv), "custom metadata");
    CHECK(fb_string_field(&kv, 0, &p, &n), "metadata key");
    CHECK(fb_string_field(&kv, 1, &p, &n), "metadata value");
  }
  return 0;
}

static int read_int_type(ar_stream *s, const fb_table *t, int *bits, int *is_signed) {
  int32_t bw = 0;
  uint8_t sg = 0;
  CHECK(fb_scalar(t, 0, 4, &bw), "int type");
  CHECK(fb_scalar(t, 1, 1, &sg), "int type");
  if (bw != 8 && bw != 16 && bw != 32 && bw != 64) return fail(s, "int type of %d bits", (int)bw);
  *bits = bw;
  *is_signed = sg != 0;
  return 0;
}

static int read_type(ar_stream *s, uint8_t type_type, const fb_table *field, ar_type *out) {
  fb_table t;
  int has = fb_table_field(field, 3, &t);
  CHECK(has, "field type");
  memset(out, 0, sizeof *out);
  out->type = type_type;
  int16_t unit = 0;
  switch (type_type) {
  case AT_NULL: case AT_BOOL: case AT_UTF8: case AT_LARGE_UTF8: case AT_BINARY: case AT_LARGE_BINARY:
    return 0;
  case AT_INT:
    if (!has) return fail(s, "int type without parameters");
    return read_int_type(s, &t, &out->bit_width, &out->is_signed);
  case AT_FLOAT: {
    int16_t prec = 0;
    if (has) CHECK(fb_scalar(&t, 0, 2, &prec), "float type");
    if (prec == 1) out->bit_width = 32;
    else if (prec == 2) out->bit_width = 64;
    else return fail(s, "half-precision floats are not supported");
    return 0;
  }
  case AT_DATE:
    unit = 1;   /* Date.unit defaults to MILLISECOND */
    if (has) CHECK(fb_scalar(&t, 0, 2, &unit), "date type");
    if (unit != 0 && unit != 1) return fail(s, "date unit %d", (int)unit);
    out->unit = unit;
    return 0;
  case AT_TIMESTAMP: case AT_DURATION: {
    unit = type_type == AT_DURATION ? AU_MILLI : AU_SECOND;   /* the schema's defaults */
    if (has) CHECK(fb_scalar(&t, 0, 2, &unit), "time unit");
    if (unit < AU_SECOND || unit > AU_NANO) return fail(s, "time unit %d", (int)unit);
    out->unit = unit;
    if (type_type == AT_TIMESTAMP && has) {
      const uint8_t *p;
      uint32_t n;
      int rc = fb_string_field(&t, 1, &p, &n);
      CHECK(rc, "timestamp time zone");
      if (rc) { out->tz = (ar_span){p, n}; out->has_tz = 1; }
    }
    return 0;
  }
  default:
    return fail(s, "Arrow type '%s' is not supported", type_name(type_type));
  }
}

static int add_dict(ar_stream *s, ar_field *f) {
  for (int i = 0; i < s->ndicts; i++)
    if (s->dicts[i].id == f->dict_id) {
      if (s->dicts[i].type.type != f->type.type) return fail(s, "fields share a dictionary of two types");
      f->dict_index = i;
      return 0;
    }
  ar_dict *d = realloc(s->dicts, (size_t)(s->ndicts + 1) * sizeof *d);
  if (!d) return fail(s, "out of memory");
  s->dicts = d;
  memset(&d[s->ndicts], 0, sizeof *d);
  d[s->ndicts].id = f->dict_id;
  d[s->ndicts].type = f->type;
  f->dict_index = s->ndicts++;
  return 0;
}

static int read_field(ar_stream *s, const fb_table *t, ar_field *f) {
  const uint8_t *p;
  uint32_t n;
  uint8_t nullable = 0, type_type = 0;
  memset(f, 0, sizeof *f);
  int rc = fb_string_field(t, 0, &p, &n);
  CHECK(rc, "field name");
  if (rc) f->name = (ar_span){p, n};
  CHECK(fb_scalar(t, 1, 1, &nullable), "field");
  CHECK(fb_scalar(t, 2, 1, &type_type), "field");
  f->nullable = nullable != 0;
  fb_vector children;
  rc = fb_vector_field(t, 5, 4, &children);
  CHECK(rc, "field children");
  if (rc && children.n) return fail(s, "nested Arrow type '%s' is not supported", type_name(type_type));
  if (read_type(s, type_type, t, &f->type)) return -1;
  f->table = *t;
  if (read_meta(s, t, 6)) return -1;
  fb_table d;
  rc = fb_table_field(t, 4, &d);
  CHECK(rc, "dictionary encoding");
  if (!rc) return 0;
  f->dict = 1;
  f->index_bits = 32;
  f->index_signed = 1;
  uint8_t ordered = 0;
  int16_t kind = 0;
  CHECK(fb_scalar(&d, 0, 8, &f->dict_id), "dictionary encoding");
  CHECK(fb_scalar(&d, 2, 1, &ordered), "dictionary encoding");
  CHECK(fb_scalar(&d, 3, 2, &kind), "dictionary encoding");
  f->ordered = ordered != 0;
  if (kind != 0) return fail(s, "dictionary kind %d is not supported", (int)kind);
  fb_table it;
  rc = fb_table_field(&d, 1, &it);
  CHECK(rc, "dictionary index type");
  if (rc && read_int_type(s, &it, &f->index_bits, &f->index_signed)) return -1;
  if (f->type.type != AT_UTF8 && f->type.type != AT_LARGE_UTF8)
    return fail(s, "dictionaries of '%s' values are not supported (only utf8)", type_name(f->type.type));
  return add_dict(s, f);
}

static int read_schema(ar_stream *s, const fb_table *t) {
  int16_t endianness = 0;
  CHECK(fb_scalar(t, 0, 2, &endianness), "schema");
  if (endianness != 0) return fail(s, "big-endian Arrow data is not supported");
  fb_vector fields;
  int rc = fb_vector_field(t, 1, 4, &fields);
  CHECK(rc, "schema fields");
  uint32_t n = rc ? fields.n : 0;
  if (n > AR_MAX_FIELDS) return fail(s, "more than %d fields", AR_MAX_FIELDS);
  s->fields = calloc(n ? n : 1, sizeof *s->fields);
  if (!s->fields) return fail(s, "out of memory");
  for (uint32_t i = 0; i < n; i++) {
    fb_table f;
    CHECK(fb_vector_table(&fields, i, t->len, &f), "field");
    s->nfields = (int)i + 1;
    if (read_field(s, &f, &s->fields[i])) return -1;
  }
  s->nfields = (int)n;
  s->schema = *t;
  return read_meta(s, t, 2);
}

/* ---- batches ----------------------------------------------------------------- */

/* A contiguous view of bytes [pos, pos + n) of the stream, which may be split
 * over several segments (frames). A range that crosses a boundary is copied,
 * in all at most as many bytes as the stream has, so a hostile split cannot
 * make the reader allocate without bound. */
static int gather(ar_stream *s, size_t pos, size_t n, const uint8_t **out) {
  size_t at = 0;
  int i = 0;
  while (i < s->nseg && pos >= at + s->segs[i].n && !(n == 0 && pos == at + s->segs[i].n)) at += s->segs[i++].n;
  if (i == s->nseg) return fail(s, "range outside the stream");
  if (pos - at + n <= s->segs[i].n) { *out = s->segs[i].p + (pos - at); return 0; }
  if (n > s->stream_len - s->copied) return fail(s, "the stream is split into frames too often");
  uint8_t **copies = realloc(s->copies, (size_t)(s->ncopies + 1) * sizeof *copies);
  if (!copies) return fail(s, "out of memory");
  s->copies = copies;
  uint8_t *buf = malloc(n);
  if (!buf) return fail(s, "out of memory");
  s->copies[s->ncopies++] = buf;
  s->copied += n;
  for (size_t done = 0; done < n; i++) {   /* the range lies inside the stream: i stays < nseg */
    size_t from = pos + done - at, k = s->segs[i].n - from < n - done ? s->segs[i].n - from : n - done;
    memcpy(buf + done, s->segs[i].p + from, k);
    done += k;
    at += s->segs[i].n;
  }
  *out = buf;
  return 0;
}

typedef struct {
  fb_vector nodes, buffers;
  uint32_t next_node, next_buffer;
  size_t body;      /* stream position */
  int64_t body_len;
  size_t stream_len;
} batch_cursor;

static int take_buffer(ar_stream *s, batch_cursor *c, ar_span *out) {
  if (c->next_buffer >= c->buffers.n) return fail(s, "record batch has too few buffers");
  const uint8_t *b = c->buffers.buf + c->buffers.pos + 16 * (size_t)c->next_buffer++;
  int64_t off = fb_i64_at(b), len = fb_i64_at(b + 8);
  if (off < 0 || len < 0 || off > c->body_len || len > c->body_len - off)
    return fail(s, "buffer outside the message body");
  const uint8_t *p;
  if (gather(s, c->body + (size_t)off, (size_t)len, &p)) return -1;
  *out = (ar_span){p, (size_t)len};
  return 0;
}

static uint64_t bitmap_bytes(int64_t n) { return ((uint64_t)n + 7) / 8; }

/* Reads the node and buffers of one array of type t, and checks they fit. */
static int take_array(ar_stream *s, batch_cursor *c, const ar_type *t, int index_bits, ar_array *a) {
  if (c->next_node >= c->nodes.n) return fail(s, "record batch has too few nodes");
  const uint8_t *node = c->nodes.buf + c->nodes.pos + 16 * (size_t)c->next_node++;
  memset(a, 0, sizeof *a);
  a->length = fb_i64_at(node);
  a->null_count = fb_i64_at(node + 8);
  int64_t n = a->length;
  if (n < 0 || a->null_count < 0 || a->null_count > n) return fail(s, "bad array length or null count");
  if (t->type == AT_NULL) {
    /* no buffers; bounded so that a tiny message cannot ask for a huge vector */
    if ((uint64_t)n > 8 * (uint64_t)c->stream_len + 64) return fail(s, "null array longer than its message allows");
    a->null_count = n;
    return 0;
  }
  if (take_buffer(s, c, &a->validity)) return -1;
  if (a->null_count == 0) a->validity = (ar_span){NULL, 0};
  else if (a->validity.n < bitmap_bytes(n)) return fail(s, "validity bitmap shorter than the array");
  if (index_bits) {
    if (take_buffer(s, c, &a->values)) return -1;
    if ((uint64_t)n > a->values.n / (uint64_t)(index_bits / 8)) return fail(s, "index buffer shorter than the array");
    return 0;
  }
  if (t->type == AT_BOOL) {
    if (take_buffer(s, c, &a->values)) return -1;
    if (a->values.n < bitmap_bytes(n)) return fail(s, "boolean buffer shorter than the array");
    return 0;
  }
  int w = ar_fixed_width(t);
  if (w) {
    if (take_buffer(s, c, &a->values)) return -1;
    if ((uint64_t)n > a->values.n / (uint64_t)w) return fail(s, "value buffer shorter than the array");
    return 0;
  }
  /* utf8 / binary: offsets (n + 1 of them) that rise within the data buffer */
  int large = ar_is_large(t);
  size_t ow = large ? 8 : 4;
  if (take_buffer(s, c, &a->offsets) || take_buffer(s, c, &a->values)) return -1;
  if (n == 0 && a->offsets.n == 0) return 0;
  if ((uint64_t)n >= a->offsets.n / ow) return fail(s, "offset buffer shorter than the array");
  uint64_t prev = ar_offset_at(a, large, 0);
  if (large && prev > (uint64_t)INT64_MAX) return fail(s, "negative offset");
  if (!large && prev > (uint64_t)INT32_MAX) return fail(s, "negative offset");
  for (int64_t i = 1; i <= n; i++) {
    uint64_t o = ar_offset_at(a, large, i);
    if (o < prev || o > a->values.n) return fail(s, "offsets decrease or point outside the data");
    prev = o;
  }
  if (prev > a->values.n) return fail(s, "offsets point outside the data");
  return 0;
}

static int open_batch(ar_stream *s, const fb_table *rb, size_t body, int64_t body_len,
                      size_t stream_len, int64_t *length, batch_cursor *c) {
  fb_table comp;
  int rc = fb_table_field(rb, 3, &comp);
  CHECK(rc, "record batch");
  if (rc) return fail(s, "compressed Arrow data is not supported");
  *length = 0;
  CHECK(fb_scalar(rb, 0, 8, length), "record batch");
  if (*length < 0) return fail(s, "negative record batch length");
  memset(c, 0, sizeof *c);
  rc = fb_vector_field(rb, 1, 16, &c->nodes);
  CHECK(rc, "record batch nodes");
  rc = fb_vector_field(rb, 2, 16, &c->buffers);
  CHECK(rc, "record batch buffers");
  c->body = body;
  c->body_len = body_len;
  c->stream_len = stream_len;
  return 0;
}

static int read_record_batch(ar_stream *s, const fb_table *rb, size_t body, int64_t body_len,
                             size_t stream_len) {
  batch_cursor c;
  int64_t length;
  if (open_batch(s, rb, body, body_len, stream_len, &length, &c)) return -1;
  if (s->nfields == 0 && length > INT32_MAX) return fail(s, "too many rows");
  ar_batch *nb = realloc(s->batches, (size_t)(s->nbatches + 1) * sizeof *nb);
  if (!nb) return fail(s, "out of memory");
  s->batches = nb;
  ar_batch *b = &nb[s->nbatches++];
  b->length = length;
  b->columns = calloc(s->nfields ? (size_t)s->nfields : 1, sizeof *b->columns);
  if (!b->columns) return fail(s, "out of memory");
  for (int i = 0; i < s->nfields; i++) {
    ar_field *f = &s->fields[i];
    if (f->dict) {
      ar_dict *d = &s->dicts[f->dict_index];
      if (d->nchunks == 0) return fail(s, "a record batch uses a dictionary before it was sent");
      d->used = 1;
    }
    if (take_array(s, &c, &f->type, f->dict ? f->index_bits : 0, &b->columns[i])) return -1;
    if (b->columns[i].length != length) return fail(s, "a column's length differs from its batch's");
  }
  if (s->rows > INT64_MAX - length) return fail(s, "too many rows");
  s->rows += length;
  return 0;
}

static int read_dictionary_batch(ar_stream *s, const fb_table *db, size_t body, int64_t body_len,
                                 size_t stream_len) {
  int64_t id = 0;
  uint8_t delta = 0;
  CHECK(fb_scalar(db, 0, 8, &id), "dictionary batch");
  CHECK(fb_scalar(db, 2, 1, &delta), "dictionary batch");
  ar_dict *d = NULL;
  for (int i = 0; i < s->ndicts; i++) if (s->dicts[i].id == id) d = &s->dicts[i];
  if (!d) return fail(s, "dictionary batch for an unknown dictionary id");
  fb_table rb;
  int rc = fb_table_field(db, 1, &rb);
  CHECK(rc, "dictionary batch");
  if (!rc) return fail(s, "dictionary batch without data");
  batch_cursor c;
  int64_t length;
  if (open_batch(s, &rb, body, body_len, stream_len, &length, &c)) return -1;
  if (!delta && d->nchunks) {
    if (d->used) return fail(s, "replacing a dictionary after use is not supported");
    d->nchunks = 0;
  }
  ar_array *nc = realloc(d->chunks, (size_t)(d->nchunks + 1) * sizeof *nc);
  if (!nc) return fail(s, "out of memory");
  d->chunks = nc;
  if (take_array(s, &c, &d->type, 0, &nc[d->nchunks])) return -1;
  if (nc[d->nchunks].length != length) return fail(s, "a dictionary's length differs from its batch's");
  if (nc[d->nchunks].null_count) return fail(s, "dictionary values must not be null");
  d->nchunks++;
  return 0;
}

int ar_read(const uint8_t *buf, size_t len, ar_stream *s) {
  ar_span one = {buf, len};
  return ar_read_segments(&one, 1, s);
}

int ar_read_segments(const ar_span *segs, int nseg, ar_stream *s) {
  memset(s, 0, sizeof *s);
  size_t len = 0;
  for (int i = 0; i < nseg; i++) {
    if (segs[i].n > SIZE_MAX / 2 - len) return fail(s, "the stream is too long");
    len += segs[i].n;
  }
  s->segs = segs;
  s->nseg = nseg;
  s->stream_len = len;
  size_t pos = 0;
  int have_schema = 0;
  while (pos < len) {
    if (len - pos < 8) return fail(s, "truncated message prefix");
    uint32_t cont;
    int32_t msize;
    const uint8_t *prefix, *meta;
    if (gather(s, pos, 8, &prefix)) return -1;
    memcpy(&cont, prefix, 4);
    memcpy(&msize, prefix + 4, 4);
    if (cont != 0xFFFFFFFFu) return fail(s, "missing continuation marker");
    if (msize == 0) break;   /* end of stream */
    if (msize < 0 || (size_t)msize > len - pos - 8) return fail(s, "message metadata outside the stream");
    if (gather(s, pos + 8, (size_t)msize, &meta)) return -1;
    pos += 8 + (size_t)msize;
    fb_table msg, header;
    int16_t version = 0;
    uint8_t header_type = 0;
    int64_t body_len = 0;
    CHECK(fb_root(meta, (size_t)msize, &msg), "message");
    CHECK(fb_scalar(&msg, 0, 2, &version), "message");
    CHECK(fb_scalar(&msg, 1, 1, &header_type), "message");
    CHECK(fb_scalar(&msg, 3, 8, &body_len), "message");
    if (version < ARROW_V4) return fail(s, "Arrow metadata version %d is not supported", (int)version + 1);
    if (body_len < 0 || (uint64_t)body_len > len - pos) return fail(s, "message body outside the stream");
    int rc = fb_table_field(&msg, 2, &header);
    CHECK(rc, "message header");
    if (!rc) return fail(s, "message without a header");
    size_t body = pos;
    pos += (size_t)body_len;
    if (header_type == AH_SCHEMA) {
      if (have_schema) return fail(s, "a second schema in one stream");
      if (read_schema(s, &header)) return -1;
      have_schema = 1;
    } else if (!have_schema) {
      return fail(s, "the stream does not start with a schema");
    } else if (header_type == AH_RECORD_BATCH) {
      if (read_record_batch(s, &header, body, body_len, len)) return -1;
    } else if (header_type == AH_DICTIONARY) {
      if (read_dictionary_batch(s, &header, body, body_len, len)) return -1;
    } else {
      return fail(s, "Arrow message type %d is not supported", (int)header_type);
    }
  }
  if (!have_schema) return fail(s, "the stream has no schema");
  return 0;
}

void ar_free(ar_stream *s) {
  for (int i = 0; i < s->nbatches; i++) free(s->batches[i].columns);
  for (int i = 0; i < s->ndicts; i++) free(s->dicts[i].chunks);
  free(s->batches);
  free(s->dicts);
  free(s->fields);
  for (int i = 0; i < s->ncopies; i++) free(s->copies[i]);
  free(s->copies);
  memset(s, 0, sizeof *s);
}

/* ---- R's NA bit patterns in large buffers ---------------------------------- */

/* A scan of a large buffer is bound by memory bandwidth, which one core does
 * not fill here (80 MB: 12 ms alone, 6 ms in two threads; just mapped, 18 and
 * 9 ms), so the second half goes to a thread of its own. It reads memory
 * only, takes no signal (R's thread takes SIGINT), and is waited for. */
#define WIDE_SCAN_MIN ((int64_t)1 << 20)   /* doubles: 8 MB */

typedef struct { const uint8_t *p; int64_t n, count; } scan_part;

static void *scan_part_run(void *arg) {
  scan_part *part = arg;
  part->count = ar_count_r_na(part->p, part->n);
  return NULL;
}

int64_t ar_count_r_na_wide(const uint8_t *p, int64_t n) {
  if (n < WIDE_SCAN_MIN || sysconf(_SC_NPROCESSORS_ONLN) < 2) return ar_count_r_na(p, n);
  int64_t half = n / 2;
  scan_part upper = {p + 8 * half, n - half, 0};
  pthread_t helper;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int failed = pthread_create(&helper, NULL, scan_part_run, &upper);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (failed) return ar_count_r_na(p, n);
  int64_t lower = ar_count_r_na(p, half);
  pthread_join(helper, NULL);
  return lower + upper.count;
}
