"""Our OpenAI-compatible gateway on 127.0.0.1: every target-model call goes through it.

It serves `/v1/models` and `/v1/chat/completions` (with `response_format` JSON schemas decoded
under a grammar), batches concurrent requests into one `generate` (gateway.batcher), and records
each call with the run, generation, adapter version and item tag that the caller's token and
request carry. A backend is either the embedded `Engine` or a remote endpoint proxy.

The agent calling it is untrusted code, so what holds (limits in `config.GatewayConfig`):
- A request needs a token issued by the loop; a forged or revoked one gets 401 (recorded).
- The body is read to its declared length under a cap, over a bounded number of connections
  (gateway.asgi), and validated field by field (gateway.requests): a bad body gets 400.
- A token issued for an evaluation carries the item tags of its items. A call may name only one
  of those (403, recorded), at most `calls_per_tag` times; a token issued without tags (the loop's
  own roles, `sia serve`) is not bound to an evaluation and its tags are not checked.
- Each token has quotas on requests, concurrency, prompt and completion tokens (429, recorded);
  rejections are recorded up to `rejections_recorded` per token.
- No wait is unbounded: a request not answered within `request_timeout_s` gets 504. The batcher
  outlives any error (the request that caused it gets 500).
- Revoking a token cancels its queued requests: they are not decoded, and nothing more of that
  token is recorded.
- A call whose schema fixes (part of) the answer (`const`, a one-value `enum`) is served, but
  recorded with purpose "<purpose>:forced": its completion is the caller's, not the model's, so
  it never becomes a fine-tuning row (finetune.records takes only 'task' and 'rollout' calls).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from sia.config import GatewayConfig
from sia.gateway.batcher import Batcher
from sia.gateway.asgi import ServerThread, build_app, error_payload
from sia.gateway.protocol import ChatRequest, Completion
from sia.gateway.quotas import Refusal, RejectionBudget, TokenState
from sia.gateway.runtime_adapters import RuntimeAdapters
from sia.gateway.requests import MAX_TAG_CHARS, ChatCall, InvalidRequest, parse_chat_call, parse_chat_request
from sia.records import ModelCall

__all__ = ["Backend", "CallScope", "Gateway", "MemoryRecorder", "Recorder", "parse_chat_request"]


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


class Gateway:
    """The HTTP server plus token registry. The constructor binds 127.0.0.1:port (0 picks a free
    one, a taken one raises OSError); `start()` serves, `stop()` stops within a few seconds."""

    def __init__(self, backend_for: Callable[[str | None], Backend], recorder: Recorder | None = None,
                 port: int = 0, max_batch: int = 16, batch_window_ms: float = 15.0, model_name: str = "sia-target",
                 limits: GatewayConfig | None = None, runtime_adapters: RuntimeAdapters | None = None):
        """`backend_for(adapter_version)` returns the backend serving base + that adapter; `limits`
        bound what callers may do (the defaults of GatewayConfig when None). With `runtime_adapters`
        (`sia serve --runtime-lora`), admin tokens may load and unload LoRA adapters by name and a
        request naming one as its `model` is served by it (gateway.runtime_adapters)."""
        self.backend_for = backend_for
        self.runtime_adapters = runtime_adapters
        self.admin_tokens: set[str] = set()
        self.model_name = model_name
        self.recorder = recorder or MemoryRecorder()
        self.limits = limits or GatewayConfig()
        self.tokens: dict[str, TokenState] = {}
        self.batcher = Batcher(backend_for, max_batch, batch_window_ms / 1000)
        self._unknown_token_rejections = RejectionBudget(self.limits.rejections_recorded)
        # Recording writes run.db (a few ms, fsynced): off the event loop, on threads of its own.
        self._recording = ThreadPoolExecutor(4, thread_name_prefix="sia-gateway-record")
        sock = socket.create_server(("127.0.0.1", port), backlog=128)
        self._port = sock.getsockname()[1]
        self._server = ServerThread(build_app(self), sock, self.limits)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> "Gateway":
        self._server.start()
        return self

    def stop(self) -> None:
        for token in list(self.tokens):  # first: queued requests end now, unrecorded
            self.revoke_token(token)
        self._server.stop()
        self.batcher.stop()
        self._recording.shutdown(wait=False)

    def issue_token(self, scope: CallScope, tags: Iterable[str] | None = None, *, quotas: bool = True,
                    admin: bool = False) -> str:
        """A new token for `scope`; with `tags` (an evaluation's item tags), its calls may name only
        those. `quotas=False` is for our own callers that live as long as a run or a session (the
        meta and feedback roles, `sia serve`): no request or token quota, concurrency still bounded.
        `admin`: it may also load and unload runtime adapters (`sia serve`'s own token only)."""
        token = "sia-" + secrets.token_hex(16)
        if admin:
            self.admin_tokens.add(token)
        limits = self.limits if quotas else self.limits.model_copy(update={
            "token_requests": 1 << 62, "token_prompt_tokens": 1 << 62, "token_completion_tokens": 1 << 62})
        self.tokens[token] = TokenState(scope, None if tags is None else frozenset(tags), limits)
        return token

    def revoke_token(self, token: str) -> None:
        self.admin_tokens.discard(token)
        state = self.tokens.pop(token, None)
        if state is not None:
            state.revoke()

    def complete(self, scope: CallScope, body: dict, item: str | None) -> dict:
        """One call made in-process by trusted code (no token: no tag check, no quota); raises
        InvalidRequest for a bad body and TimeoutError past `request_timeout_s`."""
        call = parse_chat_call(body, self.limits)
        started = time.monotonic()
        future = self.batcher.submit(scope.adapter_version, call.request)
        try:
            out: Completion = future.result(timeout=self.limits.request_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no completion within {self.limits.request_timeout_s:g} s") from None
        self._record(scope, call, item, out, time.monotonic() - started)
        return self._reply(out)

    async def serve(self, state: TokenState, raw: bytes, header_tag: str | None, path: str) -> tuple[int, dict]:
        """(status, JSON reply) for one HTTP chat call with a known token."""
        try:
            body = json.loads(raw) if raw.strip() else {}
            call = parse_chat_call(body, self.limits)
            tag = header_tag or call.item
            if tag is not None and len(tag) > MAX_TAG_CHARS:
                raise InvalidRequest(f"X-SIA-Item: an item tag has at most {MAX_TAG_CHARS} characters")
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and InvalidRequest are ValueErrors
            return 400, error_payload(400, "JSON nested too deep" if isinstance(exc, RecursionError) else str(exc))
        try:
            state.admit(tag)
        except Refusal as refusal:
            await self.reject(state, refusal.reason, path)
            return refusal.status, error_payload(refusal.status, refusal.reason)
        scope = state.scope
        if self.runtime_adapters is not None and body.get("model") in self.runtime_adapters:
            scope = replace(scope, adapter_version=body["model"])  # vLLM's way: the adapter named as the model
        started = time.monotonic()
        future = self.batcher.submit(scope.adapter_version, call.request)
        state.watch(future)
        out = None
        try:
            out = await _wait(future, self.limits.request_timeout_s)
        except Refusal as refusal:
            return refusal.status, error_payload(refusal.status, refusal.reason)
        except Exception as exc:  # noqa: BLE001  (the backend's error, for this call only)
            return 500, error_payload(500, f"{type(exc).__name__}: {exc}")
        finally:
            state.finish(future, out)
        if state.revoked:  # revoked while decoding: the evaluation is over, nothing more is recorded
            return 401, error_payload(401, "token revoked")
        try:
            await self._in_thread(self._record, scope, call, tag, out, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001
            return 500, error_payload(500, f"recording the call failed: {type(exc).__name__}: {exc}")
        return 200, self._reply(out)

    async def reject(self, state: TokenState | None, reason: str, path: str) -> None:
        """Record a rejected request, while the token (or unknown tokens together) has budget left."""
        budget = state.rejections if state is not None else self._unknown_token_rejections
        verdict = budget.take()
        if verdict is None:
            return
        if verdict == "last":
            reason += f" (later rejections of {'this token' if state else 'unknown tokens'} are not recorded)"
        await self._in_thread(self.recorder.record_rejected, reason, path)

    async def _in_thread(self, fn, *args) -> None:
        await asyncio.get_running_loop().run_in_executor(self._recording, fn, *args)

    def _record(self, scope: CallScope, call: ChatCall, item: str | None, out: Completion, latency: float) -> None:
        self.recorder.record_call(ModelCall(
            run_id=scope.run_id, generation=scope.generation, adapter_version=scope.adapter_version,
            item=item, purpose=scope.purpose + (":forced" if call.forced else ""), messages=call.request.messages,
            response_format=call.response_format, completion=out.text,
            prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens, latency_s=latency,
        ))

    def _reply(self, out: Completion) -> dict:
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion",
            "created": int(time.time()), "model": self.model_name,
            "choices": [{"index": 0, "finish_reason": out.finish_reason,
                         "message": {"role": "assistant", "content": out.text}}],
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                      "total_tokens": out.prompt_tokens + out.completion_tokens},
        }


async def _wait(future: Future, timeout_s: float) -> Completion:
    """The completion; Refusal 504 after `timeout_s` (a still queued request is then cancelled,
    never decoded), Refusal 401 if the token was revoked while the request was queued."""
    waiter = asyncio.wrap_future(future)
    done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
    if not done:
        waiter.cancel()
        raise Refusal(504, f"no completion within {timeout_s:g} s")
    if waiter.cancelled():
        raise Refusal(401, "token revoked while the request waited")
    return waiter.result()

