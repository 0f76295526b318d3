"""The gateway against a hostile caller (issue 15, classes 4-6: one request must not kill it,
bodies are capped, what one token may cost is bounded), over real HTTP with a fake backend
(tests/gateway_client.py). Class 7 and the grammar cache are in test_gateway_items.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.fakes import KeywordBackend
from tests.gateway_client import (CHAT, SCHEMA, GatedBackend, issue, make_gateway, post, raw_status, user,
                                  wait_admitted, wait_until)


# --- class 4: one request must not kill the gateway ------------------------------------------------

@pytest.mark.parametrize("odd", [
    {"temperature": 1, "seed": [1]},        # unhashable: once killed the batcher thread
    {"temperature": 1, "seed": {"a": 1}},   # unhashable too
    {"temperature": 1, "seed": True},       # a bool is not a seed
    {"temperature": 1, "seed": 1.5},
    {"temperature": -1},
    {"temperature": float("nan")},
    {"max_tokens": -5},
])
def test_an_odd_request_gets_400_and_the_gateway_keeps_serving(gateways, odd):
    gw = make_gateway()
    gateways.append(gw)
    token = issue(gw)
    code, reply = post(gw, token, {**CHAT, **odd})
    assert code == 400, reply
    assert next(iter(odd.keys() - {"temperature"}), "temperature") in reply["error"]["message"]
    assert post(gw, token, CHAT)[0] == 200
    assert len(gw.recorder.calls) == 1


def test_the_batcher_survives_a_backend_that_raises_anything(gateways):
    class Exploding(KeywordBackend):
        def generate(self, batch):
            if any(m["content"] == "explode" for r in batch for m in r.messages):
                raise SystemExit("a BaseException, not an Exception")
            return super().generate(batch)

    gw = make_gateway(Exploding())
    gateways.append(gw)
    token = issue(gw)
    code, reply = post(gw, token, user("explode"))
    assert code == 500 and "SystemExit" in reply["error"]["message"]
    assert post(gw, token, user("he punched a clerk"))[0] == 200


def test_a_watchdog_restarts_a_batcher_thread_that_ended(gateways):
    gw = make_gateway()
    gateways.append(gw)
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    gw.batcher.thread = ended  # as if the batcher's loop had stopped
    wait_until(lambda: gw.batcher.thread is not ended)
    assert gw.batcher.thread is not ended and gw.batcher.thread.is_alive()
    assert post(gw, issue(gw), CHAT)[0] == 200


def test_a_request_that_waits_too_long_gets_504(gateways):
    backend = GatedBackend()
    gw = make_gateway(backend, request_timeout_s=0.5)
    gateways.append(gw)
    try:
        started = time.monotonic()
        code, reply = post(gw, issue(gw), CHAT, timeout=4)
        assert code == 504 and time.monotonic() - started < 3, reply
    finally:
        backend.gate.set()
    assert gw.recorder.calls == []


# --- class 5: request bodies are capped -----------------------------------------------------------

def test_request_bodies_are_capped_and_never_read_past_their_length(gateways):
    gw = make_gateway(max_body_bytes=65_536)
    gateways.append(gw)
    token = issue(gw)
    body = json.dumps(CHAT).encode()

    def head(*lines: str) -> bytes:
        return ("\r\n".join(["POST /v1/chat/completions HTTP/1.1", "Host: x", f"Authorization: Bearer {token}",
                             "Content-Type: application/json", *lines]) + "\r\n\r\n").encode()

    # Content-Length -1 once meant "read to EOF": answered at once now, without waiting for EOF
    assert raw_status(gw, head("Content-Length: -1") + body) in (400, 413)
    # a declared length over the cap is refused before a byte of the body is sent
    assert raw_status(gw, head("Content-Length: 200000000")) == 413
    # a chunked body is cut off at the cap
    chunk = b"%x\r\n%s\r\n" % (16_384, b" " * 16_384)
    assert raw_status(gw, head("Transfer-Encoding: chunked"), [chunk] * 16 + [b"0\r\n\r\n"]) == 413
    # no Content-Length and no chunks: no body to read
    assert raw_status(gw, head()) == 411
    assert gw.recorder.calls == []
    assert post(gw, token, CHAT)[0] == 200  # and the gateway still serves


# --- class 6: what one token may cost is bounded -----------------------------------------------------

def test_each_token_has_a_request_quota(gateways):
    gw = make_gateway(token_requests=3)
    gateways.append(gw)
    token, other = issue(gw), issue(gw)
    # identical greedy calls cost no decoding (the greedy cache), so only a quota bounds their records
    assert [post(gw, token, CHAT)[0] for _ in range(4)] == [200, 200, 200, 429]
    assert len(gw.recorder.calls) == 3
    assert any("quota" in reason for reason, _ in gw.recorder.rejected)
    assert post(gw, other, CHAT)[0] == 200  # per token


def test_each_token_has_a_concurrency_quota(gateways):
    backend = GatedBackend()
    gw = make_gateway(backend, token_concurrency=2)
    gateways.append(gw)
    token = issue(gw)
    first = [None, None]
    threads = [threading.Thread(target=lambda i=i: first.__setitem__(i, post(gw, token, user(f"call {i}"))[0]))
               for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        assert backend.entered.wait(3)
        wait_admitted(gw, token, 2)  # both are admitted (decoding, or queued behind)
        assert post(gw, token, user("a third at once"), timeout=2)[0] == 429
    finally:
        backend.gate.set()
        for thread in threads:
            thread.join(5)
    assert first == [200, 200]
    assert post(gw, token, user("one more, once those are done"))[0] == 200


@pytest.mark.parametrize("quota", [{"token_prompt_tokens": 50}, {"token_completion_tokens": 1}])
def test_each_token_has_prompt_and_completion_token_quotas(gateways, quota):
    gw = make_gateway(**quota)
    gateways.append(gw)
    token = issue(gw)
    long = user("he punched a clerk " * 12)  # KeywordBackend: about 58 prompt tokens, 1-2 completion tokens
    assert post(gw, token, long)[0] == 200
    code, reply = post(gw, token, long)
    assert code == 429 and "tokens" in reply["error"]["message"], reply
    assert len(gw.recorder.calls) == 1


def test_revoking_a_token_cancels_its_queued_requests(gateways):
    backend = GatedBackend()
    gw = make_gateway(backend)
    gateways.append(gw)
    token = issue(gw)
    codes = {}
    running = threading.Thread(target=lambda: codes.__setitem__("running", post(gw, token, user("decoding"))[0]))
    queued = threading.Thread(target=lambda: codes.__setitem__("queued", post(gw, token, user("queued"))[0]))
    try:
        running.start()
        assert backend.entered.wait(3)
        queued.start()
        wait_admitted(gw, token, 2)  # queued behind the batch being decoded
        gw.revoke_token(token)
    finally:
        backend.gate.set()
        running.join(5)
        queued.join(5)
    decoded = [m["content"] for r in backend.requests for m in r.messages]
    assert "queued" not in decoded
    assert [c.messages[0]["content"] for c in gw.recorder.calls] == []  # nothing of a revoked token
    assert codes.get("queued") == 401


def test_response_formats_are_bounded_before_they_are_stored(gateways):
    gw = make_gateway()
    gateways.append(gw)
    token = issue(gw)

    def with_schema(schema: dict, **extra) -> dict:
        return {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema},
                                            **extra}}

    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(300)}}
    deep: dict = {"type": "string"}
    for _ in range(60):
        deep = {"type": "object", "properties": {"a": deep}}
    for schema in (huge, deep):
        code, reply = post(gw, token, with_schema(schema))
        assert code == 400 and "response_format" in reply["error"]["message"], reply
    assert gw.recorder.calls == []
    # keys the gateway does not use are not stored with every call
    assert post(gw, token, with_schema(SCHEMA, padding="x" * 200_000))[0] == 200
    assert gw.recorder.calls[-1].response_format == CHAT["response_format"]


def test_connections_are_bounded_and_idle_ones_closed(gateways):
    gw = make_gateway(max_connections=4, idle_timeout_s=1)
    gateways.append(gw)
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=3) for _ in range(10)]

    def answer(sock: socket.socket) -> bytes | None:
        """What the server sent before closing (b"" for a plain close); None if it kept it open."""
        try:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data
        except OSError:
            return None
        finally:
            sock.close()

    started = time.monotonic()
    answers = [answer(s) for s in socks]
    assert None not in answers, answers  # every connection was closed by the server
    assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) == 6  # beyond the bound: at once
    assert time.monotonic() - started < 4  # the others once idle
    assert post(gw, issue(gw), CHAT)[0] == 200
