/* libFuzzer harness for the worker's Arrow IPC stream reader (arrow_read.c):
 * parsing and validation of every flatbuffer, buffer and offset of a payload.
 * After a successful parse it reads every value the way arrow_to_r.c does, so
 * that a validation gap shows up as an out-of-bounds read under ASan.
 * Built with AddressSanitizer and UndefinedBehaviorSanitizer by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "arrow_format.h"

static volatile uint64_t sink;

static void touch_array(const ar_array *a, const ar_type *t, int index_bits) {
  for (int64_t i = 0; i < a->length; i++) {
    if (!ar_valid(a, i)) continue;
    if (index_bits) { sink += a->values.p[(size_t)i * (size_t)(index_bits / 8)]; continue; }
    if (t->type == AT_BOOL) { sink += a->values.p[i >> 3]; continue; }
    int w = ar_fixed_width(t);
    if (w) { sink += a->values.p[(size_t)i * (size_t)w + (size_t)w - 1]; continue; }
    if (ar_is_var(t)) {
      uint64_t lo = ar_offset_at(a, ar_is_large(t), i), hi = ar_offset_at(a, ar_is_large(t), i + 1);
      if (hi > lo) sink += a->values.p[lo] + a->values.p[hi - 1];
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ar_stream s;
  if (ar_read(data, size, &s) == 0) {
    ar_span v;
    ar_schema_meta(&s, "rbridge.kind", &v);
    for (int f = 0; f < s.nfields; f++) {
      ar_field_meta(&s.fields[f], "rbridge.units", &v);
      for (int b = 0; b < s.nbatches; b++)
        touch_array(&s.batches[b].columns[f], &s.fields[f].type, s.fields[f].dict ? s.fields[f].index_bits : 0);
    }
    for (int d = 0; d < s.ndicts; d++)
      for (int c = 0; c < s.dicts[d].nchunks; c++) touch_array(&s.dicts[d].chunks[c], &s.dicts[d].type, 0);
  }
  ar_free(&s);
  return 0;
}
