"""Batched text generation on the target model, with JSON-schema-constrained decoding.

One `Engine` owns one loaded model. `generate` takes a batch of chat requests that share
sampling settings and returns one completion each; rows with a `response_format` JSON schema
are decoded under an xgrammar grammar, so the output always parses and obeys the schema.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
import transformers

from gateway.protocol import ChatRequest, Completion


class _GrammarMask(transformers.LogitsProcessor):
    """Applies one xgrammar matcher per constrained row; unconstrained rows pass through.
    A row whose grammar has terminated may only emit EOS."""

    def __init__(self, grammars: list, vocab_size: int, eos_id: int):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.eos_id = eos_id
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if self.started and not matcher.is_terminated():
                matcher.accept_token(int(input_ids[i, -1]))
            if matcher.is_terminated():
                scores[i, :] = float("-inf")
                scores[i, self.eos_id] = 0.0
                continue
            matcher.fill_next_token_bitmask(self.bitmask, i)
            self.xgr.apply_token_bitmask_inplace(scores[i : i + 1], self.bitmask[i : i + 1])
        self.started = True
        return scores


class Engine:
    """A loaded model plus its tokenizer; thread-safe (one generate at a time)."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.lock = threading.Lock()
        self._compiler = None
        self._grammars: dict[str, object] = {}

    @classmethod
    def load(cls, name: str, path: Path | None = None, adapter: Path | None = None, precision: str = "auto") -> "Engine":
        from gateway.model_store import load_model

        model, tokenizer = load_model(path, adapter, precision)
        return cls(model, tokenizer, name)

    def _grammar(self, schema: dict):
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
                self._compiler = xgr.GrammarCompiler(info)
            self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        """Generate for requests that share `sampling_key()`; pads on the left."""
        if not batch:
            return []
        first = batch[0]
        prompts = [self.render(r.messages) for r in batch]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        grammars = [self._grammar(r.json_schema) if r.json_schema else None for r in batch]
        processors = []
        eos_id = self.tokenizer.eos_token_id
        if any(g is not None for g in grammars):
            processors.append(_GrammarMask(grammars, self.model.config.vocab_size, eos_id))
        if first.seed is not None:
            torch.manual_seed(first.seed)
        sample = first.temperature > 0
        with self.lock:
            out = self.model.generate(
                **enc,
                max_new_tokens=max(r.max_tokens for r in batch),
                do_sample=sample,
                temperature=first.temperature if sample else None,
                top_p=first.top_p if sample else None,
                top_k=None,
                logits_processor=transformers.LogitsProcessorList(processors),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=eos_id,
            )
        completions = []
        width = enc["input_ids"].shape[1]
        for i, req in enumerate(batch):
            new = out[i, width:].tolist()
            if eos_id in new:
                new, reason = new[: new.index(eos_id)], "stop"
            else:
                reason = "length"
            new = new[: req.max_tokens]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            completions.append(Completion(text, int(enc["attention_mask"][i].sum()), len(new), reason))
        return completions
