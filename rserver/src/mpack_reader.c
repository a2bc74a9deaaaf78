/* Bounds-checked msgpack reader. Pure C: used by the I/O thread to validate
 * and peek at envelopes and by the main thread to build R objects.
 *
 * Every length is checked against the bytes that remain before it is used,
 * and container counts are bounded by the remaining bytes (each element takes
 * at least one byte), so a hostile header cannot cause a large allocation.
 * Multi-byte numbers are read byte by byte: frames need not be aligned. */
#include <string.h>
#include "rserver.h"

void mp_init(mp_reader *r, const void *buf, size_t len) {
  r->buf = (const uint8_t *)buf;
  r->len = len;
  r->pos = 0;
  r->err = NULL;
}

static int fail(mp_reader *r, const char *msg) {
  if (!r->err) r->err = msg;
  return -1;
}

static int need(mp_reader *r, size_t n) {
  if (r->len - r->pos < n) return fail(r, "truncated msgpack data");
  return 0;
}

static uint64_t be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* Reads an n-byte big-endian length/number at the cursor. */
static int take_be(mp_reader *r, int n, uint64_t *out) {
  if (need(r, (size_t)n)) return -1;
  *out = be(r->buf + r->pos, n);
  r->pos += (size_t)n;
  return 0;
}

static int body(mp_reader *r, mp_item *it, uint64_t n) {
  if (need(r, (size_t)n)) return -1;
  it->len = (uint32_t)n;
  it->ptr = r->buf + r->pos;
  r->pos += (size_t)n;
  return 0;
}

static int container(mp_reader *r, mp_item *it, mp_kind kind, uint64_t n) {
  uint64_t min_bytes = kind == MP_MAP ? 2 * n : n;
  if (min_bytes > r->len - r->pos) return fail(r, "container count exceeds the data");
  it->kind = kind;
  it->len = (uint32_t)n;
  return 0;
}

int mp_next(mp_reader *r, mp_item *it) {
  uint64_t u;
  memset(it, 0, sizeof *it);
  if (need(r, 1)) return -1;
  uint8_t b = r->buf[r->pos++];
  if (b <= 0x7f) { it->kind = MP_INT; it->v.i = b; return 0; }
  if (b >= 0xe0) { it->kind = MP_INT; it->v.i = (int8_t)b; return 0; }
  if ((b & 0xf0) == 0x80) return container(r, it, MP_MAP, b & 0x0f);
  if ((b & 0xf0) == 0x90) return container(r, it, MP_ARRAY, b & 0x0f);
  if ((b & 0xe0) == 0xa0) { it->kind = MP_STR; return body(r, it, b & 0x1f); }
  switch (b) {
  case 0xc0: it->kind = MP_NIL; return 0;
  case 0xc2: it->kind = MP_BOOL; it->v.b = 0; return 0;
  case 0xc3: it->kind = MP_BOOL; it->v.b = 1; return 0;
  case 0xc4: case 0xc5: case 0xc6:
    it->kind = MP_BIN;
    if (take_be(r, 1 << (b - 0xc4), &u)) return -1;
    return body(r, it, u);
  case 0xc7: case 0xc8: case 0xc9: {
    if (take_be(r, 1 << (b - 0xc7), &u)) return -1;
    if (need(r, 1)) return -1;
    it->kind = MP_EXT;
    it->ext_type = (int8_t)r->buf[r->pos++];
    return body(r, it, u);
  }
  case 0xca: {
    float f; uint32_t w;
    if (take_be(r, 4, &u)) return -1;
    w = (uint32_t)u; memcpy(&f, &w, 4);
    it->kind = MP_FLOAT; it->v.f = f; return 0;
  }
  case 0xcb: {
    double d;
    if (take_be(r, 8, &u)) return -1;
    memcpy(&d, &u, 8);
    it->kind = MP_FLOAT; it->v.f = d; return 0;
  }
  case 0xcc: case 0xcd: case 0xce: case 0xcf:
    if (take_be(r, 1 << (b - 0xcc), &u)) return -1;
    it->kind = MP_UINT; it->v.u = u;
    if (u <= INT64_MAX) { it->kind = MP_INT; it->v.i = (int64_t)u; }
    return 0;
  case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
    int n = 1 << (b - 0xd0);
    if (take_be(r, n, &u)) return -1;
    int shift = 64 - 8 * n;   /* sign-extend from n bytes */
    it->kind = MP_INT;
    it->v.i = shift ? ((int64_t)(u << shift)) >> shift : (int64_t)u;
    return 0;
  }
  case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
    if (need(r, 1)) return -1;
    it->kind = MP_EXT;
    it->ext_type = (int8_t)r->buf[r->pos++];
    return body(r, it, (uint64_t)1 << (b - 0xd4));
  case 0xd9: case 0xda: case 0xdb:
    it->kind = MP_STR;
    if (take_be(r, 1 << (b - 0xd9), &u)) return -1;
    return body(r, it, u);
  case 0xdc: case 0xdd:
    if (take_be(r, 2 << (b - 0xdc), &u)) return -1;
    return container(r, it, MP_ARRAY, u);
  case 0xde: case 0xdf:
    if (take_be(r, 2 << (b - 0xde), &u)) return -1;
    return container(r, it, MP_MAP, u);
  default:
    return fail(r, "invalid msgpack type byte 0xc1");
  }
}

int mp_skip_value(mp_reader *r, int depth) {
  mp_item it;
  if (mp_next(r, &it)) return -1;
  if (it.kind != MP_ARRAY && it.kind != MP_MAP) return 0;
  if (depth <= 0) return fail(r, "msgpack nesting is too deep");
  uint64_t n = it.kind == MP_MAP ? 2 * (uint64_t)it.len : it.len;
  for (uint64_t i = 0; i < n; i++)
    if (mp_skip_value(r, depth - 1)) return -1;
  return 0;
}

int mp_utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) { i++; continue; }
    else if ((c & 0xe0) == 0xc0) { k = 1; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { k = 2; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { k = 3; cp = c & 0x07; }
    else return 0;
    if (n - i <= k) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    /* reject overlong forms, surrogates and values beyond U+10FFFF */
    if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
      return 0;
    i += k + 1;
  }
  return 1;
}

/* Walks one value, checking structure, depth and that every str is UTF-8. */
static int validate(mp_reader *r, int depth) {
  mp_item it;
  if (mp_next(r, &it)) return -1;
  if (it.kind == MP_STR && !mp_utf8_valid(it.ptr, it.len))
    return fail(r, "string is not valid UTF-8");
  if (it.kind != MP_ARRAY && it.kind != MP_MAP) return 0;
  if (depth <= 0) return fail(r, "msgpack nesting is too deep");
  uint64_t n = it.kind == MP_MAP ? 2 * (uint64_t)it.len : it.len;
  for (uint64_t i = 0; i < n; i++)
    if (validate(r, depth - 1)) return -1;
  return 0;
}

int mp_validate(const void *buf, size_t len, int max_depth, const char **err) {
  mp_reader r;
  mp_init(&r, buf, len);
  if (validate(&r, max_depth) == 0 && r.pos != len) fail(&r, "trailing bytes after the msgpack value");
  *err = r.err;
  return r.err ? -1 : 0;
}

int mp_str_eq(const mp_item *it, const char *s) {
  size_t n = strlen(s);
  return it->kind == MP_STR && it->len == n && memcmp(it->ptr, s, n) == 0;
}
