"""What one gateway token may do, and what it has done: its item tags, quotas and work in flight.

A token issued for an evaluation carries the tags of that evaluation's items; a call may name
only one of them (else 403), and at most `calls_per_tag` times. Every token has quotas on
requests, concurrent requests, and prompt and completion tokens (else 429); tokens spent are
counted when a completion comes back, so a token may overshoot by what its requests in flight
spend. Revoking a token cancels its queued requests: the batcher skips cancelled futures, so
they are never decoded, and the gateway records nothing for a revoked token.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Future
from typing import TYPE_CHECKING

from sia.config import GatewayConfig
from sia.gateway.protocol import Completion

if TYPE_CHECKING:
    from sia.gateway.server import CallScope


class Refusal(Exception):
    """Why a call is not served: an HTTP status and a reason (recorded as a rejected request)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class RejectionBudget:
    """How many rejected requests of one source are still recorded (run.db must not grow at HTTP speed)."""

    def __init__(self, limit: int):
        self.limit, self.seen = limit, 0
        self.lock = threading.Lock()

    def take(self) -> str | None:
        """'record' while under the limit, 'last' for the one that reaches it, then None."""
        with self.lock:
            self.seen += 1
            if self.seen < self.limit:
                return "record"
            return "last" if self.seen == self.limit else None


class TokenState:
    """One issued token: its scope, its tags (None: not bound to an evaluation), its spending."""

    def __init__(self, scope: CallScope, tags: frozenset[str] | None, limits: GatewayConfig):
        self.scope, self.tags, self.limits = scope, tags, limits
        self.lock = threading.Lock()
        self.requests = self.in_flight = self.prompt_tokens = self.completion_tokens = 0
        self.calls_per_tag: Counter[str] = Counter()
        self.pending: set[Future] = set()
        self.revoked = False
        self.rejections = RejectionBudget(limits.rejections_recorded)

    def admit(self, tag: str | None) -> None:
        """Count one call under `tag`, or raise Refusal (nothing is counted then)."""
        limits = self.limits
        with self.lock:
            if self.revoked:
                raise Refusal(401, "token revoked")
            if tag is not None and self.tags is not None and tag not in self.tags:
                raise Refusal(403, f"item tag {tag[:64]!r} is not an item of this evaluation")
            spent = [("requests", self.requests, limits.token_requests),
                     ("prompt tokens", self.prompt_tokens, limits.token_prompt_tokens),
                     ("completion tokens", self.completion_tokens, limits.token_completion_tokens)]
            for what, used, limit in spent:
                if used >= limit:
                    raise Refusal(429, f"this token's quota of {limit} {what} is spent")
            if self.in_flight >= limits.token_concurrency:
                raise Refusal(429, f"this token already has {self.in_flight} requests in flight "
                                   f"(at most {limits.token_concurrency})")
            if tag is not None and self.calls_per_tag[tag] >= limits.calls_per_tag:
                raise Refusal(429, f"item tag {tag[:64]!r} has had its {limits.calls_per_tag} calls")
            self.requests += 1
            self.in_flight += 1
            if tag is not None:
                self.calls_per_tag[tag] += 1

    def watch(self, future: Future) -> None:
        """Keep an admitted call's future, so that revoking the token cancels it while queued."""
        with self.lock:
            if self.revoked:
                future.cancel()
            else:
                self.pending.add(future)

    def finish(self, future: Future, completion: Completion | None) -> None:
        """An admitted call is over; charge what its completion spent."""
        with self.lock:
            self.pending.discard(future)
            self.in_flight -= 1
            if completion is not None:
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens

    def revoke(self) -> None:
        """No more calls; queued ones are cancelled (a batch already decoding finishes, unrecorded)."""
        with self.lock:
            self.revoked = True
            pending, self.pending = self.pending, set()
        for future in pending:
            future.cancel()
