/* Envelope helpers shared by the I/O thread and the main thread. Pure C.
 * See protocol/SPEC.md for the envelope fields. */
#include <string.h>
#include "rserver.h"

static int read_u64(const mp_item *it, uint64_t *out) {
  if (it->kind == MP_INT && it->v.i >= 0) { *out = (uint64_t)it->v.i; return 0; }
  if (it->kind == MP_UINT) { *out = it->v.u; return 0; }
  return -1;
}

/* Peeks at the routing-relevant fields of an envelope. Every read is bounds
 * checked, so any bytes are safe here; what acts on the whole envelope
 * validates it first (mp_validate). Unknown keys are skipped. */
int rb_peek_envelope(const void *buf, size_t len, rb_peek *pk, const char **err) {
  mp_reader r;
  mp_item it, key;
  memset(pk, 0, sizeof *pk);
  pk->version = -1;
  *err = NULL;
  mp_init(&r, buf, len);
  if (mp_next(&r, &it) || it.kind != MP_MAP) { *err = "the envelope is not a msgpack map"; return -1; }
  for (uint32_t i = 0; i < it.len; i++) {
    if (mp_next(&r, &key)) { *err = r.err; return -1; }
    if (key.kind != MP_STR) { *err = "envelope keys must be strings"; return -1; }
    size_t vpos = r.pos;
    mp_item val;
    if (mp_next(&r, &val)) { *err = r.err; return -1; }
    if (mp_str_eq(&key, "v")) {
      if (val.kind != MP_INT || val.v.i < 0 || val.v.i > 255) { *err = "field 'v' must be a small integer"; return -1; }
      pk->version = (int)val.v.i;
    } else if (mp_str_eq(&key, "id")) {
      if (read_u64(&val, &pk->id)) { *err = "field 'id' must be a non-negative integer"; return -1; }
      pk->has_id = 1;
    } else if (mp_str_eq(&key, "op")) {
      if (val.kind != MP_STR || val.len == 0 || val.len >= RB_OP_MAX) { *err = "field 'op' must be a short string"; return -1; }
      memcpy(pk->op, val.ptr, val.len);
      pk->op[val.len] = 0;
    } else if (mp_str_eq(&key, "timeout")) {
      if (val.kind == MP_FLOAT) pk->timeout = val.v.f;
      else if (val.kind == MP_INT) pk->timeout = (double)val.v.i;
      else if (val.kind != MP_NIL) { *err = "field 'timeout' must be a number"; return -1; }
    } else if (mp_str_eq(&key, "target")) {
      if (val.kind != MP_NIL) {
        if (read_u64(&val, &pk->target)) { *err = "field 'target' must be a request id"; return -1; }
        pk->has_target = 1;
      }
    } else if (mp_str_eq(&key, "parent")) {
      uint64_t parent;
      pk->has_parent = val.kind != MP_NIL && read_u64(&val, &parent) == 0;   /* informative */
    } else if (mp_str_eq(&key, "shm")) {
      pk->shm = val.kind == MP_BOOL && val.v.b;
    } else if (mp_str_eq(&key, "doubles_checked")) {
      pk->doubles_checked = val.kind == MP_BOOL && val.v.b;
    } else if (mp_str_eq(&key, "chunks")) {
      pk->chunks = val.kind == MP_BOOL && val.v.b;
    } else if (mp_str_eq(&key, "shm_probe")) {
      /* {"name": str, "token": bin}; anything else means no probe */
      if (val.kind != MP_MAP) { r.pos = vpos; if (mp_skip_value(&r, RB_MAX_DEPTH)) { *err = r.err; return -1; } continue; }
      for (uint32_t j = 0; j < val.len; j++) {
        mp_item k2, v2;
        size_t at;
        if (mp_next(&r, &k2)) { *err = r.err; return -1; }
        at = r.pos;
        if (mp_next(&r, &v2)) { *err = r.err; return -1; }
        if (mp_str_eq(&k2, "name") && v2.kind == MP_STR && v2.len < RB_SHM_NAME_MAX) {
          memcpy(pk->probe_name, v2.ptr, v2.len);
          pk->probe_name[v2.len] = 0;
        } else if (mp_str_eq(&k2, "token") && v2.kind == MP_BIN && v2.len <= sizeof pk->probe_token) {
          memcpy(pk->probe_token, v2.ptr, v2.len);
          pk->probe_token_len = v2.len;
        } else if (v2.kind == MP_ARRAY || v2.kind == MP_MAP) {
          r.pos = at;
          if (mp_skip_value(&r, RB_MAX_DEPTH)) { *err = r.err; return -1; }
        }
      }
      continue;
    } else if (mp_str_eq(&key, "versions")) {
      if (val.kind != MP_ARRAY) { *err = "field 'versions' must be an array"; return -1; }
      for (uint32_t j = 0; j < val.len; j++) {
        mp_item v;
        size_t epos = r.pos;
        if (mp_next(&r, &v)) { *err = r.err; return -1; }
        if (v.kind == MP_INT && v.v.i == RB_PROTOCOL_VERSION) pk->versions_ok = 1;
        if (v.kind == MP_ARRAY || v.kind == MP_MAP) {
          r.pos = epos;
          if (mp_skip_value(&r, RB_MAX_DEPTH)) { *err = r.err; return -1; }
        }
      }
      continue;
    }
    /* containers under other keys: rewind and skip them whole */
    if (val.kind == MP_ARRAY || val.kind == MP_MAP) {
      r.pos = vpos;
      if (mp_skip_value(&r, RB_MAX_DEPTH)) { *err = r.err; return -1; }
    }
  }
  if (!pk->has_id) { *err = "the envelope has no 'id'"; return -1; }
  if (!pk->op[0]) { *err = "the envelope has no 'op'"; return -1; }
  if (pk->version != RB_PROTOCOL_VERSION) { *err = "unsupported protocol version in field 'v'"; return -1; }
  return 0;
}

