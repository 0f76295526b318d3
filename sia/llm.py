"""The meta/feedback roles' LLM: any LangChain chat model (ChatOpenAI against any
OpenAI-compatible endpoint by default), asked for JSON that a pydantic schema validates."""

from __future__ import annotations

import json
import re
import time
from typing import Callable, TypeVar

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)
_FENCE = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)```", re.S)


class LLMOutputError(ValueError):
    """The model's reply did not parse; the message quotes the start of the reply."""


# (messages, completion text, prompt tokens, completion tokens, seconds): records one call
CallRecorder = Callable[[list[dict], str, int, int, float], None]


class RoleLLM:
    """One role's model plus what it is able to do. `record`, when given, is told of every call
    (a remote endpoint's calls do not pass our gateway, which records the embedded model's)."""

    def __init__(self, chat: BaseChatModel, can_write_code: bool, record: CallRecorder | None = None):
        self.chat, self.can_write_code, self.record = chat, can_write_code, record

    def _messages(self, system: str, user: str) -> list[tuple[str, str]]:
        return [("system", system), ("user", user)]

    def _invoke(self, runnable, system: str, user: str) -> str:
        started = time.monotonic()
        try:
            reply = runnable.invoke(self._messages(system, user))
        except Exception as exc:  # an endpoint error is a bad reply for the loop: record it, go on
            raise LLMOutputError(f"the model endpoint failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
        text = str(reply.content)
        if self.record is not None:
            usage = getattr(reply, "usage_metadata", None) or {}
            self.record([{"role": r, "content": c} for r, c in self._messages(system, user)], text,
                        int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0),
                        time.monotonic() - started)
        return text

    def structured(self, system: str, user: str, schema: type[T]) -> T:
        """Ask for JSON matching `schema` (sent as a `response_format` JSON schema)."""
        fmt = {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}
        text = self._invoke(self.chat.bind(response_format=fmt), system, user).strip()
        if m := _FENCE.search(text):
            text = m.group(1).strip()
        try:
            return schema.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise LLMOutputError(f"reply is not valid {schema.__name__} JSON ({type(exc).__name__}): {text[:200]!r}")

    def code(self, system: str, user: str) -> str:
        """Ask for a whole Python file; returns the first fenced block, or the reply itself."""
        text = self._invoke(self.chat, system, user)
        blocks = _FENCE.findall(text)
        return (max(blocks, key=len) if blocks else text).strip() + "\n"


def chat_model(base_url: str, model: str, api_key: str, temperature: float, max_tokens: int, timeout_s: float):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=base_url, model=model, api_key=api_key, temperature=temperature,
                      max_tokens=max_tokens, timeout=timeout_s, max_retries=1)
