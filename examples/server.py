"""A server of sessions with CurveZMQ: keys, `rbridge serve`, two clients in
isolated sessions, the server's status, and a graceful stop (SIGTERM)."""

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bridge

keys = Path(tempfile.mkdtemp())
for name in ("server", "alice", "bob"):
    subprocess.run([sys.executable, "-m", "bridge", "keygen", str(keys / name)], check=True, capture_output=True)
(keys / "allowed").mkdir()
for name in ("alice", "bob"):
    (keys / "allowed" / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())

log = keys / "server.log"
server = subprocess.Popen(
    [sys.executable, "-m", "bridge", "serve", "tcp://127.0.0.1:*", "--preload", "stats",
     "--server-key", str(keys / "server.key_secret"), "--allow", str(keys / "allowed"), "--max-sessions", "8"],
    stdout=log.open("w"), stderr=subprocess.STDOUT)
while not (found := re.search(r"listening on (\S+)", log.read_text())):
    time.sleep(0.05)
endpoint = found.group(1)

alice = bridge.connect(endpoint, server_key=keys / "server.key", client_key=keys / "alice.key_secret")
bob = bridge.connect(endpoint, server_key=keys / "server.key", client_key=keys / "bob.key_secret")
alice.eval("x <- 'only in alice session'")
print("alice sees x:", alice.eval("exists('x')"), "| bob sees x:", bob.eval("exists('x')"))
print("bob's session serves key:", bob.call("rserver::session_key")["name"])
fit = alice.call("lm", bridge.formula("mpg ~ wt"), data=alice.eval("mtcars"))
print("alice's fit:", {k: round(v, 3) for k, v in alice.call("coef", fit).items()})

status = subprocess.run([sys.executable, "-m", "bridge", "status", endpoint, "--server-key",
                         str(keys / "server.key"), "--client-key", str(keys / "alice.key_secret"), "--json"],
                        capture_output=True, text=True, check=True)
print("sessions open:", status.stdout.count('"number"'))

try:
    bridge.connect(endpoint)          # no key: refused, and nothing reaches R
except bridge.AuthenticationError as exc:
    print("without a key:", type(exc).__name__)

alice.close()
bob.close()
server.send_signal(signal.SIGTERM)     # drains, then exits 0
print("server exit status:", server.wait(30))
shutil.rmtree(keys)                    # the keys, including secret ones, and the log
