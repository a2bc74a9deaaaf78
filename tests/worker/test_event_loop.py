"""R's event loop keeps running in the worker: the `later` package's tasks."""

from __future__ import annotations

import time


def test_later_tasks_run_while_the_worker_is_idle(fresh):
    r = fresh
    r.eval("fired <- 0; later::later(function() fired <<- fired + 1, 0.3); "
           "later::later(function() fired <<- fired + 10, 0.6)")
    assert r["fired"] == 0
    time.sleep(1.0)
    assert r["fired"] == 11


def test_later_tasks_run_between_back_to_back_requests(fresh):
    r = fresh
    r.eval("fired <- FALSE; later::later(function() fired <<- TRUE, 0.2)")
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:      # never idle: one request after another
        r.sum(1)
    assert r["fired"] is True


def test_an_error_in_a_later_task_does_not_disturb_the_worker(fresh):
    r = fresh
    r.eval("later::later(function() stop('oops in later'), 0)")
    time.sleep(0.3)
    assert r.sum(1, 2) == 3


def test_requests_are_taken_while_later_tasks_are_always_due(fresh):
    # a task that schedules itself again at once: the worker's wait for
    # requests never has time to spare, and must still read the socket
    r = fresh.with_options(timeout=10)
    r.eval("ticks <- 0; tick <- function() { ticks <<- ticks + 1; later::later(tick, 0) }; later::later(tick, 0)")
    started = time.monotonic()
    for _ in range(20):
        assert r.sum(1, 2) == 3
    assert time.monotonic() - started < 5
    assert r["ticks"] > 20                   # and the tasks kept running between requests
    r.eval("tick <- function() NULL")        # let the loop end
