"""Our OpenAI-compatible gateway on 127.0.0.1: every target-model call goes through it.

It serves `/v1/models` and `/v1/chat/completions` (with `response_format` JSON schemas decoded
under a grammar), batches concurrent requests into one `generate`, and records each call with
the run, generation, adapter version and item tag that the caller's token and request carry.
Requests are authorised by per-run tokens issued by the loop; a forged token gets 401 and is
recorded as rejected. A backend is either the embedded `Engine` or a remote endpoint proxy.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Protocol

from sia.gateway.protocol import ChatRequest, Completion
from sia.records import ModelCall


@dataclass
class CallScope:
    """Who is calling: what a per-run token stands for."""

    run_id: str
    generation: int
    adapter_version: str | None = None
    purpose: str = "task"


class Backend(Protocol):
    name: str

    def generate(self, batch: list[ChatRequest]) -> list[Completion]: ...


class Recorder(Protocol):
    def record_call(self, call: ModelCall) -> None: ...

    def record_rejected(self, reason: str, path: str) -> None: ...


class MemoryRecorder:
    """Keeps calls in memory; for tests and benchmarks."""

    def __init__(self):
        self.calls: list[ModelCall] = []
        self.rejected: list[tuple[str, str]] = []

    def record_call(self, call: ModelCall) -> None:
        self.calls.append(call)

    def record_rejected(self, reason: str, path: str) -> None:
        self.rejected.append((reason, path))


def parse_chat_request(body: dict) -> ChatRequest:
    """Validate an OpenAI chat body; raise ValueError with a message a client can act on."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise ValueError("each message needs a 'role' and a string 'content'")
    schema = None
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format.json_schema.schema must be an object")
    elif fmt.get("type") == "json_object":
        schema = {"type": "object"}
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 64)
    return ChatRequest(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        max_tokens=max(1, min(max_tokens, 2048)),
        temperature=float(body.get("temperature") or 0.0),
        top_p=float(body.get("top_p") or 1.0),
        json_schema=schema,
        seed=body.get("seed"),
    )


class _Batcher:
    """Collects requests for up to `window_s` and runs them as batches of equal sampling settings."""

    def __init__(self, backend_fn: Callable[[str | None], Backend], max_batch: int, window_s: float):
        self.backend_fn, self.max_batch, self.window_s = backend_fn, max_batch, window_s
        self.queue: queue.Queue[tuple[str | None, ChatRequest, Future]] = queue.Queue()
        threading.Thread(target=self._loop, daemon=True, name="sia-batcher").start()

    def submit(self, adapter: str | None, request: ChatRequest) -> Future:
        fut: Future = Future()
        self.queue.put((adapter, request, fut))
        return fut

    def _loop(self) -> None:
        while True:
            pending = [self.queue.get()]
            deadline = time.monotonic() + self.window_s
            while len(pending) < self.max_batch:
                try:
                    pending.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[tuple, list] = {}
            for adapter, req, fut in pending:
                groups.setdefault((adapter, req.sampling_key()), []).append((req, fut))
            for (adapter, _), group in groups.items():
                try:
                    outs = self.backend_fn(adapter).generate([r for r, _ in group])
                    for (_, fut), out in zip(group, outs):
                        fut.set_result(out)
                except Exception as exc:  # one bad batch must not stop the gateway
                    for _, fut in group:
                        fut.set_exception(exc)


class Gateway:
    """The HTTP server plus token registry. `start()` binds 127.0.0.1:port (0 picks a free one)."""

    def __init__(self, backend_for: Callable[[str | None], Backend], recorder: Recorder | None = None,
                 port: int = 0, max_batch: int = 16, batch_window_ms: float = 15.0, model_name: str = "sia-target"):
        """`backend_for(adapter_version)` returns the backend serving base + that adapter."""
        self.backend_for = backend_for
        self.model_name = model_name
        self.recorder = recorder or MemoryRecorder()
        self.tokens: dict[str, CallScope] = {}
        self.batcher = _Batcher(backend_for, max_batch, batch_window_ms / 1000)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> "Gateway":
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="sia-gateway").start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def issue_token(self, scope: CallScope) -> str:
        token = "sia-" + secrets.token_hex(16)
        self.tokens[token] = scope
        return token

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)

    def complete(self, scope: CallScope, body: dict, item: str | None) -> dict:
        request = parse_chat_request(body)
        started = time.monotonic()
        out: Completion = self.batcher.submit(scope.adapter_version, request).result()
        latency = time.monotonic() - started
        self.recorder.record_call(ModelCall(
            run_id=scope.run_id, generation=scope.generation, adapter_version=scope.adapter_version,
            item=item, purpose=scope.purpose, messages=request.messages,
            response_format=body.get("response_format"), completion=out.text,
            prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens, latency_s=latency,
        ))
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion",
            "created": int(time.time()), "model": self.model_name,
            "choices": [{"index": 0, "finish_reason": out.finish_reason,
                         "message": {"role": "assistant", "content": out.text}}],
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                      "total_tokens": out.prompt_tokens + out.completion_tokens},
        }


def _handler(gw: Gateway):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # the run database is the log
            pass

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _scope(self) -> CallScope | None:
            auth = self.headers.get("Authorization", "")
            scope = gw.tokens.get(auth.removeprefix("Bearer ").strip())
            if scope is None:
                gw.recorder.record_rejected("unknown token", self.path)
                self._send(401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}})
            return scope

        def do_GET(self):
            if self._scope() is None:
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": gw.model_name, "object": "model", "owned_by": "sia"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            scope = self._scope()
            if scope is None:
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                length = int(self.headers.get("Content-Length", 0))
                if length > 4_000_000:
                    raise ValueError("request body over 4 MB")
                body = json.loads(self.rfile.read(length) or b"{}")
                item = self.headers.get("X-SIA-Item") or (body.get("metadata") or {}).get("item")
                self._send(200, gw.complete(scope, body, None if item is None else str(item)))
            except (ValueError, json.JSONDecodeError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            except Exception as exc:
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})

    return Handler
