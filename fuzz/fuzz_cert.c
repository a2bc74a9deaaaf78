/* libFuzzer harness for the key-file parser of a server of sessions: the
 * server reads its own key and, at every handshake, every file of its
 * `--allow` directory, which others may have written. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "rserver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  char pub[41], sec[41];
  (void)rb_parse_cert(text, pub, NULL);
  (void)rb_parse_cert(text, pub, sec);
  free(text);
  return 0;
}
