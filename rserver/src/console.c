/* Capture of R console output. R's console writer is replaced while the
 * server runs, so print(), cat(), message(), Rprintf and REprintf all pass
 * through here on the main thread. Output produced while a request runs is
 * sent to that request's client as "output" messages, in order, before the
 * reply; output produced while idle goes to the process's own stdout/stderr.
 * Text is sent at each newline or carriage return, on flush.console(), and,
 * for text without either (progress dots), once it has waited STALE_SECONDS:
 * at the next write, or when R processes events (Sys.sleep, and R's checks
 * for interrupts in long computations).
 * Output from C code that writes to file descriptors directly is not seen. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#define R_NO_REMAP
#define R_INTERFACE_PTRS
#include <Rinternals.h>
#include <Rinterface.h>
#include <R_ext/eventloop.h>
#include "rserver.h"
#include "rserver_r.h"

#define CONSOLE_BUFFER 8192
#define STALE_SECONDS 0.05

static char buffer[CONSOLE_BUFFER];
static size_t used = 0;
static int stream = 0;              /* 0 stdout, 1 stderr */
static int installed = 0;
static double first_unsent = 0;     /* when the oldest buffered byte was written */
static void (*saved_write)(const char *, int);
static void (*saved_write_ex)(const char *, int, int);
static void (*saved_flush)(void);
static void (*saved_process_events)(void);
static void (*saved_polled_events)(void);
static int saved_wait_usec;
static FILE *saved_outputfile, *saved_consolefile;

/* Length of the longest prefix that does not end inside a UTF-8 sequence. */
static size_t complete_utf8(const char *p, size_t n) {
  size_t i = n, back = 0;
  while (i > 0 && back < 4 && ((unsigned char)p[i - 1] & 0xc0) == 0x80) { i--; back++; }
  if (i == 0) return n;
  unsigned char lead = (unsigned char)p[i - 1];
  size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return (back + 1 < want) ? i - 1 : n;
}

static void send_output(rb_request *rq, const char *p, size_t n) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rb_pack_header(&pk, 5, rq->id, "output");
  rb_pack_kv_str(&pk, "stream", stream ? "stderr" : "stdout");
  rb_pack_cstr(&pk, "text");
  if (mp_utf8_valid((const uint8_t *)p, n)) {
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, p, n);
  } else {  /* not UTF-8 (a native-encoded string): raw bytes, see SPEC.md */
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, p, n);
  }
  rb_send_to_client(rq, &sb);
}

static void flush_prefix(size_t n) {
  rb_request *rq = rb_active_request();
  if (n == 0) return;
  if (rq) send_output(rq, buffer, n);
  else if (write(stream ? 2 : 1, buffer, n) < 0) { /* nowhere left to report it */ }
  memmove(buffer, buffer + n, used - n);
  used -= n;
  first_unsent = used ? rb_monotonic() : 0;
}

void rb_console_flush(void) { flush_prefix(used); }

static void flush_if_stale(void) {
  if (used && rb_monotonic() - first_unsent >= STALE_SECONDS) rb_console_flush();
}

static void process_events(void) {
  flush_if_stale();
  if (saved_process_events) saved_process_events();
}

static void polled_events(void) {
  flush_if_stale();
  if (saved_polled_events) saved_polled_events();
}

static void console_write(const char *text, int len, int otype) {
  int to = otype ? 1 : 0;
  if (to != stream) { rb_console_flush(); stream = to; }
  int newline = memchr(text, '\n', (size_t)len) != NULL || memchr(text, '\r', (size_t)len) != NULL;
  if (len > 0 && used == 0) first_unsent = rb_monotonic();
  while (len > 0) {
    size_t take = (size_t)len < CONSOLE_BUFFER - used ? (size_t)len : CONSOLE_BUFFER - used;
    memcpy(buffer + used, text, take);
    used += take; text += take; len -= (int)take;
    if (used == CONSOLE_BUFFER) flush_prefix(complete_utf8(buffer, used));
  }
  if (newline) rb_console_flush();
  else flush_if_stale();
}

void rb_console_install(void) {
  if (installed) return;
  fflush(stdout);
  fflush(stderr);
  saved_write = ptr_R_WriteConsole;
  saved_write_ex = ptr_R_WriteConsoleEx;
  saved_outputfile = R_Outputfile;
  saved_consolefile = R_Consolefile;
  /* With these NULL, R sends all console output to ptr_R_WriteConsoleEx. */
  R_Outputfile = NULL;
  R_Consolefile = NULL;
  ptr_R_WriteConsole = NULL;
  ptr_R_WriteConsoleEx = console_write;
  saved_flush = ptr_R_FlushConsole;
  ptr_R_FlushConsole = rb_console_flush;
  saved_process_events = ptr_R_ProcessEvents;
  ptr_R_ProcessEvents = process_events;
  /* Sys.sleep() and R's other waits call R_PolledEvents each time their
   * wait of R_wait_usec ends: at most STALE_SECONDS, so text flows. */
  saved_polled_events = R_PolledEvents;
  R_PolledEvents = polled_events;
  saved_wait_usec = R_wait_usec;
  if (R_wait_usec <= 0 || R_wait_usec > (int)(STALE_SECONDS * 1e6)) R_wait_usec = (int)(STALE_SECONDS * 1e6);
  installed = 1;
}

void rb_console_restore(void) {
  if (!installed) return;
  rb_console_flush();
  ptr_R_WriteConsole = saved_write;
  ptr_R_WriteConsoleEx = saved_write_ex;
  ptr_R_FlushConsole = saved_flush;
  ptr_R_ProcessEvents = saved_process_events;
  R_PolledEvents = saved_polled_events;
  R_wait_usec = saved_wait_usec;
  R_Outputfile = saved_outputfile;
  R_Consolefile = saved_consolefile;
  installed = 0;
}
