"""The gateway's engine with the real embedded model: checking forced text in one pass
(jump-forward) and finishing a constrained row once the grammar fixes its rest give the same
text as decoding every token, with fewer forward passes."""

from __future__ import annotations

import pytest

from sia.gateway.protocol import ChatRequest

pytestmark = pytest.mark.slow

SHORTLIST = ["[生产、销售]假药", "[生产、销售][有毒、有害]食品"]  # lawbench-mini labels sharing a prefix


def label_schema(labels: list[str]) -> dict:
    return {"type": "object", "properties": {"label": {"type": "string", "enum": labels}},
            "required": ["label"], "additionalProperties": False}


@pytest.fixture(scope="module")
def engine():
    from sia.gateway.engine import Engine

    return Engine.load("smollm2", precision="fp32")


def requests() -> list[ChatRequest]:
    case = "案情：被告人张某在东莞市经营一无名成人用品店，通过非正规渠道购进“伟哥二代”等药品放在店里销售。"
    return [
        ChatRequest(messages=[{"role": "system", "content": "Allowed charges: " + "; ".join(SHORTLIST)},
                              {"role": "user", "content": case}], max_tokens=48, json_schema=label_schema(SHORTLIST)),
        ChatRequest(messages=[{"role": "user", "content": "Pick a fruit."}], max_tokens=48,
                    json_schema=label_schema(["apple", "apricot", "banana"])),
        ChatRequest(messages=[{"role": "user", "content": "Name a colour."}], max_tokens=30,
                    json_schema={"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}),
        ChatRequest(messages=[{"role": "user", "content": "Say hi."}], max_tokens=8),  # unconstrained
        ChatRequest(messages=[{"role": "user", "content": case}], max_tokens=4,  # runs out before the JSON closes
                    json_schema=label_schema(SHORTLIST)),
    ]


def test_faster_decodings_change_no_output(engine):
    forwards = []
    handle = engine.model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        outputs, passes = {}, {}
        for decoding in ("every-token", "stop-at-rest", "jump-forward"):
            engine.decoding = decoding
            forwards.clear()
            outputs[decoding] = engine.generate(requests())
            passes[decoding] = len(forwards)
    finally:
        engine.decoding = "jump-forward"
        handle.remove()
    full = outputs["every-token"]
    for decoding in ("stop-at-rest", "jump-forward"):
        faster = outputs[decoding]
        assert [(c.text, c.finish_reason) for c in faster] == [(c.text, c.finish_reason) for c in full], decoding
        # Usage counts the appended rest as tokenized on its own, which can split it differently.
        assert all(abs(a.completion_tokens - b.completion_tokens) <= 2 for a, b in zip(faster, full))
    assert full[0].text in ('{"label": "%s"}' % label for label in SHORTLIST)
    assert full[4].finish_reason == "length"
    assert passes["jump-forward"] < passes["stop-at-rest"] < passes["every-token"]
