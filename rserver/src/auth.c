/* CurveZMQ keys and client authentication for a server of sessions
 * (protocol/SPEC.md §10 "Authentication"). Key files are in the certificate
 * format pyzmq's zmq.auth.load_certificate reads: `public-key = "<Z85>"` and,
 * in the secret file, `secret-key = "<Z85>"`. The ZAP handler runs in the
 * front process (front.c), never on R's thread. No R API. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>
#include "rserver.h"

#define Z85_KEY 40
#define KEY_BYTES 32
#define CERT_MAX 4096

/* The Z85 value of `field = "..."` in a certificate's text, into out[41]. */
static int cert_field(const char *text, const char *field, char out[Z85_KEY + 1]) {
  size_t flen = strlen(field);
  for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (strncmp(p, field, flen) != 0) continue;
    p += flen;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != '=') continue;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != '"') continue;
    const char *end = strchr(p, '"');
    uint8_t raw[KEY_BYTES];
    char z[Z85_KEY + 1];
    if (!end || end - p != Z85_KEY) return -1;
    memcpy(z, p, Z85_KEY);
    z[Z85_KEY] = '\0';
    if (!zmq_z85_decode(raw, z)) return -1;   /* not Z85 */
    memcpy(out, z, Z85_KEY + 1);
    return 0;
  }
  return -1;
}

/* The keys in a certificate's text (NUL-terminated): its public key, and the
 * secret one too when secret_key is given. */
int rb_parse_cert(const char *text, char public_key[Z85_KEY + 1], char secret_key[Z85_KEY + 1]) {
  if (cert_field(text, "public-key", public_key) != 0) return -1;
  if (secret_key && cert_field(text, "secret-key", secret_key) != 0) return -2;
  return 0;
}

int rb_read_cert(const char *path, char public_key[Z85_KEY + 1], char secret_key[Z85_KEY + 1],
                 char *err, size_t errlen) {
  char text[CERT_MAX + 1];
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "cannot read the key file %s", path);
    return -1;
  }
  size_t n = fread(text, 1, CERT_MAX, f);
  fclose(f);
  text[n] = '\0';
  int rc = rb_parse_cert(text, public_key, secret_key);
  if (rc == -1)
    snprintf(err, errlen, "%s has no valid public-key line (make keys with `rbridge keygen`)", path);
  else if (rc == -2)
    snprintf(err, errlen, "%s has no valid secret-key line: give the .key_secret file", path);
  return rc < 0 ? -1 : 0;
}

/* The name of the key file in `dir` (NAME.key) whose public key is z85, into
 * name; 0 when there is one. The directory is read at every handshake, so
 * adding or removing a file takes effect for the next connection. */
static int allowed_key(const char *dir, const char *z85, char *name, size_t namelen) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *e;
  int found = -1;
  char path[4096], pub[Z85_KEY + 1], err[256];
  while (found != 0 && (e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n <= 4 || strcmp(e->d_name + n - 4, ".key") != 0 || e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (rb_read_cert(path, pub, NULL, err, sizeof err) != 0 || strcmp(pub, z85) != 0) continue;
    snprintf(name, namelen, "%.*s", (int)(n - 4), e->d_name);
    found = 0;
  }
  closedir(d);
  return found;
}

static void send_str(void *sock, const char *s, int more) {
  zmq_send(sock, s, strlen(s), more ? ZMQ_SNDMORE : 0);
}

/* Answers one ZAP request (ZeroMQ RFC 27) waiting on `zap`, a REP socket.
 * A client is admitted when it offers CURVE and its key is in allow_dir; its
 * user id is "<Z85 key> <file name>". Returns 1 admitted, 0 refused, -1 when
 * nothing could be read. */
int rb_zap_answer(void *zap, const char *allow_dir) {
  zmq_msg_t f[7];
  int n = 0, more = 1;
  size_t sz = sizeof more;
  while (more) {   /* libzmq sends 7 frames for CURVE; any beyond are dropped */
    zmq_msg_t extra, *m = n < 7 ? &f[n] : &extra;
    zmq_msg_init(m);
    if (zmq_msg_recv(m, zap, 0) < 0) { zmq_msg_close(m); break; }
    if (m == &extra) zmq_msg_close(m); else n++;
    if (zmq_getsockopt(zap, ZMQ_RCVMORE, &more, &sz) < 0) more = 0;
  }
  if (n < 2) {
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    if (n == 1) {   /* a REP socket must answer before it can read again */
      send_str(zap, "1.0", 1); send_str(zap, "", 1); send_str(zap, "500", 1);
      send_str(zap, "malformed ZAP request", 1); send_str(zap, "", 1); send_str(zap, "", 0);
    }
    return -1;
  }
  int ok = 0;
  char user[Z85_KEY + 1 + 256] = "", name[256], z85[Z85_KEY + 1];
  if (n >= 7 && zmq_msg_size(&f[0]) == 3 && memcmp(zmq_msg_data(&f[0]), "1.0", 3) == 0 &&
      zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
      zmq_msg_size(&f[6]) == KEY_BYTES && zmq_z85_encode(z85, zmq_msg_data(&f[6]), KEY_BYTES) &&
      allowed_key(allow_dir, z85, name, sizeof name) == 0) {
    ok = 1;
    snprintf(user, sizeof user, "%s %s", z85, name);
  }
  send_str(zap, "1.0", 1);
  zmq_send(zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);   /* request id */
  send_str(zap, ok ? "200" : "400", 1);
  send_str(zap, ok ? "OK" : "client key not allowed", 1);
  send_str(zap, user, 1);
  send_str(zap, "", 0);
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  return ok;
}
