/* libFuzzer harness for the worker's msgpack reader and envelope peeking: the
 * code the I/O thread runs on every byte a client sends, before R sees it.
 * Built with AddressSanitizer and UndefinedBehaviorSanitizer by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include "rserver.h"

/* Walks every value (including ext payloads of vectors) as the decoder would. */
static void walk(mp_reader *r, int depth) {
  mp_item it;
  if (depth <= 0) {          /* stop the whole walk, as the real readers do */
    r->err = "too deep";
    return;
  }
  if (mp_next(r, &it)) return;
  if (it.kind == MP_STR) (void)mp_utf8_valid(it.ptr, it.len);
  if (it.kind == MP_EXT && it.ext_type == RB_EXT_VECTOR && it.len >= 5 && it.ptr[0] == 's') {
    mp_reader sub;
    mp_init(&sub, it.ptr + 5, it.len - 5);
    while (sub.pos < sub.len && !sub.err) walk(&sub, depth - 1);
    if (sub.err) r->err = sub.err;
  }
  if (it.kind == MP_ARRAY || it.kind == MP_MAP) {
    uint64_t n = it.kind == MP_MAP ? 2 * (uint64_t)it.len : it.len;
    for (uint64_t i = 0; i < n && !r->err; i++) walk(r, depth - 1);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *err;
  rb_peek pk;
  (void)mp_validate(data, size, RB_MAX_DEPTH, &err);
  (void)rb_peek_envelope(data, size, &pk, &err);   /* the front peeks at what it does not validate */
  mp_reader r;
  mp_init(&r, data, size);
  walk(&r, RB_MAX_DEPTH);
  mp_init(&r, data, size);
  (void)mp_skip_value(&r, RB_MAX_DEPTH);
  return 0;
}
