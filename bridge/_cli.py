"""The ``rbridge`` command: ``serve``, ``ping``, ``status`` and ``keygen``
(the README's "Server mode"), ``doctor`` and ``install-worker`` (``rbridge --help``)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import zmq

from . import __version__
from ._doctor import as_dicts, run_checks
from ._errors import RBridgeError, RTimeout
from ._install import install_worker
from ._keys import curve_keys, write_keypair
from ._protocol import Protocol
from ._transport import Channel
from ._worker import STACK_WRAPPER, WORKER_STACK_KIB

#: ``rbridge serve`` options: (flag, R argument, type, default, help).
SERVE_OPTIONS: list[tuple[str, str, type, Any, str]] = [
    ("--max-sessions", "max_sessions", int, 64, "sessions open at once; a client beyond gets ServerBusy"),
    ("--session-memory", "session_memory", str, "0",
     "memory a session may allocate beyond what it shares with the preloaded parent, e.g. 2G (0: no limit)"),
    ("--session-cpu", "session_cpu", float, 0, "CPU seconds a session may use; then it ends (0: no limit)"),
    ("--idle-timeout", "idle_timeout", float, 0, "seconds without a request after which a session ends (0: never)"),
    ("--client-grace", "client_grace", float, 10, "seconds a client may stay disconnected before its session ends"),
    ("--interrupt-grace", "interrupt_grace", float, 5,
     "seconds R may ignore an interrupt (or a timeout) before its session ends"),
    ("--drain-timeout", "drain_timeout", float, 8,
     "on SIGTERM, seconds that calls in flight may take to finish (fits Docker's 10 s stop grace)"),
    ("--liveness", "liveness", float, 30, "seconds of silence after which a client's connection is dropped"),
]


def _r_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def serve_command(args: argparse.Namespace) -> list[str]:
    """The command that runs the server: Rscript (under a larger C stack, as
    private workers have) calling ``rserver::serve_sessions``."""
    fields = [f"endpoint = {_r_string(args.endpoint)}",
              "preload = " + ("c(" + ", ".join(_r_string(p) for p in args.preload) + ")" if args.preload
                              else "character()")]
    if args.server_key:
        fields.append(f"server_key = {_r_string(args.server_key)}")
    if args.allow:
        fields.append(f"allow = {_r_string(args.allow)}")
    if args.insecure:
        fields.append("insecure = TRUE")
    for _flag, name, kind, _default, _help in SERVE_OPTIONS:
        value = getattr(args, name)
        fields.append(f"{name} = {_r_string(value) if kind is str else repr(value)}")
    rscript = shutil.which(os.environ.get("RBRIDGE_RSCRIPT") or "Rscript") or "Rscript"
    code = "rserver::serve_sessions(" + ", ".join(fields) + ")"
    return ["/bin/sh", "-c", STACK_WRAPPER.format(kib=WORKER_STACK_KIB), rscript, "-e", code]


def _serve(args: argparse.Namespace) -> int:
    if bool(args.server_key) != bool(args.allow):
        print("rbridge serve: --server-key and --allow go together", file=sys.stderr)
        return 2
    command = serve_command(args)
    os.execv(command[0], command)   # the server's signals (SIGTERM: drain) reach R itself


def _ask(args: argparse.Namespace, op: str) -> dict[str, Any]:
    """Sends one server op and returns the reply; raises on failure."""
    keys = None
    if args.server_key or args.client_key:
        if not (args.server_key and args.client_key):
            raise ValueError("--server-key and --client-key go together")
        keys = curve_keys(args.server_key, args.client_key)
    context = zmq.Context()
    channel = Channel(context, args.endpoint, Protocol(), lambda: True, False,
                      routing_id=b"\x00" + secrets.token_bytes(15), liveness=max(1.0, args.timeout), keys=keys)
    try:
        return channel.request(channel.protocol.message(op), timeout=args.timeout)
    finally:
        channel.close()
        context.term()


def _answer(args: argparse.Namespace, op: str, expected: str) -> dict[str, Any] | None:
    """The server's reply to one op, or None (said on stderr) when there is none."""
    try:
        reply = _ask(args, op)
    except (RBridgeError, ValueError, OSError) as exc:
        why = f"no answer within {args.timeout:g} s" if isinstance(exc, RTimeout) else str(exc)
    else:
        if reply.get("op") == expected:
            return reply
        why = f"not a server of sessions (it answered {reply.get('op')!r})"
    print(f"rbridge {args.command}: {args.endpoint}: {why}", file=sys.stderr)
    return None


