/* Reading PNG files for plot capture (plots.c): the check that finds a
 * blank page by its pixels. Pure C, no R API (fuzzed: fuzz/fuzz_png.c).
 *
 * It reads files the worker's own device wrote, but treats them as untrusted
 * bytes all the same: every chunk length and every scanline is bounds-checked,
 * and anything it does not understand counts as "not blank" (a picture is
 * shown rather than lost). R inflates the image data (memDecompress), so no
 * zlib is linked here. */
#include <string.h>
#include "rserver.h"

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const uint8_t PNG_SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* Walks the chunks of a PNG; fills the header and palette fields and the
 * concatenated image data (idat may be NULL to only measure it). Returns 0,
 * or -1 when the bytes are not a PNG this check understands. */
int rb_png_parse(const uint8_t *p, size_t n, rb_png *png, uint8_t *idat) {
  memset(png, 0, sizeof *png);
  if (n < 8 || memcmp(p, PNG_SIGNATURE, 8) != 0) return -1;
  size_t at = 8;
  int seen_header = 0;
  while (at + 12 <= n) {
    uint32_t len = be32(p + at);
    const uint8_t *type = p + at + 4, *body = p + at + 8;
    if (len > n - at - 12) return -1;
    if (!memcmp(type, "IHDR", 4)) {
      if (len != 13 || seen_header) return -1;
      png->width = be32(body);
      png->height = be32(body + 4);
      png->depth = body[8];
      png->color = body[9];
      if (body[10] != 0 || body[11] != 0 || body[12] != 0) return -1;   /* interlaced: not ours */
      seen_header = 1;
    } else if (!memcmp(type, "PLTE", 4)) {
      if (len % 3 || len > 768) return -1;
      memcpy(png->palette, body, len);
      png->palette_size = len / 3;
    } else if (!memcmp(type, "tRNS", 4)) {
      if (len <= 256) { memcpy(png->alpha, body, len); png->alpha_size = len; }
    } else if (!memcmp(type, "IDAT", 4)) {
      if (idat) memcpy(idat + png->idat_size, body, len);
      png->idat_size += len;
    } else if (!memcmp(type, "IEND", 4)) {
      return seen_header ? 0 : -1;
    }
    at += 12 + (size_t)len;
  }
  return -1;
}

static int channels_of(int color) {
  switch (color) {
  case 0: return 1;   /* grey */
  case 2: return 3;   /* RGB */
  case 3: return 1;   /* palette */
  case 4: return 2;   /* grey + alpha */
  case 6: return 4;   /* RGBA */
  default: return 0;
  }
}

static uint8_t paeth(uint8_t a, uint8_t b, uint8_t c) {
  int p = a + b - c, pa = p > a ? p - a : a - p, pb = p > b ? p - b : b - p, pc = p > c ? p - c : c - p;
  return (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
}

/* Undoes the filter of one scanline in place (prev: the previous one, unfiltered, or NULL). */
static int unfilter(int filter, uint8_t *row, const uint8_t *prev, size_t len, size_t bpp) {
  for (size_t i = 0; i < len; i++) {
    uint8_t a = i >= bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0, c = (prev && i >= bpp) ? prev[i - bpp] : 0;
    switch (filter) {
    case 0: break;
    case 1: row[i] = (uint8_t)(row[i] + a); break;
    case 2: row[i] = (uint8_t)(row[i] + b); break;
    case 3: row[i] = (uint8_t)(row[i] + ((a + b) >> 1)); break;
    case 4: row[i] = (uint8_t)(row[i] + paeth(a, b, c)); break;
    default: return -1;
    }
  }
  return 0;
}

/* The colour of pixel x of an unfiltered scanline, as RGBA (grey, palette and
 * sub-byte depths included), so that two encodings of one colour compare equal. */
static uint32_t pixel_at(const rb_png *png, const uint8_t *row, size_t x) {
  int depth = png->depth, ch = channels_of(png->color);
  if (depth < 8) {
    size_t bit = x * (size_t)depth;
    unsigned v = (row[bit / 8] >> (8 - depth - bit % 8)) & ((1u << depth) - 1);
    if (png->color == 3) {
      const uint8_t *c = png->palette + 3 * (v < png->palette_size ? v : 0);
      uint8_t alpha = v < png->alpha_size ? png->alpha[v] : 255;
      return (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | alpha;
    }
    return v;   /* grey */
  }
  size_t bytes = (size_t)depth / 8;
  const uint8_t *px = row + x * bytes * (size_t)ch;
  if (png->color == 3) {
    unsigned v = px[0];
    const uint8_t *c = png->palette + 3 * (v < png->palette_size ? v : 0);
    uint8_t alpha = v < png->alpha_size ? png->alpha[v] : 255;
    return (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | alpha;
  }
  uint32_t h = 2166136261u;   /* other layouts: compare the sample bytes (FNV-1a) */
  for (size_t i = 0; i < bytes * (size_t)ch; i++) h = (h ^ px[i]) * 16777619u;
  return h;
}

/* 1 if every pixel has one colour, 0 if not, -1 if the data does not match
 * the header (then the page is shown). pixels: the inflated image data. */
int rb_png_blank(const rb_png *png, uint8_t *pixels, size_t n) {
  int ch = channels_of(png->color);
  int depth = png->depth;
  if (!ch || !(depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)) return -1;
  if ((depth < 8 && png->color != 0 && png->color != 3) || (depth == 16 && png->color == 3)) return -1;
  if (png->width == 0 || png->height == 0 || png->width > (1u << 24) || png->height > (1u << 24)) return -1;
  size_t bits = (size_t)png->width * (size_t)ch * (size_t)depth;
  size_t row_len = (bits + 7) / 8, bpp = ((size_t)ch * (size_t)depth + 7) / 8;
  if (n / (row_len + 1) < png->height || n != (row_len + 1) * png->height) return -1;
  uint8_t *prev = NULL;
  uint32_t first = 0;
  for (uint32_t y = 0; y < png->height; y++) {
    uint8_t *line = pixels + (size_t)y * (row_len + 1);
    if (unfilter(line[0], line + 1, prev, row_len, bpp) != 0) return -1;
    if (y == 0) first = pixel_at(png, line + 1, 0);
    for (uint32_t x = 0; x < png->width; x++)
      if (pixel_at(png, line + 1, x) != first) return 0;
    prev = line + 1;
  }
  return 1;
}
