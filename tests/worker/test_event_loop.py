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
