"""The gateway against a hostile caller (issue 15, classes 4-7 and the grammar cache of 12), over
real HTTP with a fake backend. Every wait is bounded (client and socket timeouts), so a gateway
that hangs fails a test instead of hanging the suite. The tests also run against a gateway
without the newer API: `make_gateway` and `issue` then fall back to what it offers, so what
fails is the behaviour, not the call.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from sia.checkpoints.rundb import RunDB
from sia.config import GatewayConfig
from sia.finetune.dataset import load_sft_rows
from sia.finetune.records import sft_rows
from sia.gateway.server import CallScope, Gateway, MemoryRecorder
from sia.records import ItemResult
from tests.fakes import KeywordBackend

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["theft", "assault"]}},
          "required": ["label"]}
CHAT = {"messages": [{"role": "system", "content": "classify"}, {"role": "user", "content": "he punched a clerk"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}}


# --- helpers ---------------------------------------------------------------------------------

def make_gateway(backend=None, recorder=None, **limits) -> Gateway:
    """A started gateway serving `backend` (a KeywordBackend by default) under these limits."""
    backend = backend or KeywordBackend()
    try:
        config = GatewayConfig(**limits)
    except ValidationError:  # a GatewayConfig without these limits
        config = None
    try:
        gw = Gateway(lambda adapter: backend, recorder or MemoryRecorder(), batch_window_ms=1, limits=config)
    except TypeError:  # a Gateway without limits
        gw = Gateway(lambda adapter: backend, recorder or MemoryRecorder(), batch_window_ms=1)
    return gw.start()


def issue(gw: Gateway, tags: set[str] | None = None, generation: int = 1) -> str:
    try:
        return gw.issue_token(CallScope("r", generation, None, "task"), tags=tags)
    except TypeError:  # a gateway whose tokens carry no tags
        return gw.issue_token(CallScope("r", generation, None, "task"))


def post(gw: Gateway, token: str, body: dict, item: str | None = None, timeout: float = 5.0) -> tuple[int | None, dict]:
    """(status, JSON reply) of one chat call; (None, {...}) when no answer came within `timeout`."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if item is not None:
        headers["X-SIA-Item"] = item
    req = urllib.request.Request(gw.base_url + "/chat/completions", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, json.loads(data) if data.startswith(b"{") else {}
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        return None, {"no answer": repr(exc)}


def raw_status(gw: Gateway, head: bytes, body_chunks=(), timeout: float = 3.0) -> int | None:
    """Status of the answer to a hand-written request; the body is sent in paced chunks on a
    thread (the server may answer and close before it is all sent). None: no answer in time."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)

    def send():
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
                time.sleep(0.002)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else None


class GatedBackend(KeywordBackend):
    """A KeywordBackend whose `generate` signals `entered` and then waits for `gate`."""

    def __init__(self):
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def generate(self, batch):
        self.entered.set()
        self.gate.wait(10)
        return super().generate(batch)


@pytest.fixture
def gateways():
    """Collects gateways and stops them after the test."""
    started: list[Gateway] = []
    yield started
    for gw in started:
        gw.stop()


def wait_until(condition, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def wait_admitted(gw: Gateway, token: str, n: int) -> None:
    """Until `n` requests of `token` are in flight (a gateway that does not count them: half a second)."""
    state = gw.tokens.get(token)
    if hasattr(state, "in_flight"):
        wait_until(lambda: state.in_flight >= n)
    else:
        time.sleep(0.5)


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


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


# --- class 7: item tags are authenticated; a caller cannot write training rows --------------------------

def test_a_call_may_name_only_items_of_its_evaluation(gateways):
    gw = make_gateway()
    gateways.append(gw)
    token = issue(gw, tags={"g1t-a1", "g1t-a2"})
    assert post(gw, token, CHAT, item="g1t-a1")[0] == 200
    assert post(gw, token, {**CHAT, "metadata": {"item": "g1t-a2"}})[0] == 200
    code, reply = post(gw, token, CHAT, item="g1s-selection-item")
    assert code == 403 and "not an item of this evaluation" in reply["error"]["message"]
    assert post(gw, token, {**CHAT, "metadata": {"item": "g0t-old-item"}})[0] == 403
    assert [c.item for c in gw.recorder.calls] == ["g1t-a1", "g1t-a2"]
    assert len(gw.recorder.rejected) == 2 and {p for _, p in gw.recorder.rejected} == {"/v1/chat/completions"}


def test_calls_per_item_tag_are_capped(gateways):
    gw = make_gateway(calls_per_tag=2)
    gateways.append(gw)
    token = issue(gw, tags={"g1t-a1", "g1t-a2"})
    assert [post(gw, token, CHAT, item="g1t-a1")[0] for _ in range(3)] == [200, 200, 429]
    assert post(gw, token, CHAT, item="g1t-a2")[0] == 200


def test_an_unknown_role_is_refused(gateways):
    gw = make_gateway()
    gateways.append(gw)
    body = {**CHAT, "messages": [{"role": "pwn", "content": "x"}, *CHAT["messages"]]}
    code, reply = post(gw, issue(gw, tags={"g1t-a1"}), body, item="g1t-a1")
    assert code == 400 and "role" in reply["error"]["message"]
    assert gw.recorder.calls == []


def test_a_forced_completion_never_becomes_a_training_row(gateways, tmp_path):
    """A schema that admits one value makes the completion the caller's, not the model's."""
    db = RunDB(tmp_path / "run.db")
    gw = make_gateway(recorder=db)
    gateways.append(gw)
    tags = {"g1t-one", "g1t-const", "g1t-free"}
    token = issue(gw, tags=tags)

    def with_property(prop: dict) -> dict:
        schema = {"type": "object", "properties": {"label": prop}, "required": ["label"]}
        return {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}

    assert post(gw, token, with_property({"type": "string", "enum": ["theft"]}), item="g1t-one")[0] == 200
    assert post(gw, token, with_property({"const": "theft"}), item="g1t-const")[0] == 200
    assert post(gw, token, CHAT, item="g1t-free")[0] == 200
    db.save_items([ItemResult("r", 1, "sha", "base", "feedback", tag, tag, "theft", "theft", 1.0) for tag in tags])
    rows, _ = sft_rows(db, "r")
    assert len(rows) == 1  # only the model's own answer


def test_a_bad_training_row_is_dropped_not_fatal(tmp_path, caplog):
    good = {"messages": [{"role": "user", "content": "he punched a clerk"}], "completion": '{"label": "assault"}'}
    pwn = {"messages": [{"role": "pwn", "content": "x"}], "completion": "y"}
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([json.dumps(good)] * 2 + [json.dumps(pwn), "{not json"] + [json.dumps(good)] * 2) + "\n")
    rows = load_sft_rows(path, min_examples=4)
    assert len(rows) == 4
    assert "line 3" in caplog.text and "line 4" in caplog.text and "dropped 2" in caplog.text


# --- class 12 (part): the engine's grammar cache is bounded -----------------------------------------------

def test_the_engine_keeps_a_bounded_number_of_grammars():
    engine_module = pytest.importorskip("sia.gateway.engine")
    compiled = []

    class Compiler:
        def compile_json_schema(self, key, any_whitespace=False):
            compiled.append(key)
            return object()

    engine = engine_module.Engine(model=None, tokenizer=None, name="fake")
    engine._compiler = Compiler()
    schemas = [{"type": "string", "enum": [f"label-{i}", "other"]} for i in range(300)]
    for schema in schemas:
        engine.grammar(schema)
    assert len(engine._grammars) <= 128
    engine.grammar(schemas[-1])  # a recent one is still cached
    assert len(compiled) == 300

