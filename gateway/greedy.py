"""Greedy decoding with forced text checked in one forward pass (jump-forward with verification).

Under a JSON schema most of an answer is fixed by the grammar: `{"label": "` before the first
choice, a prefix that every allowed label shares, the `"}` after it. Decoding token by token
spends one forward pass per forced token, and a batch waits for its slowest row. Here each row's
forced text is tokenized and fed as a draft together with the row's last token; a draft token is
kept only if it is the token greedy decoding picks at its place (the masked argmax of the logits
there), so the text is the one token-by-token greedy decoding gives, with fewer passes. Rejected
draft positions stay in the KV cache but are masked out of attention, and positions are counted
over kept tokens only. Drafts are fed only in passes where every row has one (a pass pads each row
to the widest draft), and finished rows leave the batch. A row whose rest is fixed up to the end of
its grammar stops there and gets that rest appended as text (`forced_rest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def forced_rest(matcher, generated: list[int], tokenizer, max_tokens: int) -> tuple[str, int] | None:
    """(rest, its token count): the text that must follow and completes the grammar, tokenized on
    its own; None while a choice is left, or when it would not fit in `max_tokens` (decoding then
    runs out, as it would have token by token)."""
    if matcher.is_terminated():
        return None
    if "\ufffd" in tokenizer.decode(generated):
        return None  # inside a multi-byte character: the rest would not start at a character boundary
    try:
        rest = matcher.find_jump_forward_string()
    except UnicodeDecodeError:
        return None  # the forced bytes end inside a character, before a branch
    probe = matcher.fork()
    if not (probe.accept_string(rest) and probe.is_completed() and probe.find_jump_forward_string() == ""):
        return None
    tokens = len(tokenizer.encode(rest, add_special_tokens=False))
    return (rest, tokens) if len(generated) + tokens <= max_tokens else None


def forced_draft(matcher, tokenizer) -> list[int]:
    """The forced text ahead of the row as tokens, to be checked in the next pass ([] if none)."""
    try:
        rest = matcher.find_jump_forward_string()
    except UnicodeDecodeError:
        return []
    return tokenizer.encode(rest, add_special_tokens=False) if rest else []


@dataclass
class Row:
    """One request's decoding state."""

    matcher: object | None  # xgrammar GrammarMatcher, None for an unconstrained row
    max_tokens: int
    generated: list[int] = field(default_factory=list)
    pending: int | None = None  # picked but not yet fed to the model
    draft: list[int] = field(default_factory=list)
    reason: str | None = None  # set when the row is done: "stop" or "length"
    tail: str | None = None
    tail_tokens: int = 0


class GreedyDecoder:
    """Decodes one batch of greedy requests on a Hugging Face causal LM (left-padded input)."""

    def __init__(self, model, tokenizer, eos_id: int):
        import xgrammar as xgr

        self.xgr, self.model, self.tokenizer, self.eos_id = xgr, model, tokenizer, eos_id
        self.vocab_size = model.config.vocab_size
        self.forward_passes = 0

    def _pick(self, row: Row, logits: torch.Tensor, bitmask: torch.Tensor) -> int:
        if row.matcher is None:
            return int(logits.argmax())
        if row.matcher.is_terminated():
            return self.eos_id
        row.matcher.fill_next_token_bitmask(bitmask, 0)
        scores = logits[: self.vocab_size].unsqueeze(0).clone()
        self.xgr.apply_token_bitmask_inplace(scores, bitmask)
        return int(scores.argmax())

    def _take(self, row: Row, token: int) -> bool:
        """Append a picked token; True when the row is done."""
        if token == self.eos_id:
            row.reason = "stop"
            return True
        row.generated.append(token)
        if row.matcher is not None:
            row.matcher.accept_token(token)
            finished = forced_rest(row.matcher, row.generated, self.tokenizer, row.max_tokens)
            if finished is not None:
                (row.tail, row.tail_tokens), row.reason = finished, "stop"
                return True
        if len(row.generated) >= row.max_tokens:
            row.reason = "length"
            return True
        return False

    def _settle(self, row: Row, logits: torch.Tensor, bitmask: torch.Tensor) -> int:
        """Pick tokens along the fed draft while it agrees; returns how many draft tokens were kept."""
        kept = 0
        while True:
            token = self._pick(row, logits[kept], bitmask)
            if self._take(row, token):
                return kept
            if kept == len(row.draft) or token != row.draft[kept]:
                row.pending = token
                return kept
            kept += 1

    def _forward(self, input_ids, attention_mask, positions, cache, keep: int):
        self.forward_passes += 1
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=keep)
        return out.logits.float().cpu(), out.past_key_values  # grammar masks apply on the CPU

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, grammars: list,
               max_tokens: list[int]) -> list[Row]:
        rows = [Row(self.xgr.GrammarMatcher(g) if g is not None else None, n) for g, n in zip(grammars, max_tokens)]
        bitmask = self.xgr.allocate_token_bitmask(1, self.vocab_size)
        mask = attention_mask.clone()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(input_ids, mask, positions, None, keep=1)
        for i, row in enumerate(rows):
            if row.max_tokens <= 0:
                row.reason = "length"
            else:
                self._settle(row, logits[i, -1:], bitmask)
        pad = self.tokenizer.pad_token_id
        order = list(range(len(rows)))  # the rows the cache holds, in its batch order
        while True:
            keep = [k for k, i in enumerate(order) if rows[i].reason is None]
            if not keep:
                return rows
            if len(keep) < len(order):  # finished rows leave the batch
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, order = mask[index], [order[k] for k in keep]
            live = [rows[i] for i in order]
            for row in live:
                room = row.max_tokens - len(row.generated)  # kept draft tokens count against max_tokens
                row.draft = forced_draft(row.matcher, self.tokenizer)[:room] if row.matcher is not None else []
            if not all(row.draft for row in live):
                # Every row in a pass is padded to its widest draft; drafts only save passes when
                # no row needs a pass of its own for a choice.
                for row in live:
                    row.draft = []
            width = 1 + max(len(row.draft) for row in live)
            fed = torch.full((len(live), width), pad, dtype=torch.long, device=mask.device)
            fed_mask = torch.zeros_like(fed, dtype=mask.dtype)
            for i, row in enumerate(live):
                fed[i, : 1 + len(row.draft)] = torch.tensor([row.pending, *row.draft])
                fed_mask[i, : 1 + len(row.draft)] = 1
            start = mask.sum(-1, keepdim=True)  # next position: kept tokens so far
            mask = torch.cat([mask, fed_mask], dim=1)
            logits, cache = self._forward(fed, mask, start + torch.arange(width, device=mask.device), cache, keep=width)
            for i, row in enumerate(live):
                kept = self._settle(row, logits[i], bitmask)
                mask[i, mask.shape[1] - width + 1 + kept:] = 0  # rejected draft positions
