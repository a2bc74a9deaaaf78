/* A server of sessions (protocol/SPEC.md §10; R/sessions.R): the fork server.
 * The preloaded R process makes no ZeroMQ context and no thread. It forks the
 * front (front.c) once, then a session whenever the front asks, reaps both,
 * and turns SIGTERM, SIGINT and SIGHUP into a drain (a second one: at once).
 * A session returns from C_sessions_next into R as a child, with its
 * configuration, and serves its client as a private worker (R/serve.R). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>
#define R_NO_REMAP
#include <Rinternals.h>
#include "rserver.h"
#include "rserver_calls.h"

extern char *R_TempDir;   /* Rembedded.h: a session gets its own */

#define TAIL_BYTES 1500   /* of a session's output, told to its client when it dies */
#define STARTUP_WAIT_MS 15000

typedef struct { pid_t pid; int number; } child;

typedef struct {
  rb_front_config cfg;
  int started;
  int ctl;                  /* our end of the pair with the front */
  int sigfd;
  sigset_t oldmask;         /* R's signal mask, restored in sessions */
  pid_t front;
  int front_status;
  int stops;                /* SIGTERMs (and the like) taken */
  double memory;            /* --session-memory, bytes (0 = none) */
  double kill_front_at;     /* after a drain that overran */
  child *kids;
  int nkids, capkids;
} fork_server;

static fork_server fs;

/* The element `name` of a named list, or NULL. */
static SEXP list_elt(SEXP list, const char *name) {
  SEXP names = Rf_getAttrib(list, R_NamesSymbol);
  for (R_xlen_t i = 0; names != R_NilValue && i < XLENGTH(list); i++)
    if (strcmp(CHAR(STRING_ELT(names, i)), name) == 0) return VECTOR_ELT(list, i);
  return R_NilValue;
}

static double list_num(SEXP list, const char *name, double dflt) {
  SEXP v = list_elt(list, name);
  return Rf_length(v) == 1 ? Rf_asReal(v) : dflt;
}

static const char *list_str(SEXP list, const char *name) {
  SEXP v = list_elt(list, name);
  return TYPEOF(v) == STRSXP && XLENGTH(v) == 1 ? CHAR(STRING_ELT(v, 0)) : "";
}

static int version_ok(char *err, size_t errlen) {
  int major, minor, patch;
  zmq_version(&major, &minor, &patch);
  if (major * 10000 + minor * 100 + patch < 40303) {
    snprintf(err, errlen, "libzmq %d.%d.%d is too old: a server needs 4.3.3 or later (CVE-2020-15166)",
             major, minor, patch);
    return 0;
  }
  if (!zmq_has("curve")) {
    snprintf(err, errlen, "this libzmq was built without CURVE, which a server needs");
    return 0;
  }
  return 1;
}

/* The libzmq this package uses: list(version, curve), for `rbridge doctor`. */
SEXP C_zmq_info(void) {
  int major, minor, patch;
  char version[32];
  zmq_version(&major, &minor, &patch);
  snprintf(version, sizeof version, "%d.%d.%d", major, minor, patch);
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 2)), names = PROTECT(Rf_allocVector(STRSXP, 2));
  SET_VECTOR_ELT(out, 0, Rf_mkString(version));
  SET_VECTOR_ELT(out, 1, Rf_ScalarLogical(zmq_has("curve") ? TRUE : FALSE));
  SET_STRING_ELT(names, 0, Rf_mkChar("version"));
  SET_STRING_ELT(names, 1, Rf_mkChar("curve"));
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(2);
  return out;
}

static void stop_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGCHLD);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGHUP);
}

/* Waits for the front's first word (bound, or why not). */
static int await_front(char *text, size_t n) {
  struct pollfd p = {fs.ctl, POLLIN, 0};
  rb_ctl_msg m;
  if (poll(&p, 1, STARTUP_WAIT_MS) <= 0 || recv(fs.ctl, &m, sizeof m, 0) != (ssize_t)sizeof m) {
    snprintf(text, n, "the front process did not start");
    return -1;
  }
  m.text[sizeof m.text - 1] = '\0';
  snprintf(text, n, "%s", m.text);
  return m.kind == RB_CTL_BOUND ? 0 : -1;
}

