"""A gateway backend that forwards to a remote OpenAI-compatible endpoint (OpenAI, vLLM,
Ollama, llama.cpp), so calls to a remote target model are still recorded by our gateway."""

from __future__ import annotations

import json
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sia.gateway.protocol import ChatRequest, Completion


class RemoteBackend:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120):
        self.base_url, self.name, self.api_key_env, self.timeout_s = base_url.rstrip("/"), model, api_key_env, timeout_s

    def _one(self, req: ChatRequest) -> Completion:
        body = {"model": self.name, "messages": req.messages, "max_tokens": req.max_tokens,
                "temperature": req.temperature, "top_p": req.top_p}
        if req.json_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": req.json_schema}}
        if req.seed is not None:
            body["seed"] = req.seed
        http = urllib.request.Request(
            self.base_url + "/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {os.environ.get(self.api_key_env, 'none')}"})
        with urllib.request.urlopen(http, timeout=self.timeout_s) as resp:
            data = json.loads(resp.read())
        usage = data.get("usage") or {}
        choice = data["choices"][0]
        return Completion(choice["message"].get("content") or "", usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0), choice.get("finish_reason") or "stop")

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=min(8, len(batch))) as pool:
            return list(pool.map(self._one, batch))
