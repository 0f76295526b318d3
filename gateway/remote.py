"""A gateway backend that forwards to a remote OpenAI-compatible endpoint (OpenAI, vLLM, SGLang,
Ollama, llama.cpp), so calls to a remote target model are still recorded by our gateway.

What holds (the knobs are the target role's `RoleConfig.timeout_s`, `max_concurrency`, `max_retries`):
- One `httpx.Client` per backend, its connection pool sized to `max_concurrency`, connections
  kept alive between batches. A batch's requests are in flight at once, up to `max_concurrency`
  (the same bound holds across batches: one worker pool per backend).
- `timeout_s` bounds each phase of a request: connecting, waiting for a free connection, sending,
  and each wait for response bytes (an endpoint answers a non-streamed completion in one piece,
  so the last is the wait for the whole answer).
- A connection error, a timeout, a 429 or a 5xx is retried up to `max_retries` times, after an
  exponential backoff with jitter, or after the endpoint's `Retry-After` when it sends one; both
  waits are capped at `max_wait_s`.
- Any other non-2xx status fails at once with a `RemoteError` naming the endpoint, the status and
  the start of the body. The API key never appears in an error: it is scrubbed from the body too,
  since some endpoints echo a rejected key, and the gateway passes the error to its caller.
- A failed request fails only its own reply: the gateway's batcher reruns a failed batch one
  request at a time, so the batch's outcomes (completions and failures) are kept and handed out
  on those reruns instead of being sent, and paid for, twice.
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone

import httpx

from sia.gateway.protocol import ChatRequest, Completion

BODY_SNIPPET_CHARS = 300  # of an error reply, in a RemoteError


class RemoteError(RuntimeError):
    """The endpoint refused a request, or gave no usable answer within the retries."""


class RemoteBackend:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 300,
                 max_concurrency: int = 8, max_retries: int = 2, *, backoff_s: float = 0.5, max_wait_s: float = 30.0):
        """`backoff_s` is the first retry's backoff (doubled per retry, jittered to half to all
        of it); `max_wait_s` caps any wait before a retry, `Retry-After` included."""
        if timeout_s <= 0 or max_concurrency < 1 or max_retries < 0 or backoff_s < 0 or max_wait_s < 0:
            raise ValueError("RemoteBackend: timeout_s > 0, max_concurrency >= 1, max_retries, backoff_s and "
                             "max_wait_s >= 0")
        self.base_url, self.name, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.endpoint = self.base_url + "/chat/completions"
        self.timeout_s, self.max_concurrency, self.max_retries = timeout_s, max_concurrency, max_retries
        self.backoff_s, self.max_wait_s = backoff_s, max_wait_s
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency))
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="sia-remote")
        # Outcomes of the last batch that failed, by id(request), with the request itself (so an
        # id cannot be reused while kept): the batcher's one-by-one reruns take them from here.
        self._settled: dict[int, tuple[ChatRequest, Completion | Exception]] = {}
        self._settled_lock = threading.Lock()

    @classmethod
    def for_role(cls, role, model: str | None = None) -> "RemoteBackend":
        """The backend of a remote role's endpoint (a `config.RoleConfig`), asking for `model`
        (default the role's own: another names a runtime-loaded adapter)."""
        return cls(role.base_url, model or role.model, role.api_key_env, timeout_s=role.timeout_s,
                   max_concurrency=role.max_concurrency, max_retries=role.max_retries)

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        """One completion per request, in order; raises the first failure if any request failed
        (after its retries), keeping the batch's outcomes for the reruns of its requests."""
        outcomes = list(self._pool.map(self._outcome, batch))
        failures = [out for out in outcomes if isinstance(out, Exception)]
        if not failures:
            return outcomes
        if len(batch) > 1:
            with self._settled_lock:
                self._settled = {id(req): (req, out) for req, out in zip(batch, outcomes)}
        raise failures[0]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> "RemoteBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _outcome(self, req: ChatRequest) -> Completion | Exception:
        with self._settled_lock:
            kept = self._settled.get(id(req))
            if kept is not None and kept[0] is req:
                del self._settled[id(req)]
                return kept[1]
        try:
            return self._send(req)
        except Exception as exc:  # noqa: BLE001  (this request's failure, not its batch's)
            return exc

    def _send(self, req: ChatRequest) -> Completion:
        body = _body(self.name, req)
        headers = {"Authorization": f"Bearer {os.environ.get(self.api_key_env, 'none')}"}
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                resp = self._client.post(self.endpoint, json=body, headers=headers)
            except httpx.UnsupportedProtocol as exc:  # a misconfigured base_url: retrying cannot help
                raise RemoteError(f"{self.endpoint}: {exc}") from None
            except httpx.TimeoutException as exc:
                problem = f"timed out after {self.timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:  # refused, reset, dropped before the answer
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return self._completion(resp)
                problem = f"status {resp.status_code}: {self._snippet(resp.text)}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise RemoteError(f"{self.endpoint} answered {problem}")
                retry_after = _retry_after_s(resp.headers.get("retry-after"))
            if attempt == self.max_retries:
                raise RemoteError(f"{self.endpoint}: no answer after {attempt + 1} attempt(s); last: {problem}")
            time.sleep(self._wait_s(attempt, retry_after))
        raise AssertionError("unreachable")

    def _wait_s(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_wait_s, retry_after)
        step = min(self.max_wait_s, self.backoff_s * 2 ** attempt)
        return step / 2 + random.uniform(0, step / 2)  # jitter: clients failed together retry apart

    def _completion(self, resp: httpx.Response) -> Completion:
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            return Completion(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                              choice.get("finish_reason") or "stop")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RemoteError(f"{self.endpoint} answered {resp.status_code} without a completion: "
                              f"{self._snippet(resp.text)}") from None

    def _snippet(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        if key and len(key) >= 4:  # before cutting, so no part of it is left; a shorter "key" protects nothing
            text = text.replace(key, "[api key]")
        return repr(" ".join(text.split())[:BODY_SNIPPET_CHARS])


def _body(model: str, req: ChatRequest) -> dict:
    body = {"model": model, "messages": req.messages, "max_tokens": req.max_tokens,
            "temperature": req.temperature, "top_p": req.top_p}
    if req.json_schema:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": req.json_schema}}
    if req.seed is not None:
        body["seed"] = req.seed
    return body


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