static void shut_down(void) {
  for (int i = 0; i < fs.nkids; i++) kill(fs.kids[i].pid, SIGKILL);
  if (fs.front > 0) kill(fs.front, SIGKILL);
  while (fs.nkids > 0 || fs.front > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) break;
    if (pid == fs.front) fs.front = 0;
    for (int i = 0; i < fs.nkids; i++)
      if (fs.kids[i].pid == pid) fs.kids[i] = fs.kids[--fs.nkids];
  }
  rb_shm_sweep();
  rb_remove_tree(fs.cfg.dir);
  close(fs.ctl);
  close(fs.sigfd);
  free(fs.kids);
  sigprocmask(SIG_SETMASK, &fs.oldmask, NULL);
  fs.started = 0;
}

SEXP C_sessions_start(SEXP config) {
  if (fs.started) Rf_error("rbridge: a server of sessions already runs in this R process");
  if (TYPEOF(config) != VECSXP) Rf_error("rbridge: the configuration must be a list");
  char err[1700];
  if (!version_ok(err, sizeof err)) Rf_error("rbridge: %s", err);
  memset(&fs, 0, sizeof fs);
  rb_front_config *c = &fs.cfg;
  snprintf(c->endpoint, sizeof c->endpoint, "%s", list_str(config, "endpoint"));
  snprintf(c->allow_dir, sizeof c->allow_dir, "%s", list_str(config, "allow"));
  snprintf(c->r_tempdir, sizeof c->r_tempdir, "%s", list_str(config, "r_tempdir"));
  c->max_sessions = (int)list_num(config, "max_sessions", 64);
  c->idle_timeout = list_num(config, "idle_timeout", 0);
  c->client_grace = list_num(config, "client_grace", 10);
  c->drain_timeout = list_num(config, "drain_timeout", 8);
  c->liveness = list_num(config, "liveness", 30);
  c->session_cpu = list_num(config, "session_cpu", 0);
  c->interrupt_grace = list_num(config, "interrupt_grace", 5);
  c->max_envelope = (size_t)list_num(config, "max_envelope", 256.0 * 1048576);
  c->max_frame = (int64_t)list_num(config, "max_frame", 2147483647.0);
  fs.memory = list_num(config, "session_memory", 0);
  if (c->max_sessions < 1 || c->max_sessions > 10000) Rf_error("rbridge: max_sessions must be from 1 to 10000");
  const char *key = list_str(config, "server_key");
  if (key[0]) {
    char pub[41];
    if (rb_read_cert(key, pub, c->server_secret, err, sizeof err) != 0) Rf_error("rbridge: %s", err);
    struct stat st;
    if (!c->allow_dir[0] || stat(c->allow_dir, &st) != 0 || !S_ISDIR(st.st_mode))
      Rf_error("rbridge: with a server key, `allow` must name the directory of client public keys");
  }
  const char *tmp = getenv("TMPDIR");
  snprintf(c->dir, sizeof c->dir, "%s/rbridge-server-XXXXXX", tmp && *tmp && strlen(tmp) < 400 ? tmp : "/tmp");
  if (!mkdtemp(c->dir)) Rf_error("rbridge: cannot make the server's directory: %s", strerror(errno));

  int sp[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
    rb_remove_tree(c->dir);
    Rf_error("rbridge: socketpair: %s", strerror(errno));
  }
  sigset_t stops;
  stop_signals(&stops);
  sigprocmask(SIG_BLOCK, &stops, &fs.oldmask);
  fs.sigfd = signalfd(-1, &stops, SFD_CLOEXEC | SFD_NONBLOCK);
  fs.ctl = sp[0];
  fs.started = 1;
  pid_t pid = fs.sigfd < 0 ? -1 : fork();
  if (pid == 0) {   /* the front: no R from here on */
    close(sp[0]);
    close(fs.sigfd);
    rb_front_main(c, sp[1]);
  }
  close(sp[1]);
  fs.front = pid > 0 ? pid : 0;
  if (pid < 0 || await_front(err, sizeof err) != 0) {
    if (pid < 0) snprintf(err, sizeof err, "cannot start the front process: %s", strerror(errno));
    shut_down();
    Rf_error("rbridge: %s", err);
  }
  SEXP out = PROTECT(Rf_allocVector(STRSXP, 2));   /* the endpoint bound, our directory */
  SET_STRING_ELT(out, 0, Rf_mkChar(err));
  SET_STRING_ELT(out, 1, Rf_mkChar(c->dir));
  UNPROTECT(1);
  return out;
}

