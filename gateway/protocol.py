"""The gateway's request and completion types, free of heavy imports (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChatRequest:
    """One chat completion request as the engine sees it."""

    messages: list[dict]
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    json_schema: dict | None = None
    seed: int | None = None

    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one `generate` call."""
        if self.temperature <= 0:  # greedy: seed and top_p change nothing
            return (False,)
        return (True, round(self.temperature, 3), round(self.top_p, 3), self.seed)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
