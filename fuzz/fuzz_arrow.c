/* libFuzzer harness for the worker's Arrow IPC stream reader (arrow_read.c):
 * parsing and validation of every flatbuffer, buffer and offset of a payload.
 * After a successful parse it reads every value the way arrow_to_r.c does, so
 * that a validation gap shows up as an out-of-bounds read under ASan. The same
 * input is then read again split over several separately allocated segments
 * (as frames arrive), which must give the same verdict.
 * Built with AddressSanitizer and UndefinedBehaviorSanitizer by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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

static void touch_stream(const ar_stream *s) {
  ar_span v;
  ar_schema_meta(s, "rbridge.kind", &v);
  for (int f = 0; f < s->nfields; f++) {
    ar_field_meta(&s->fields[f], "rbridge.units", &v);
    for (int b = 0; b < s->nbatches; b++)
      touch_array(&s->batches[b].columns[f], &s->fields[f].type, s->fields[f].dict ? s->fields[f].index_bits : 0);
  }
  for (int d = 0; d < s->ndicts; d++)
    for (int c = 0; c < s->dicts[d].nchunks; c++) touch_array(&s->dicts[d].chunks[c], &s->dicts[d].type, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ar_stream s;
  int whole = ar_read(data, size, &s);
  if (whole == 0) touch_stream(&s);
  ar_free(&s);

  enum { MAX_SEGS = 6 };
  ar_span segs[MAX_SEGS];
  int nseg = 2 + (int)(size % (MAX_SEGS - 1));
  for (int i = 0; i < nseg; i++) {
    size_t from = size * (size_t)i / (size_t)nseg, to = size * (size_t)(i + 1) / (size_t)nseg;
    uint8_t *copy = malloc(to - from + 1);   /* its own allocation: ASan sees reads past it */
    memcpy(copy, data + from, to - from);
    segs[i] = (ar_span){copy, to - from};
  }
  int split = ar_read_segments(segs, nseg, &s);
  if (split == 0) touch_stream(&s);
  ar_free(&s);
  for (int i = 0; i < nseg; i++) free((void *)segs[i].p);
  /* the split can only add "split too often" failures, never accept more */
  if (split == 0 && whole != 0) abort();
  return 0;
}
