"""Batched text generation on the target model, with JSON-schema-constrained decoding.

One `Engine` owns one loaded model. `generate` takes a batch of chat requests that share
sampling settings and returns one completion each; rows with a `response_format` JSON schema
are decoded under an xgrammar grammar, so the output always parses and obeys the schema.
Greedy batches go through `gateway.greedy.GreedyDecoder`, which checks each row's forced text
(the grammar's fixed characters ahead) in one forward pass instead of one pass per token;
sampled batches go through `model.generate`. Either way a constrained row stops being decoded
as soon as the grammar allows only one way to finish it: that rest is appended as text, the
same text token-by-token decoding would have produced (its usage counts that rest as tokenized
on its own, which can differ by a token). Compiled grammars are kept for the most recently used
`GRAMMAR_CACHE` schemas: callers choose schemas, so the cache must not grow with them.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import torch
import transformers

from sia.gateway.greedy import GreedyDecoder, forced_rest
from sia.gateway.protocol import ChatRequest, Completion


class _GrammarMask(transformers.LogitsProcessor):
    """Applies one xgrammar matcher per constrained row; unconstrained rows pass through.
    A row whose grammar has terminated may only emit EOS. With `finish_forced`, a row whose
    only possible rest is fixed is marked finished (`tails[i]` = that rest) for `_Finished`."""

    def __init__(self, grammars: list, vocab_size: int, eos_id: int, tokenizer, max_tokens: list[int],
                 finish_forced: bool):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.eos_id, self.tokenizer, self.max_tokens, self.finish_forced = eos_id, tokenizer, max_tokens, finish_forced
        self.seen: int | None = None  # input length the matchers have consumed up to
        self.prompt_len: int | None = None
        self.tails: list[str | None] = [None] * len(grammars)
        self.finished_at: list[int | None] = [None] * len(grammars)
        self.tail_tokens: list[int] = [0] * len(grammars)  # the rest as tokenized on its own (usage)

    def advance(self, input_ids: torch.LongTensor) -> None:
        """Feed every live matcher the token generated since the last call."""
        length = input_ids.shape[1]
        if self.seen is None:
            self.seen = self.prompt_len = length
            return
        if length == self.seen:
            return
        self.seen = length
        for i, matcher in enumerate(self.matchers):
            if matcher is None or matcher.is_terminated() or self.tails[i] is not None:
                continue
            matcher.accept_token(int(input_ids[i, -1]))
            if self.finish_forced:
                self._finish_if_forced(i, input_ids[i, self.prompt_len:])

    def _finish_if_forced(self, i: int, generated: torch.LongTensor) -> None:
        finished = forced_rest(self.matchers[i], generated.tolist(), self.tokenizer, self.max_tokens[i])
        if finished is not None:
            (self.tails[i], self.tail_tokens[i]), self.finished_at[i] = finished, len(generated)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.advance(input_ids)
        for i, matcher in enumerate(self.matchers):
            if matcher is None or self.tails[i] is not None:
                continue
            if matcher.is_terminated():
                scores[i, :] = float("-inf")
                scores[i, self.eos_id] = 0.0
                continue
            matcher.fill_next_token_bitmask(self.bitmask, i)
            self.xgr.apply_token_bitmask_inplace(scores[i : i + 1], self.bitmask[i : i + 1])
        return scores


class _Finished(transformers.StoppingCriteria):
    """Stops the rows `_GrammarMask` has marked finished (their rest is fixed text)."""

    def __init__(self, mask: _GrammarMask):
        self.mask = mask

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.mask.advance(input_ids)
        return torch.tensor([tail is not None for tail in self.mask.tails], device=input_ids.device)


class Engine:
    """A loaded model plus its tokenizer; thread-safe (one generate at a time)."""

    DECODING = ("jump-forward", "stop-at-rest", "every-token")
    GRAMMAR_CACHE = 128  # compiled grammars kept (least recently used go first)

    def __init__(self, model, tokenizer, name: str, decoding: str = "jump-forward"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        # "jump-forward": greedy batches through GreedyDecoder, sampled ones through model.generate,
        # stopping at a forced rest. "stop-at-rest" sends greedy batches to model.generate too, and
        # "every-token" also decodes every forced token; both are kept for comparisons.
        if decoding not in self.DECODING:
            raise ValueError(f"decoding must be one of {self.DECODING}, got {decoding!r}")
        self.decoding = decoding
        self.lock = threading.Lock()
        self._compiler = None
        self._grammars: OrderedDict[str, object] = OrderedDict()
        self._grammar_lock = threading.Lock()

    @classmethod
    def load(cls, name: str, path: Path | None = None, adapter: Path | None = None, precision: str = "auto") -> "Engine":
        from sia.gateway.model_store import load_model

        model, tokenizer = load_model(path, adapter, precision)
        return cls(model, tokenizer, name)

    def grammar(self, schema: dict):
        """The compiled xgrammar grammar of a JSON schema (kept in a small LRU)."""
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        with self._grammar_lock:
            if key in self._grammars:
                self._grammars.move_to_end(key)
                return self._grammars[key]
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
                # xgrammar's own cache is unbounded by default; this LRU is the only cache.
                self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)
            grammar = self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
            if len(self._grammars) > self.GRAMMAR_CACHE:
                self._grammars.popitem(last=False)
            return grammar

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
        grammars = [self.grammar(r.json_schema) if r.json_schema else None for r in batch]
        eos_id = self.tokenizer.eos_token_id
        prompt_tokens = [int(n) for n in enc["attention_mask"].sum(-1)]
        if first.temperature <= 0 and self.decoding == "jump-forward":
            decoder = GreedyDecoder(self.model, self.tokenizer, eos_id)
            with self.lock:
                rows = decoder.decode(enc["input_ids"], enc["attention_mask"], grammars, [r.max_tokens for r in batch])
            return [Completion(self.tokenizer.decode(row.generated, skip_special_tokens=True) + (row.tail or ""),
                               n, len(row.generated) + row.tail_tokens, row.reason)
                    for row, n in zip(rows, prompt_tokens)]
        out, mask = self._model_generate(batch, enc, grammars)
        completions = []
        width = enc["input_ids"].shape[1]
        for i, req in enumerate(batch):
            new = out[i, width:].tolist()
            tail = mask.tails[i] if mask else None
            if tail is not None:
                new, reason = new[: mask.finished_at[i]], "stop"
            elif eos_id in new:
                new, reason = new[: new.index(eos_id)], "stop"
            else:
                reason = "length"
            if len(new) > req.max_tokens:  # the batch decodes to its longest max_tokens; this row allows fewer
                new, reason = new[: req.max_tokens], "length"
            text = self.tokenizer.decode(new, skip_special_tokens=True) + (tail or "")
            used = len(new) + (mask.tail_tokens[i] if tail is not None else 0)
            completions.append(Completion(text, prompt_tokens[i], used, reason))
        return completions

    def _model_generate(self, batch: list[ChatRequest], enc, grammars: list):
        """`model.generate` with the grammar as a logits processor; returns (ids, mask or None)."""
        first, eos_id = batch[0], self.tokenizer.eos_token_id
        processors, stopping, mask = [], [], None
        if any(g is not None for g in grammars):
            mask = _GrammarMask(grammars, self.model.config.vocab_size, eos_id, self.tokenizer,
                                [r.max_tokens for r in batch], self.decoding != "every-token")
            processors.append(mask)
            stopping.append(_Finished(mask))
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
                stopping_criteria=transformers.StoppingCriteriaList(stopping),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=eos_id,
            )
        return out, mask
