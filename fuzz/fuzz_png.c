/* libFuzzer harness for the blank-page check of plot capture (png_read.c).
 * The image data is taken as already inflated (R inflates it in the worker),
 * so every header, palette and scanline filter reaches the pixel walk. */
#include <stdint.h>
#include <stdlib.h>
#include "rserver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rb_png png;
  if (rb_png_parse(data, size, &png, NULL) != 0) return 0;
  uint8_t *pixels = malloc(png.idat_size ? png.idat_size : 1);
  if (!pixels) return 0;
  if (rb_png_parse(data, size, &png, pixels) == 0) (void)rb_png_blank(&png, pixels, png.idat_size);
  free(pixels);
  return 0;
}
