"""Fixtures: real R workers, private (spawned by bridge.connect) and attached over tcp."""

from __future__ import annotations

import signal
import subprocess

import pytest
from helpers import start_tcp_worker

import bridge


@pytest.fixture(autouse=True, scope="session")
def python_takes_ctrl_c():
    """Ctrl-C tests (``_thread.interrupt_main``) need Python's own SIGINT
    handler, which Python does not install when it starts with SIGINT ignored,
    as a shell starts background jobs (``make test &``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def r():
    """One private worker shared by the tests that leave it in a usable state."""
    with bridge.connect() as session:
        yield session


@pytest.fixture
def fresh():
    """A private worker of the test's own, for tests that break or kill it."""
    session = bridge.connect()
    yield session
    session.close()


NAUGHTY_C = r"""
#include <stdio.h>
void spin(void) { volatile double x = 0; for (;;) x += 1; }   /* never checks for interrupts */
void crash(void) { fprintf(stderr, "about to crash\n"); fflush(stderr); *(volatile int *)8 = 1; }
"""


@pytest.fixture(scope="session")
def naughty(tmp_path_factory):
    """A shared library of compiled code that misbehaves."""
    d = tmp_path_factory.mktemp("naughty")
    (d / "naughty.c").write_text(NAUGHTY_C)
    subprocess.run(["R", "CMD", "SHLIB", "naughty.c"], cwd=d, check=True, capture_output=True)
    return d / "naughty.so"


@pytest.fixture
def tcp_worker(tmp_path):
    endpoint, proc = start_tcp_worker(tmp_path)
    yield endpoint, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
