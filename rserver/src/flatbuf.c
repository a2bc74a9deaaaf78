/* Flatbuffers, the encoding of Arrow IPC metadata: a reader that checks every
 * offset against the buffer before following it (input is hostile and may be
 * unaligned, so scalars are read with memcpy), and a builder for the messages
 * the worker writes. No R API. */
#include <stdlib.h>
#include <string.h>
#include "arrow_format.h"

static uint32_t rd_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
int64_t fb_i64_at(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }

static int table_at(const uint8_t *buf, size_t len, size_t pos, fb_table *t) {
  if (pos > len || len - pos < 4) return -1;
  int32_t soff;
  memcpy(&soff, buf + pos, 4);
  int64_t vt = (int64_t)pos - (int64_t)soff;
  if (vt < 0 || (uint64_t)vt > len || len - (size_t)vt < 4) return -1;
  uint16_t vt_len = rd_u16(buf + vt), tbl_len = rd_u16(buf + vt + 2);
  if (vt_len < 4 || (vt_len & 1) || len - (size_t)vt < vt_len) return -1;
  if (tbl_len < 4 || len - pos < tbl_len) return -1;
  *t = (fb_table){buf, len, pos, (size_t)vt, vt_len, tbl_len};
  return 0;
}

int fb_root(const uint8_t *buf, size_t len, fb_table *t) {
  if (len < 4) return -1;
  return table_at(buf, len, rd_u32(buf), t);
}

/* Position of field `id` inside the table, 0 when absent, -1 when malformed. */
static int64_t field_pos(const fb_table *t, int id, size_t size) {
  size_t slot = 4 + 2 * (size_t)id;
  if (id < 0 || slot + 2 > t->vt_len) return 0;
  uint16_t off = rd_u16(t->buf + t->vt + slot);
  if (off == 0) return 0;
  if (off < 4 || (size_t)off + size > t->tbl_len) return -1;
  return (int64_t)(t->pos + off);
}

int fb_scalar(const fb_table *t, int id, size_t size, void *out) {
  int64_t p = field_pos(t, id, size);
  if (p <= 0) return (int)p;
  memcpy(out, t->buf + p, size);
  return 1;
}

/* Follows the uoffset stored in field `id`. */
static int64_t follow(const fb_table *t, int id) {
  int64_t p = field_pos(t, id, 4);
  if (p <= 0) return p;
  uint64_t target = (uint64_t)p + rd_u32(t->buf + p);
  if (target >= t->len) return -1;
  return (int64_t)target;
}

int fb_table_field(const fb_table *t, int id, fb_table *out) {
  int64_t p = follow(t, id);
  if (p <= 0) return (int)p;
  return table_at(t->buf, t->len, (size_t)p, out) ? -1 : 1;
}

static int vector_at(const uint8_t *buf, size_t len, size_t p, size_t elem_size, fb_vector *out) {
  if (len - p < 4) return -1;
  uint32_t n = rd_u32(buf + p);
  if (elem_size && (uint64_t)n > (len - p - 4) / elem_size) return -1;
  *out = (fb_vector){buf, p + 4, n};
  return 1;
}

int fb_vector_field(const fb_table *t, int id, size_t elem_size, fb_vector *out) {
  int64_t p = follow(t, id);
  if (p <= 0) return (int)p;
  return vector_at(t->buf, t->len, (size_t)p, elem_size, out);
}

int fb_string_field(const fb_table *t, int id, const uint8_t **s, uint32_t *n) {
  fb_vector v;
  int rc = fb_vector_field(t, id, 1, &v);
  if (rc <= 0) return rc;
  *s = v.buf + v.pos;
  *n = v.n;
  return 1;
}

/* Element i of a vector of tables (each element a uoffset). */
int fb_vector_table(const fb_vector *v, uint32_t i, size_t buflen, fb_table *out) {
  if (i >= v->n) return -1;
  size_t p = v->pos + 4 * (size_t)i;
  uint64_t target = (uint64_t)p + rd_u32(v->buf + p);
  if (target >= buflen) return -1;
  return table_at(v->buf, buflen, (size_t)target, out);
}

/* ---- builder ----------------------------------------------------------------- */

void fb_builder_init(fb_builder *b) { memset(b, 0, sizeof *b); }
void fb_builder_free(fb_builder *b) { free(b->buf); memset(b, 0, sizeof *b); }

static size_t reserve(fb_builder *b, size_t n) {
  size_t at = b->len;
  if (b->failed) return at;
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) cap *= 2;
    uint8_t *nb = realloc(b->buf, cap);
    if (!nb) { b->failed = 1; return at; }
    memset(nb + b->cap, 0, cap - b->cap);
    b->buf = nb;
    b->cap = cap;
  }
  b->len += n;
  return at;
}

static void put(fb_builder *b, size_t at, const void *v, size_t n) {
  if (!b->failed) memcpy(b->buf + at, v, n);
}

void fb_align(fb_builder *b, size_t a) {
  if (b->len % a) reserve(b, a - b->len % a);   /* new bytes are zero */
}

size_t fb_root_offset(fb_builder *b) { return reserve(b, 4); }

/* The vtable is written first with room for nslots; fields fill it in. */
fb_tab fb_tab_begin(fb_builder *b, int nslots) {
  fb_align(b, 2);
  fb_tab t;
  t.nslots = nslots;
  t.vt = reserve(b, 4 + 2 * (size_t)nslots);
  uint16_t vt_len = (uint16_t)(4 + 2 * nslots);
  put(b, t.vt, &vt_len, 2);
  fb_align(b, 8);
  t.start = reserve(b, 4);
  int32_t soff = (int32_t)(t.start - t.vt);
  put(b, t.start, &soff, 4);
  return t;
}

static void set_slot(fb_builder *b, fb_tab *t, int id, size_t at) {
  uint16_t off = (uint16_t)(at - t->start);
  if (id < t->nslots) put(b, t->vt + 4 + 2 * (size_t)id, &off, 2);
}

void fb_tab_scalar(fb_builder *b, fb_tab *t, int id, const void *v, size_t size) {
  fb_align(b, size);
  size_t at = reserve(b, size);
  put(b, at, v, size);
  set_slot(b, t, id, at);
}

size_t fb_tab_offset(fb_builder *b, fb_tab *t, int id) {
  fb_align(b, 4);
  size_t at = reserve(b, 4);
  set_slot(b, t, id, at);
  return at;
}

void fb_tab_end(fb_builder *b, fb_tab *t) {
  uint16_t tbl_len = (uint16_t)(b->len - t->start);
  put(b, t->vt + 2, &tbl_len, 2);
}

/* Offsets point forward: the target must come after the slot. */
void fb_patch(fb_builder *b, size_t slot, size_t target) {
  uint32_t rel = (uint32_t)(target - slot);
  put(b, slot, &rel, 4);
}

size_t fb_string(fb_builder *b, const char *s, size_t n) {
  fb_align(b, 4);
  size_t at = reserve(b, 4 + n + 1);
  uint32_t len = (uint32_t)n;
  put(b, at, &len, 4);
  put(b, at + 4, s, n);
  return at;
}

/* A vector's length, placed so that its elements start aligned to `align`. */
size_t fb_vector_begin(fb_builder *b, uint32_t n, size_t elem_size, size_t align) {
  fb_align(b, align < 4 ? 4 : align);
  if (align > 4) reserve(b, align - 4);
  size_t at = reserve(b, 4 + (size_t)n * elem_size);
  put(b, at, &n, 4);
  return at;
}
