"""The gateway against a hostile caller (issue 15, class 7 and the grammar cache of class 12):
a call may name only its own evaluation's items, and nothing a caller sends becomes a training
row it should not; over real HTTP with a fake backend (tests/gateway_client.py).
"""

from __future__ import annotations

import json

import pytest

from sia.checkpoints.rundb import RunDB
from sia.finetune.dataset import load_sft_rows
from sia.finetune.records import sft_rows
from sia.records import ItemResult
from tests.gateway_client import CHAT, issue, make_gateway, post


# --- class 7: item tags are authenticated; a caller cannot write training rows --------------------------

def test_a_call_may_name_only_items_of_its_evaluation(gateways):
    gw = make_gateway()
    gateways.append(gw)
    token = issue(gw, tags={"g1t-a1", "g1t-a2"})
    assert post(gw, token, CHAT, item="g1t-a1")[0] == 200
    assert post(gw, token, {**CHAT, "metadata": {"item": "g1t-a2"}})[0] == 200
    code, reply = post(gw, token, CHAT, item="g1s-selection-item")
    assert code == 403 and "not an item of this evaluation" in reply["error"]["message"]
    assert post(gw, token, {**CHAT, "metadata": {"item": "g0t-old-item"}})[0] == 403
    assert [c.item for c in gw.recorder.calls] == ["g1t-a1", "g1t-a2"]
    assert len(gw.recorder.rejected) == 2 and {p for _, p in gw.recorder.rejected} == {"/v1/chat/completions"}


def test_calls_per_item_tag_are_capped(gateways):
    gw = make_gateway(calls_per_tag=2)
    gateways.append(gw)
    token = issue(gw, tags={"g1t-a1", "g1t-a2"})
    assert [post(gw, token, CHAT, item="g1t-a1")[0] for _ in range(3)] == [200, 200, 429]
    assert post(gw, token, CHAT, item="g1t-a2")[0] == 200


def test_an_unknown_role_is_refused(gateways):
    gw = make_gateway()
    gateways.append(gw)
    body = {**CHAT, "messages": [{"role": "pwn", "content": "x"}, *CHAT["messages"]]}
    code, reply = post(gw, issue(gw, tags={"g1t-a1"}), body, item="g1t-a1")
    assert code == 400 and "role" in reply["error"]["message"]
    assert gw.recorder.calls == []


def test_a_forced_completion_never_becomes_a_training_row(gateways, tmp_path):
    """A schema that admits one value makes the completion the caller's, not the model's."""
    db = RunDB(tmp_path / "run.db")
    gw = make_gateway(recorder=db)
    gateways.append(gw)
    tags = {"g1t-one", "g1t-const", "g1t-free"}
    token = issue(gw, tags=tags)

    def with_property(prop: dict) -> dict:
        schema = {"type": "object", "properties": {"label": prop}, "required": ["label"]}
        return {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}

    assert post(gw, token, with_property({"type": "string", "enum": ["theft"]}), item="g1t-one")[0] == 200
    assert post(gw, token, with_property({"const": "theft"}), item="g1t-const")[0] == 200
    assert post(gw, token, CHAT, item="g1t-free")[0] == 200
    db.save_items([ItemResult("r", 1, "sha", "base", "feedback", tag, tag, "theft", "theft", 1.0) for tag in tags])
    rows, _ = sft_rows(db, "r")
    assert len(rows) == 1  # only the model's own answer


def test_a_bad_training_row_is_dropped_not_fatal(tmp_path, caplog):
    good = {"messages": [{"role": "user", "content": "he punched a clerk"}], "completion": '{"label": "assault"}'}
    pwn = {"messages": [{"role": "pwn", "content": "x"}], "completion": "y"}
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([json.dumps(good)] * 2 + [json.dumps(pwn), "{not json"] + [json.dumps(good)] * 2) + "\n")
    rows = load_sft_rows(path, min_examples=4)
    assert len(rows) == 4
    assert "line 3" in caplog.text and "line 4" in caplog.text and "dropped 2" in caplog.text


# --- class 12 (part): the engine's grammar cache is bounded -----------------------------------------------

def test_the_engine_keeps_a_bounded_number_of_grammars():
    engine_module = pytest.importorskip("sia.gateway.engine")
    compiled = []

    class Compiler:
        def compile_json_schema(self, key, any_whitespace=False):
            compiled.append(key)
            return object()

    engine = engine_module.Engine(model=None, tokenizer=None, name="fake")
    engine._compiler = Compiler()
    schemas = [{"type": "string", "enum": [f"label-{i}", "other"]} for i in range(300)]
    for schema in schemas:
        engine.grammar(schema)
    assert len(engine._grammars) <= 128
    engine.grammar(schemas[-1])  # a recent one is still cached
    assert len(compiled) == 300