/* The last bytes a session wrote to its console (stdout and stderr), whole lines. */
static void read_tail(const char *path, char *out, size_t n) {
  out[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  off_t end = lseek(fd, 0, SEEK_END), from = end > TAIL_BYTES ? end - TAIL_BYTES : 0;
  ssize_t got = from >= 0 ? pread(fd, out, n - 1 < TAIL_BYTES ? n - 1 : TAIL_BYTES, from) : -1;
  close(fd);
  if (got <= 0) return;
  out[got] = '\0';
  char *start = out;
  if (from > 0 && (start = strchr(out, '\n')) != NULL) memmove(out, start + 1, strlen(start + 1) + 1);
  size_t len = strlen(out);
  while (len && out[len - 1] == '\n') out[--len] = '\0';
}

static void reap_all(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid == fs.front) {
      fs.front = 0;
      fs.front_status = status;
      continue;
    }
    for (int i = 0; i < fs.nkids; i++) {
      if (fs.kids[i].pid != pid) continue;
      char path[1100], tail[TAIL_BYTES + 1];
      rb_session_path(path, sizeof path, fs.cfg.dir, fs.kids[i].number, "console.log");
      read_tail(path, tail, sizeof tail);
      rb_session_path(path, sizeof path, fs.cfg.dir, fs.kids[i].number, "");
      rb_remove_tree(path);
      rb_shm_sweep();   /* its segments: their creator is gone */
      rb_ctl_send(fs.ctl, RB_CTL_EXITED, fs.kids[i].number, pid, status, tail);
      fs.kids[i] = fs.kids[--fs.nkids];
      break;
    }
  }
}

static long vm_data(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmData: %ld kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb * 1024;
}

static void set_limit(int resource, rlim_t soft, rlim_t hard) {
  struct rlimit r = {soft, hard};
  setrlimit(resource, &r);
}

/* In a new session: its own directory, console file, temporary directory,
 * limits and process group; what R needs to serve, as a list. */
static SEXP become_session(int number, const char *user) {
  sigprocmask(SIG_SETMASK, &fs.oldmask, NULL);
  close(fs.ctl);
  close(fs.sigfd);
  free(fs.kids);
  fs.started = 0;
  setpgid(0, 0);   /* a Ctrl-C at the server's terminal is the server's, not the sessions' */
  char dir[1100], path[1200];
  rb_session_path(dir, sizeof dir, fs.cfg.dir, number, "");
  mkdir(dir, 0700);
  snprintf(path, sizeof path, "%s/console.log", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  snprintf(path, sizeof path, "%s/tmp", dir);
  mkdir(path, 0700);
  R_TempDir = strdup(path);   /* tempfile() is the session's; the server's own stays */
  setenv("TMPDIR", path, 1);
  set_limit(RLIMIT_CORE, 0, 0);
  if (fs.cfg.session_cpu > 0) {
    rlim_t cpu = (rlim_t)(fs.cfg.session_cpu + 0.999);
    set_limit(RLIMIT_CPU, cpu, cpu + 2);
  }
  if (fs.memory > 0) {   /* beyond what it shares with the preloaded parent */
    rlim_t data = (rlim_t)vm_data() + (rlim_t)fs.memory + ((rlim_t)64 << 20);
    set_limit(RLIMIT_DATA, data, data);
  }
  const char *space = strchr(user, ' ');
  char z85[41] = "";
  if (space && space - user == 40) memcpy(z85, user, 40);
  snprintf(path, sizeof path, "ipc://%s/socket", dir);
  const char *names[] = {"number", "endpoint", "parent_pid", "memory", "interrupt_grace", "liveness",
                         "max_envelope", "max_frame", "key_name", "key", ""};
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 10));
  SEXP nm = PROTECT(Rf_allocVector(STRSXP, 10));
  for (int i = 0; i < 10; i++) SET_STRING_ELT(nm, i, Rf_mkChar(names[i]));
  SET_VECTOR_ELT(out, 0, Rf_ScalarInteger(number));
  SET_VECTOR_ELT(out, 1, Rf_mkString(path));
  SET_VECTOR_ELT(out, 2, Rf_ScalarReal((double)getppid()));
  SET_VECTOR_ELT(out, 3, Rf_ScalarReal(fs.memory));
  SET_VECTOR_ELT(out, 4, Rf_ScalarReal(fs.cfg.interrupt_grace));
  SET_VECTOR_ELT(out, 5, Rf_ScalarReal(fs.cfg.liveness));
  SET_VECTOR_ELT(out, 6, Rf_ScalarReal((double)fs.cfg.max_envelope));
  SET_VECTOR_ELT(out, 7, Rf_ScalarReal((double)fs.cfg.max_frame));
  SET_VECTOR_ELT(out, 8, Rf_mkString(space ? space + 1 : ""));
  SET_VECTOR_ELT(out, 9, Rf_mkString(z85));
  Rf_setAttrib(out, R_NamesSymbol, nm);
  UNPROTECT(2);
  return out;
}

