"""CurveZMQ keys: key files and the keys a client connects with
(``protocol/SPEC.md`` §10 "Authentication").

Key files are in the certificate format of pyzmq's
:func:`zmq.auth.load_certificate`: ``NAME.key`` holds the public key and
``NAME.key_secret`` (mode 0600) both keys, as Z85 text.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

_FIELD = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]*)"', re.M)
Z85_KEY_LENGTH = 40


@dataclass(frozen=True)
class CurveKeys:
    """What a client socket needs for CURVE: the server's public key and the
    client's own keypair, as Z85 bytes."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes


def _z85(text: str, what: str) -> bytes:
    key = text.strip().encode("ascii", errors="replace")
    if len(key) != Z85_KEY_LENGTH:
        raise ValueError(f"{what} is not a Z85 key of {Z85_KEY_LENGTH} characters")
    try:
        z85.decode(key)
    except Exception as exc:
        raise ValueError(f"{what} is not valid Z85 text") from exc
    return key


def read_key_file(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The keys in a key file: ``{"public": ..., "secret": ...}`` (secret only
    in a ``.key_secret`` file)."""
    text = Path(path).read_text()
    found = {kind: _z85(value, f"the {kind} key in {path}") for kind, value in _FIELD.findall(text)}
    if "public" not in found:
        raise ValueError(f"{path} has no public-key line (make keys with `rbridge keygen`)")
    return found


def _key(value: str | bytes | os.PathLike[str], kind: str, what: str) -> bytes:
    """A key given as a key file's path or as Z85 text."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    text = os.fspath(value)
    if len(text) == Z85_KEY_LENGTH and not os.path.exists(text):
        return _z85(text, what)
    try:
        keys = read_key_file(text)
    except FileNotFoundError:
        raise ValueError(f"{what}: no such key file: {text}") from None
    if kind not in keys:
        raise ValueError(f"{what}: {text} has no {kind} key (give the .key_secret file)")
    return keys[kind]


def curve_keys(server_key: str | bytes | os.PathLike[str],
               client_key: str | bytes | os.PathLike[str]) -> CurveKeys:
    """The keys for :func:`bridge.connect`: ``server_key`` is the server's
    ``.key`` file or its Z85 public key; ``client_key`` this client's
    ``.key_secret`` file or its Z85 secret key."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE")
    server = _key(server_key, "public", "server_key")
    secret = _key(client_key, "secret", "client_key")
    return CurveKeys(server, zmq.curve_public(secret), secret)


def write_keypair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Makes a new keypair: ``PATH.key`` (public) and ``PATH.key_secret``
    (mode 0600, written so that it is never readable by others). Refuses to
    overwrite either."""
    base = Path(path)
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    files = []
    for suffix, mode, keys, title in ((".key", 0o644, {"public": public}, "Public"),
                                      (".key_secret", 0o600, {"public": public, "secret": secret}, "**Secret**")):
        lines = [f"#   ****  Generated {now} by rbridge keygen  ****",
                 f"#   ZeroMQ CURVE {title} Certificate", "", "metadata", "curve"]
        lines += [f'    {kind}-key = "{key.decode()}"' for kind, key in keys.items()]
        target = base.with_name(base.name + suffix)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        files.append(target)
    return files[0], files[1]