void rb_pack_cstr(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

void rb_pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  rb_pack_cstr(pk, k);
  rb_pack_cstr(pk, v);
}

/* Every message starts with these three fields, in this order. */
void rb_pack_header(msgpack_packer *pk, uint32_t nfields, uint64_t id, const char *op) {
  msgpack_pack_map(pk, nfields);
  rb_pack_cstr(pk, "v");
  msgpack_pack_uint8(pk, RB_PROTOCOL_VERSION);
  rb_pack_cstr(pk, "id");
  msgpack_pack_uint64(pk, id);
  rb_pack_kv_str(pk, "op", op);
}

/* The value of an "error" field for errors raised by the C core itself. */
void rb_pack_error_body(msgpack_packer *pk, const char *const *classes, int nclass,
                        const char *message) {
  msgpack_pack_map(pk, 4);
  rb_pack_cstr(pk, "class");
  msgpack_pack_array(pk, (size_t)nclass);
  for (int i = 0; i < nclass; i++) rb_pack_cstr(pk, classes[i]);
  rb_pack_kv_str(pk, "message", message);
  rb_pack_cstr(pk, "call");
  msgpack_pack_nil(pk);
  rb_pack_cstr(pk, "traceback");
  msgpack_pack_array(pk, 0);
}

size_t rb_client_key_len(size_t rid_len) {
  return rid_len == RB_CLIENT_KEY + 1 ? RB_CLIENT_KEY : rid_len;
}

/* Whether two routing ids belong to one client. */
int rb_same_client(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  size_t ka = rb_client_key_len(alen), kb = rb_client_key_len(blen);
  return ka == kb && memcmp(a, b, ka) == 0;
}

const rb_op rb_ops[] = {
  {"hello", RB_OP_IO}, {"ping", RB_OP_IO}, {"interrupt", RB_OP_IO},
  {"eval", RB_OP_MAIN}, {"call", RB_OP_MAIN}, {"get", RB_OP_MAIN}, {"assign", RB_OP_MAIN},
  {"release", RB_OP_MAIN}, {"reserve", RB_OP_MAIN}, {"shutdown", RB_OP_MAIN},
  {"result", RB_OP_REPLY}, {"error", RB_OP_REPLY},
  {NULL, RB_OP_IO}
};

const rb_op *rb_find_op(const char *name) {
  for (const rb_op *op = rb_ops; op->name; op++)
    if (strcmp(op->name, name) == 0) return op;
  return NULL;
}

/* A whole error reply (SPEC §6) from the C core: class cls, then
 * rbridge_error, error, condition. */
void rb_pack_error_reply(msgpack_packer *pk, uint64_t id, const char *cls, const char *message) {
  const char *classes[] = {cls, "rbridge_error", "error", "condition"};
  rb_pack_header(pk, 5, id, "error");
  rb_pack_cstr(pk, "error");
  rb_pack_error_body(pk, classes, 4, message);
  rb_pack_cstr(pk, "warnings");
  msgpack_pack_array(pk, 0);
}
