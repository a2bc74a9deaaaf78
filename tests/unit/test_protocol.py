"""The sans-IO protocol core: bytes in, events out, no worker and no socket."""

from __future__ import annotations

import json

import msgpack
import pytest
from helpers import VECTORS as VECTOR_DIR

from bridge import RTimeout, WorkerDied
from bridge._codec import HandleRef, _ext_hook, pack
from bridge._plots import PlotSpec
from bridge._protocol import (
    PING,
    CallablesReleased,
    Callback,
    Display,
    Ignored,
    Output,
    Protocol,
    Reply,
    Warned,
)


def hook(code, data, frames):
    return _ext_hook(code, data)


def receive(p: Protocol, message: dict, awaited: int):
    return p.receive(pack(message), [], hook, awaited)


def test_requests_carry_fresh_ids_and_the_common_keys():
    p = Protocol()
    first = p.request("eval", {"code": "1"})
    second = p.request("call", {"fn": "sum"}, timeout=2, parent=(1 << 52) | 3, shm=True)
    assert first == {"v": 1, "id": 1, "op": "eval", "code": "1"}
    assert second == {"v": 1, "id": 2, "op": "call", "fn": "sum", "shm": True, "parent": (1 << 52) | 3,
                      "timeout": 2.0}
    assert list(second)[:3] == ["v", "id", "op"]         # the envelope's first keys, in order (SPEC §3)


def test_queued_releases_go_in_one_message():
    p = Protocol()
    assert p.release_message() is None
    for hid in (7, 8):
        p.queue_release(hid)
    msg = p.release_message()
    assert msg["op"] == "release"
    assert [int.from_bytes(h.data, "big") for h in msg["handles"]] == [7, 8]
    assert p.release_message() is None                  # the queue is empty again


def test_hello_offers_the_version_and_the_probe():
    p = Protocol()
    assert p.hello(None) == {"v": 1, "id": 1, "op": "hello", "versions": [1]}
    assert p.hello(("/rbridge-c1-" + "0" * 32, b"t" * 16))["shm_probe"] == {"name": "/rbridge-c1-" + "0" * 32,
                                                                          "token": b"t" * 16}


def test_messages_become_events():
    p = Protocol()
    assert receive(p, {"v": 1, "id": 5, "op": "result", "value": 3, "warnings": []}, 5) == \
        Reply({"v": 1, "id": 5, "op": "result", "value": 3, "warnings": []})
    assert receive(p, {"v": 1, "id": 5, "op": "output", "stream": "stderr", "text": "hi\n"}, 5) == \
        Output("stderr", "hi\n")
    callback = {"v": 1, "id": (1 << 52) | 1, "op": "callback", "parent": 5, "fn": 2, "args": [1], "kwargs": {}}
    assert receive(p, callback, 5) == Callback(callback)
    assert receive(p, {"v": 1, "id": 0, "op": "release_callables", "callables": [2, 3]}, 5) == \
        CallablesReleased([2, 3])
    # a late reply to an abandoned request, its output, and the worker's unasked pong
    for stale in ({"v": 1, "id": 4, "op": "result", "value": 1, "warnings": []},
                  {"v": 1, "id": 4, "op": "output", "stream": "stdout", "text": "x"},
                  {"v": 1, "id": 0, "op": "pong"}):
        assert isinstance(receive(p, stale, 5), Ignored)


def test_the_golden_plot_messages_are_what_the_protocol_builds_and_reads():
    vectors = {v["name"]: bytes.fromhex(v["hex"]) for v in json.loads((VECTOR_DIR / "messages.json").read_text())}
    p = Protocol(ids=[23])
    spec = PlotSpec(7, 5, 144, "png").wire()
    assert pack(p.request("eval", {"code": "plot(1:10)"}, plots=spec)) == vectors["eval_request_plots"]
    event = p.receive(vectors["display_png"], [], hook, 23)
    assert event == Display("image/png", b"\x89PNG\r\n\x1a\n", 1008, 720)
    assert isinstance(p.receive(vectors["display_png"], [], hook, 24), Ignored)   # of an abandoned request


