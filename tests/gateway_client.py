"""A real-HTTP client for the gateway tests (tests/unit/test_gateway_*.py): a started gateway over a
fake backend, tokens, requests with bounded waits, and a backend that holds its batch until told.
Every wait is bounded (client and socket timeouts), so a gateway that hangs fails a test instead of
hanging the suite. The helpers also work against a gateway without the newer API: `make_gateway`
and `issue` then fall back to what it offers, so what fails is the behaviour, not the call.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

from pydantic import ValidationError

from sia.config import GatewayConfig
from sia.gateway.server import CallScope, Gateway, MemoryRecorder
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
