"""GreedyDecoder on a scripted model over a tiny vocabulary: drafts of forced text are kept only
where greedy decoding agrees, rejected draft positions leave no trace in what the model sees,
and rows stop at their forced rest, at EOS or at max_tokens."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

xgr = pytest.importorskip("xgrammar")

from sia.gateway.greedy import GreedyDecoder  # noqa: E402

EOS, PAD = 0, 1
# Single characters plus merged tokens, so forced text has a canonical (merged) tokenization.
VOCAB = ["<eos>", "<pad>", *'{}": abcdelmnopstx', '{"', "label", '": "', "ab", "bc", '"}']
PROMPT = [VOCAB.index("x")] * 3  # row r's prompt starts with the token of letter r ("a", "b", ...)


class CharTokenizer:
    """Longest-match tokenization over VOCAB (the canonical tokens of a text)."""

    pad_token_id, eos_token_id = PAD, EOS

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        while text:
            token = max((t for t in VOCAB[2:] if text.startswith(t)), key=len)
            ids.append(VOCAB.index(token))
            text = text[len(token):]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(VOCAB[i] for i in ids if i > PAD)


class FedTokens:
    """The scripted model's cache: every fed token, one row per request still in the batch."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.tokens = self.tokens[indices]


class ScriptedModel:
    """Writes `targets[row]` after the prompt, preferring single characters (or merged tokens).

    Its "cache" is every fed token with the attention mask, so each logit depends only on the
    tokens the mask keeps: a rejected draft token that stayed visible would derail the text.
    """

    def __init__(self, targets: list[str], prefer_merged: bool):
        self.targets, self.prefer_merged = targets, prefer_merged
        self.config = SimpleNamespace(vocab_size=len(VOCAB))
        self.passes, self.batch_sizes, self.widths = 0, [], []

    def __call__(self, input_ids, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep):
        self.passes += 1
        self.batch_sizes.append(input_ids.shape[0])
        self.widths.append(input_ids.shape[1])
        seen = input_ids if past_key_values is None else torch.cat([past_key_values.tokens, input_ids], dim=1)
        logits = torch.full((seen.shape[0], logits_to_keep, len(VOCAB)), -5.0)
        for row in range(seen.shape[0]):
            for k in range(logits_to_keep):
                end = seen.shape[1] - logits_to_keep + k + 1
                kept = [int(t) for t, m in zip(seen[row, :end], attention_mask[row, :end]) if m][len(PROMPT):]
                written = "".join(VOCAB[t] for t in kept)
                target = self.target_of(seen[row, :len(PROMPT)])
                if not target.startswith(written):
                    continue  # off script: no preference
                rest = target[len(written):]
                if not rest:
                    logits[row, k, EOS] = 10.0
                    continue
                for t, text in enumerate(VOCAB[2:], start=2):
                    if rest.startswith(text):
                        logits[row, k, t] = 5.0 + (len(text) if self.prefer_merged else -len(text))
        return SimpleNamespace(logits=logits, past_key_values=FedTokens(seen))

    def target_of(self, prompt: torch.Tensor) -> str:
        return self.targets[int(prompt[0]) - VOCAB.index("a")]


def label_grammar(labels: list[str]):
    info = xgr.TokenizerInfo(VOCAB, vocab_size=len(VOCAB), stop_token_ids=[EOS])
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": labels}},
              "required": ["label"], "additionalProperties": False}
    return xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema), any_whitespace=False)


def decode(model, grammars, max_tokens):
    tokenizer = CharTokenizer()
    decoder = GreedyDecoder(model, tokenizer, EOS)
    ids = torch.tensor([[VOCAB.index("a") + r, *PROMPT[1:]] for r in range(len(grammars))])
    rows = decoder.decode(ids, torch.ones_like(ids), grammars, max_tokens)
    return [(tokenizer.decode(r.generated) + (r.tail or ""), r.reason) for r in rows], rows


@pytest.mark.parametrize("prefer_merged", [False, True])
def test_forced_text_is_checked_and_rejected_drafts_leave_no_trace(prefer_merged):
    grammar = label_grammar(["abc", "abd"])
    targets = ['{"label": "abd"}', '{"label": "abc"}']
    model = ScriptedModel(targets, prefer_merged)
    texts, rows = decode(model, [grammar, grammar], [40, 40])
    assert texts == [(t, "stop") for t in targets]
    # The kept tokens are the model's own picks: single characters, or merged tokens.
    picked = [VOCAB[t] for t in rows[0].generated]
    assert all(len(p) == 1 for p in picked) if not prefer_merged else '{"' in picked
    assert rows[0].tail == rows[1].tail == '"}'  # fixed once "abd" or "abc" is chosen
    # Token by token takes one pass per kept token (the first comes from the prompt's pass);
    # drafts the model agrees with are kept several tokens a pass.
    token_by_token = max(len(r.generated) for r in rows)
    assert model.passes <= token_by_token if not prefer_merged else model.passes <= 3 < token_by_token


def test_unconstrained_rows_stop_at_eos_and_rows_run_out_at_max_tokens():
    grammar = label_grammar(["abc", "abd"])
    model = ScriptedModel(['{"label": "abd"}', "meal", '{"label": "abc"}'], prefer_merged=False)
    texts, rows = decode(model, [grammar, None, grammar], [40, 10, 3])
    assert texts[0] == ('{"label": "abd"}', "stop")
    assert texts[1] == ("meal", "stop")
    assert texts[2] == ('{"l', "length") and len(rows[2].generated) == 3
    # Finished rows leave the batch; the others keep their own history.
    assert model.batch_sizes[0] == 3 and model.batch_sizes[-1] == 1
    assert model.batch_sizes == sorted(model.batch_sizes, reverse=True)
    # A row with no forced text ahead (the plain one) needs its own pass, so nobody drafts then;
    # the last constrained row alone does.
    decoding = list(zip(model.batch_sizes, model.widths))[1:]
    assert all(width == 1 for size, width in decoding if size > 1)
    assert any(width > 1 for size, width in decoding if size == 1)


def test_a_row_with_no_room_is_done_at_once():
    grammar = label_grammar(["abc"])
    texts, rows = decode(ScriptedModel(['{"label": "abc"}'], True), [grammar], [0])
    assert texts == [("", "length")]