def test_the_golden_hello_messages_are_what_the_protocol_builds():
    vectors = {v["name"]: bytes.fromhex(v["hex"]) for v in json.loads((VECTOR_DIR / "messages.json").read_text())}
    assert pack(Protocol(ids=[1]).hello(None)) == vectors["hello_request"]
    assert pack(Protocol(ids=[1]).hello(None, chunks=True)) == vectors["hello_request_chunks"]


@pytest.mark.parametrize("bad", [dict(format="jpeg"), dict(width=0), dict(height=-1), dict(dpi=True),
                                 dict(width="7")])
def test_a_bad_plot_spec_is_refused_before_anything_is_sent(bad):
    with pytest.raises(ValueError):
        PlotSpec(**bad)


def test_a_final_replys_warnings_become_events():
    reply = {"v": 1, "id": 5, "op": "result", "value": 1,
             "warnings": [{"class": ["simpleWarning", "warning", "condition"], "message": "careful", "call": "f(x)"},
                          {"class": ["warning", "condition"], "message": "again", "call": None}]}
    assert Protocol.warnings_of(reply) == [Warned("careful", ["simpleWarning", "warning", "condition"], "f(x)"),
                                           Warned("again", ["warning", "condition"], None)]
    assert Protocol.warnings_of({"v": 1, "id": 5, "op": "result", "value": 1}) == []


def test_ext_values_decode_through_the_hook():
    p = Protocol()
    event = receive(p, {"v": 1, "id": 1, "op": "result", "value": msgpack.ExtType(1, (9).to_bytes(8, "big")),
                        "warnings": []}, 1)
    assert event.message["value"] == HandleRef(9)


def test_a_pong_from_another_process_means_a_new_worker():
    p = Protocol()
    p.worker_pid = 100
    assert isinstance(receive(p, {"v": 1, "id": 9, "op": "pong", "pid": 100}, 5), Ignored)
    with pytest.raises(WorkerDied, match="replaced"):
        receive(p, {"v": 1, "id": 9, "op": "pong", "pid": 101}, 5)


def test_callback_replies_carry_the_value_or_the_python_exception():
    assert Protocol.callback_result(7, {"value": 2}) == {"v": 1, "id": 7, "op": "result", "value": 2}
    try:
        raise KeyError("missing")
    except KeyError as exc:
        reply = Protocol.callback_error(7, exc)
    assert reply["op"] == "error" and reply["id"] == 7
    assert reply["error"]["class"] == ["python_error", "error", "condition"]
    assert reply["error"]["python_type"] == "builtins.KeyError"
    assert reply["error"]["message"] == "KeyError: 'missing'"
    assert any("raise KeyError" in line for line in reply["error"]["traceback"])
    assert msgpack.unpackb(pack(reply), raw=False) == reply        # it encodes


def test_a_wait_pings_after_silence_and_declares_death_after_the_liveness():
    wait = Protocol().wait(1, now=0.0, timeout=None, liveness=30.0, ping_liveness=True)
    assert wait.idle(0.5) is None
    assert wait.idle(1.5) == PING
    assert wait.idle(20.0) is None                       # pinged, still within the liveness
    wait.heard(25.0)                                     # a pong (or anything) came
    assert wait.idle(25.5) is None
    assert wait.idle(26.5) == PING
    with pytest.raises(WorkerDied, match="did not answer for 30 s"):
        wait.idle(57.0)


def test_a_watched_process_needs_no_pings():
    wait = Protocol().wait(1, now=0.0, timeout=None, liveness=30.0, ping_liveness=False)
    assert wait.idle(1000.0) is None


def test_a_timed_out_request_is_given_up_after_the_grace():
    wait = Protocol().wait(1, now=0.0, timeout=1.0, liveness=30.0, ping_liveness=False)
    assert wait.idle(2.5) is None                        # the worker's own timeout reply may still come
    with pytest.raises(RTimeout):
        wait.idle(3.5)