/* One round of the fork server: waits up to a second for the front or a
 * signal. Returns NULL to go on, FALSE when the server has stopped, and in a
 * new session (a child) its configuration, as a list. */
SEXP C_sessions_next(void) {
  if (!fs.started) Rf_error("rbridge: no server of sessions runs in this R process");
  struct pollfd p[2] = {{fs.ctl, POLLIN, 0}, {fs.sigfd, POLLIN, 0}};
  poll(p, 2, 1000);
  if (p[1].revents & POLLIN) {
    struct signalfd_siginfo si;
    while (read(fs.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
      if (si.ssi_signo == SIGCHLD) continue;
      fs.stops++;
      rb_ctl_send(fs.ctl, fs.stops == 1 ? RB_CTL_DRAIN : RB_CTL_DRAIN_NOW, 0, 0, 0, NULL);
      if (fs.kill_front_at == 0) fs.kill_front_at = rb_monotonic() + fs.cfg.drain_timeout + 5;
    }
  }
  reap_all();
  if (fs.front == 0 || (fs.kill_front_at > 0 && rb_monotonic() > fs.kill_front_at)) {
    int status = fs.front_status, clean = fs.front == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    shut_down();
    if (!clean) Rf_error("rbridge: the server's front process ended abnormally (status %d)", status);
    return Rf_ScalarLogical(FALSE);
  }
  if (!(p[0].revents & (POLLIN | POLLHUP))) return R_NilValue;
  rb_ctl_msg m;
  ssize_t got = recv(fs.ctl, &m, sizeof m, MSG_DONTWAIT);
  if (got != (ssize_t)sizeof m || m.kind != RB_CTL_FORK) return R_NilValue;
  m.text[sizeof m.text - 1] = '\0';
  if (fs.nkids == fs.capkids) {
    child *more = realloc(fs.kids, (size_t)(fs.capkids + 16) * sizeof *more);
    if (!more) {
      rb_ctl_send(fs.ctl, RB_CTL_FORK_FAILED, m.number, 0, 0, "out of memory");
      return R_NilValue;
    }
    fs.kids = more;
    fs.capkids += 16;
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    rb_ctl_send(fs.ctl, RB_CTL_FORK_FAILED, m.number, 0, 0, strerror(errno));
    return R_NilValue;
  }
  if (pid == 0) return become_session(m.number, m.text);
  fs.kids[fs.nkids++] = (child){pid, m.number};
  rb_ctl_send(fs.ctl, RB_CTL_FORKED, m.number, pid, 0, NULL);
  return R_NilValue;
}

/* A session's end: no R exit code (the parent's temporary directory and
 * files are not the session's to remove). */
SEXP C_session_exit(SEXP status) {
  fflush(stdout);
  fflush(stderr);
  _exit(Rf_asInteger(status));
}
