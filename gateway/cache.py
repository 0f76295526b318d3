"""Greedy completions kept in memory, so that a request the model has already answered greedily
is answered again without decoding it again.

A loop asks the same questions more than once: a candidate scaffold whose edit leaves the
prompts unchanged sends its incumbent's requests again, and a smoke run repeats the first
feedback items. Greedy decoding is a function of the request and the weights; only rounding can
depend on which requests share a batch (it can change a token in bf16). A repeat therefore gets
the first answer, which also makes repeats agree with each other. Sampled requests are never reused.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from sia.gateway.protocol import ChatRequest, Completion


def greedy_key(request: ChatRequest) -> str | None:
    """What a greedy completion depends on, hashed; None for a sampled request."""
    if request.temperature > 0:
        return None
    fields = [request.messages, request.json_schema, request.max_tokens]
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class GreedyCache:
    """A backend that answers repeated greedy requests from memory and passes the rest on.

    Wrap one backend per set of weights (base, or base + one adapter version): the cache lives
    exactly as long as the weights it remembers. Repeats inside one batch are decoded once.
    `max_entries` bounds memory (least recently used answers go first); 0 turns reuse off.
    """

    def __init__(self, backend, max_entries: int = 50_000):
        self.backend, self.name, self.max_entries = backend, backend.name, max_entries
        self._answers: OrderedDict[str, Completion] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.decoded = 0

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        keys = [greedy_key(r) if self.max_entries else None for r in batch]
        answers: list[Completion | None] = [None] * len(batch)
        to_decode: dict[object, list[int]] = {}  # key (or the row, when not reusable) -> rows asking it
        with self._lock:
            for row, key in enumerate(keys):
                if key is not None and key in self._answers:
                    self._answers.move_to_end(key)
                    answers[row] = self._answers[key]
                    self.hits += 1
                else:
                    to_decode.setdefault(row if key is None else key, []).append(row)
        decoded = self.backend.generate([batch[rows[0]] for rows in to_decode.values()]) if to_decode else []
        with self._lock:
            for (key, rows), completion in zip(to_decode.items(), decoded):
                for row in rows:
                    answers[row] = completion
                self.decoded += 1
                self.hits += len(rows) - 1
                if isinstance(key, str):
                    self._answers[key] = completion
                    if len(self._answers) > self.max_entries:
                        self._answers.popitem(last=False)
        return answers