def _ping(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if _answer(args, "ping", "pong") is None:
        return 1
    print(f"{args.endpoint}: pong in {1000 * (time.monotonic() - started):.1f} ms")
    return 0


def _status(args: argparse.Namespace) -> int:
    reply = _answer(args, "status", "status")
    if reply is None:
        return 1
    status = {"server": reply.get("server", {}), "sessions": reply.get("sessions", [])}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    server = status["server"]
    print(f"{args.endpoint}: pid {server.get('pid')}, up {server.get('uptime', 0):.0f} s, "
          f"{server.get('sessions_open')}/{server.get('max_sessions')} sessions open, "
          f"{server.get('sessions_started')} started, {server.get('auth_failures')} authentication failures"
          f"{', draining' if server.get('draining') else ''}{', CURVE' if server.get('curve') else ', no CURVE'}")
    if status["sessions"]:
        print(f"{'session':>8} {'pid':>8} {'state':>9} {'RSS MB':>8} {'CPU s':>8} {'idle s':>8}  key")
        for s in status["sessions"]:
            print(f"{s['number']:>8} {s['pid']:>8} {s['state']:>9} {s['rss'] / 2**20:>8.1f} {s['cpu']:>8.2f} "
                  f"{s['idle']:>8.1f}  {s['key']}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    try:
        public, secret = write_keypair(args.path)
    except FileExistsError as exc:
        print(f"rbridge keygen: {exc.filename} exists; not overwritten", file=sys.stderr)
        return 1
    print(f"public key: {public}\nsecret key: {secret} (mode 0600; keep it private)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    results = run_checks()
    if args.json:
        print(json.dumps(as_dicts(results), indent=2))
    else:
        for c in results:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.found}" + ("" if c.ok else f"\n     fix: {c.fix}"))
    return 0 if all(c.ok for c in results) else 1


def _install_worker(args: argparse.Namespace) -> int:
    return install_worker(apt=args.apt, library=args.library)


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoint", help="the server's endpoint, e.g. tcp://host:5555")
    p.add_argument("--server-key", help="the server's public key file (NAME.key) or Z85 text")
    p.add_argument("--client-key", help="this client's secret key file (NAME.key_secret)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rbridge", description="Use R from Python, out of process.")
    top.add_argument("--version", action="version", version=f"rbridge {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve many clients on one port, each in its own forked R session",
                       description="Serve many clients on one port, each in its own R session forked from a "
                       "preloaded parent. SIGTERM or Ctrl-C drains (a second one stops at once).")
    p.add_argument("endpoint", help="where to listen, e.g. tcp://0.0.0.0:5555 (tcp://127.0.0.1:* for any free port)")
    p.add_argument("--preload", action="append", default=[], metavar="PKG_OR_FILE.R",
                   help="an R package to load, or a .R file to source, before sessions fork (repeatable)")
    p.add_argument("--server-key", help="the server's secret key file (NAME.key_secret): turns CURVE on")
    p.add_argument("--allow", metavar="DIR", help="directory of the public keys (*.key) of clients that may connect")
    p.add_argument("--insecure", action="store_true", help="serve a non-loopback address without CURVE")
    for flag, name, kind, default, help_text in SERVE_OPTIONS:
        p.add_argument(flag, dest=name, type=kind, default=default, help=f"{help_text} (default {default})")
    p.set_defaults(run=_serve)

    p = sub.add_parser("ping", help="exit 0 when a server answers a real (authenticated) handshake")
    _client_options(p)
    p.set_defaults(run=_ping)

    p = sub.add_parser("status", help="a server's sessions and figures")
    _client_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_status)

    p = sub.add_parser("doctor", help="check that R, the worker package, libzmq and shared memory are in place "
                       "and work; exit 1 when anything fails")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_doctor)

    p = sub.add_parser("install-worker", help="build and install the R package rserver from the sources "
                       "shipped with rbridge; says which system packages are missing",
                       description="Build and install the R worker package rserver, at this rbridge's version, "
                       "from the sources inside the Python distribution.")
    p.add_argument("--apt", action="store_true",
                   help="install missing system packages with apt-get (Debian/Ubuntu; sudo when not root)")
    p.add_argument("--library", metavar="DIR", help="the R library to install into (default: R's first)")
    p.set_defaults(run=_install_worker)

    p = sub.add_parser("keygen", help="make a CURVE keypair: PATH.key and PATH.key_secret")
    p.add_argument("path", help="PATH of the key files, without suffix")
    p.set_defaults(run=_keygen)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rbridge`` command."""
    args = parser().parse_args(argv)
    return int(args.run(args) or 0)

