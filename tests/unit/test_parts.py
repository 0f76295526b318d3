"""Fast unit tests of the loop's parts: scaffold edits, lever policies, SFT records, the task
contract and the gateway (with a fake backend)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import shutil

import pytest

from sia.checkpoints.rundb import RunDB
from sia.config import RoleConfig, RunConfig
from sia.finetune.records import gold_completion, sft_rows
from sia.gateway.server import CallScope, Gateway, MemoryRecorder
from sia.graph.state import GenerationResult, SIAState
from sia.nodes import prompts
from sia.nodes.edits import choose_edit
from sia.nodes.policies import POLICIES, choose_lever
from sia.records import ItemResult, ModelCall
from sia.tasks.base import TaskError
from sia.tasks.classification import load_reference_agent
from sia.tasks.classification.edits import LIBRARY, apply_edit, available_edits, scaffold_settings
from sia.tasks.csv_task import CsvTask
from tests.fakes import REFERENCE_AGENT, fake_backends, http, make_tiny_task, scripted_llm

REFERENCE = REFERENCE_AGENT.read_text()


# --- tasks/classification/edits.py ------------------------------------------------------------

def test_available_edits_skip_tried_and_no_op_edits():
    ids = [e.id for e in available_edits(REFERENCE, [])]
    assert ids[:4] == ["retrieved-shots-2", "centroid-labels-2", "classifier-labels-3", "classifier-decides-half"]
    assert "constrain-output" not in ids  # the reference already constrains its output
    assert "retrieved-shots-2" not in [e.id for e in available_edits(REFERENCE, ["retrieved-shots-2"])]


def test_edits_a_setting_overrides_are_not_offered():
    """Once a centroid shortlist is on, the agent ignores neighbour_labels and lists the shortlist
    anyway: those edits would change no prompt (the demo's generation 4 once picked one)."""
    centroid = apply_edit(REFERENCE, next(e for e in LIBRARY if e.id == "centroid-labels-2"))
    before = {e.id for e in available_edits(REFERENCE, [])}
    after = {e.id for e in available_edits(centroid, [])}
    overridden = {"neighbour-labels-2", "neighbour-labels-4", "list-labels"}
    assert overridden <= before and not overridden & after
    assert before - after == overridden | {"centroid-labels-2"}
    assert {e.id for e in LIBRARY if "centroid_labels" in e.overridden_by} == overridden


@pytest.mark.parametrize("edit", available_edits(REFERENCE, []), ids=lambda e: e.id)
def test_apply_edit_changes_exactly_one_line(edit):
    new = apply_edit(REFERENCE, edit)
    changed = [d for d in difflib.ndiff(REFERENCE.splitlines(), new.splitlines()) if d[:1] in "+-"]
    assert len(changed) == 2 and changed[0].startswith("-") and changed[1].startswith("+"), changed
    before, after = scaffold_settings(REFERENCE), scaffold_settings(new)
    assert after == {**before, edit.key: edit.value}


@pytest.mark.parametrize("code", [
    "def main():\n    pass\n",
    "SCAFFOLD = dict(votes=1)\n",
    "SCAFFOLD = {'votes': 1\n",  # syntax error
])
def test_scaffold_without_a_literal_gives_no_edits(code):
    assert available_edits(code, []) == []
    with pytest.raises((ValueError, SyntaxError)):
        apply_edit(code, LIBRARY[0])


def test_centroid_shortlist_is_listed_best_first_in_the_prompt():
    agent = load_reference_agent()
    train = [{"text": t, "label": c} for t, c in [("盗窃他人手机一部", "盗窃"), ("盗窃电动车", "盗窃"),
                                                  ("故意伤害他人致轻伤", "故意伤害"), ("虚构事实诈骗钱财", "诈骗")]]
    for row in train:
        row["grams"] = agent.bigrams(row["text"])
    classes = ["诈骗", "故意伤害", "盗窃"]
    agent.SCAFFOLD["centroid_labels"] = 2
    agent.CENTROIDS = agent.fit_centroids(train)
    shortlist, best_first = agent.allowed_labels("窃取他人手机", train, classes)
    assert best_first
    assert len(shortlist) == 2 and shortlist[0] == "盗窃"
    system = agent.build_messages("窃取他人手机", train, shortlist)[0]["content"]
    assert "Allowed charges: " + "; ".join(shortlist) + "\n" in system
    agent.SCAFFOLD["centroid_labels"] = 0  # without a shortlist (and list_labels off) no label is listed
    assert "Allowed charges" not in agent.build_messages("窃取他人手机", train, classes)[0]["content"]


def test_a_centroid_shortlist_without_centroids_is_every_label_unranked():
    agent = load_reference_agent()
    agent.SCAFFOLD["centroid_labels"] = 2
    agent.CENTROIDS = agent.fit_centroids([{"text": "盗窃他人手机", "label": "盗窃"}])
    # no class of this task has a centroid: the order check must not treat the fallback as ranked
    assert agent.allowed_labels("窃取他人手机", [], ["诈骗", "抢劫"]) == (["诈骗", "抢劫"], False)
    assert agent.allowed_labels("窃取他人手机", [], ["盗窃", "诈骗"]) == (["盗窃"], True)  # the one with a centroid


def test_edits_keep_value_types():
    assert available_edits("SCAFFOLD = {'retrieved_shots': '0', 'votes': 1}\n", []) == [
        e for e in LIBRARY if e.id == "votes-3"]


def test_prompts_reach_the_model_without_format_escapes():
    llm = scripted_llm([json.dumps({"edit": "none"})])
    assert choose_edit(llm, "t", REFERENCE, [], "d", allow_none=True) is None
    assert '{"edit": "<id>"}' in llm.chat.prompts[0] and "{{" not in llm.chat.prompts[0]
    assert not [p for p in (prompts.FEEDBACK_SYSTEM, prompts.REWRITE_SYSTEM, prompts.META_SYSTEM) if "{{" in p]


# --- nodes/policies.py ------------------------------------------------------------------------

def result(gen: int, lever: str, accepted: bool) -> GenerationResult:
    return GenerationResult(generation=gen, lever=lever, adapter=None, feedback=0.5, selection=0.5, test=0.5,
                            accepted=accepted, wall_s=1.0)


def state(policy="llm", history=(), **kw) -> SIAState:
    return SIAState(run_id="r", task="t", max_generations=5, policy=policy, history=list(history),
                    generation=len(history), **kw)


META, SCAF_OK, SCAF_BAD, WEIGHTS = (result(1, "meta", True), result(2, "scaffold", True),
                                    result(2, "scaffold", False), result(2, "weights", True))


@pytest.mark.parametrize("policy, history, llm_lever, expected", [
    ("llm", [META], "weights", "weights"),
    ("llm", [META], "stop", "stop"),  # the Feedback-Agent may end the run
    ("llm", [META], None, "scaffold"),  # no (parsable) choice: alternate
    ("llm", [META, SCAF_OK], None, "weights"),
    ("scaffold-only", [META, SCAF_OK], "weights", "scaffold"),
    ("weights-only", [META, WEIGHTS], "scaffold", "weights"),
    ("alternate", [META], "weights", "scaffold"),
    ("alternate", [META, SCAF_OK], "scaffold", "weights"),
    ("alternate", [META, WEIGHTS], None, "scaffold"),
    ("plateau", [META, SCAF_OK], "weights", "scaffold"),
    ("plateau", [META, SCAF_BAD], None, "weights"),
    ("plateau", [META, WEIGHTS], None, "scaffold"),
])
def test_policies(policy, history, llm_lever, expected):
    lever, why = choose_lever(state(policy, history), llm_lever, weights_available=True)
    assert (lever, why) == (expected, f"policy {policy}")


def test_every_policy_is_tested_and_stops_at_max_generations_or_target():
    assert set(POLICIES) == {"llm", "scaffold-only", "weights-only", "alternate", "plateau"}
    for policy in POLICIES:
        done = state(policy, [META]).model_copy(update={"generation": 5})
        assert choose_lever(done, "weights", True) == ("stop", "reached max_generations=5")
        reached = state(policy, [META], target_score=0.5, incumbent_selection=0.5)
        assert choose_lever(reached, "weights", True)[0] == "stop"


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown policy 'bogus'"):
        choose_lever(state().model_copy(update={"policy": "bogus"}), None, True)


def test_remote_target_never_gets_the_weights_lever():
    assert not RunConfig(target=RoleConfig(base_url="http://127.0.0.1:9/v1")).weights_available
    assert RunConfig().weights_available
    assert choose_lever(state("llm", [META]), "weights", False) == ("scaffold", "weights unavailable (remote target model); using scaffold")
    assert choose_lever(state("alternate", [META, SCAF_OK]), None, False)[0] == "scaffold"
    assert choose_lever(state("weights-only", [META]), None, False)[0] == "stop"


# --- finetune/records.py ----------------------------------------------------------------------

ENUM_FMT = {"type": "json_schema", "json_schema": {"name": "charge", "schema": {
    "type": "object", "properties": {"label": {"type": "string", "enum": ["theft", "盗窃罪"]}}, "required": ["label"]}}}


def test_gold_completion_formats():
    assert gold_completion(ENUM_FMT, "theft") == '{"label": "theft"}'
    assert gold_completion(ENUM_FMT, "盗窃罪") == '{"label": "盗窃罪"}'
    assert gold_completion(ENUM_FMT, "fraud") is None  # gold outside the enum
    assert gold_completion(None, "theft") == "theft"  # plain text
    assert gold_completion({"type": "json_object"}, "theft") is None  # unknown format
    two = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {
        "label": {"type": "string"}, "why": {"type": "string"}}}}}
    assert gold_completion(two, "theft") is None


def call(run_id, item, content, completion, purpose="task", fmt=ENUM_FMT) -> ModelCall:
    return ModelCall(run_id=run_id, generation=1, adapter_version=None, item=item, purpose=purpose,
                     messages=[{"role": "user", "content": content}], response_format=fmt, completion=completion,
                     prompt_tokens=3, completion_tokens=3, latency_s=0.1)


def item(run_id, tag, split, gold, score) -> ItemResult:
    return ItemResult(run_id=run_id, generation=1, scaffold_sha="s", adapter="base", split=split, item_id=f"id-{tag}",
                      tag=tag, prediction="theft", gold=gold, score=score)


def test_sft_rows_use_only_feedback_and_rollout_items(tmp_path):
    db = RunDB(tmp_path / "run.db")
    db.save_items([item("r", "a", "feedback", "theft", 1.0), item("r", "b", "feedback", "theft", 0.0),
                   item("r", "c", "selection", "theft", 1.0), item("r", "d", "test", "theft", 1.0),
                   item("r", "e", "rollout", "theft", 1.0), item("r", "f", "rollout", "theft", 0.0),
                   item("r", "g", "feedback", "theft", 1.0), item("other", "a", "feedback", "theft", 1.0)])
    for c in [call("r", "a", "FB-REWARDED", '{"label": "theft"}'),
              call("r", "a", "FB-REWARDED", '{"label": "theft"}'),  # duplicate: kept once
              call("r", "b", "FB-WRONG", '{"label": "盗窃罪"}'),
              call("r", "c", "SELECTION", '{"label": "theft"}'), call("r", "d", "TEST", '{"label": "theft"}'),
              call("r", "e", "ROLLOUT-REWARDED", "theft", purpose="rollout", fmt=None),
              call("r", "f", "ROLLOUT-UNKNOWN-FORMAT", "{}", purpose="rollout", fmt={"type": "json_object"}),
              call("r", "g", "SMOKE", '{"label": "theft"}', purpose="smoke"),
              call("r", None, "NO-ITEM", '{"label": "theft"}'),
              call("other", "a", "OTHER-RUN", '{"label": "theft"}')]:
        db.record_call(c)
    rows, stats = sft_rows(db, "r")
    assert sorted((r["messages"][0]["content"], r["completion"]) for r in rows) == [
        ("FB-REWARDED", '{"label": "theft"}'), ("FB-WRONG", '{"label": "theft"}'), ("ROLLOUT-REWARDED", "theft")]
    assert stats == {"rewarded": 2, "gold_target": 1, "skipped": 1}


def test_sft_rows_do_not_depend_on_the_order_calls_were_recorded(tmp_path):
    """Concurrent calls land in the database in thread-timing order; training must not."""
    orders = []
    for name, tags in (("one", "abcdef"), ("two", "fedcba"), ("three", "cafebd")):
        db = RunDB(tmp_path / f"{name}.db")
        db.save_items([item("r", tag, "feedback", "theft", float(tag in "ace")) for tag in "abcdef"])
        for tag in tags:
            db.record_call(call("r", tag, f"CASE-{tag}", '{"label": "盗窃罪"}' if tag not in "ace" else '{"label": "theft"}'))
        orders.append([r["messages"][0]["content"] for r in sft_rows(db, "r")[0]])
    assert orders[0] == orders[1] == orders[2]
    assert sorted(orders[0]) == [f"CASE-{tag}" for tag in "abcdef"]


def test_sft_rows_can_keep_only_the_incumbent_scaffolds_calls(tmp_path):
    db = RunDB(tmp_path / "run.db")
    old = dataclasses.replace(item("r", "a", "feedback", "theft", 1.0), scaffold_sha="old")
    new = dataclasses.replace(item("r", "b", "feedback", "theft", 0.0), scaffold_sha="new", generation=2)
    db.save_items([old, new])
    db.record_call(call("r", "a", "OLD-SCAFFOLD", '{"label": "theft"}'))
    db.record_call(dataclasses.replace(call("r", "b", "NEW-SCAFFOLD", '{"label": "fraud"}'), generation=2))
    every = [r["messages"][0]["content"] for r in sft_rows(db, "r")[0]]
    only_new, stats = sft_rows(db, "r", scaffold_sha="new")
    assert sorted(every) == ["NEW-SCAFFOLD", "OLD-SCAFFOLD"]
    assert [(r["messages"][0]["content"], r["completion"]) for r in only_new] == [("NEW-SCAFFOLD", '{"label": "theft"}')]
    assert stats == {"rewarded": 0, "gold_target": 1, "skipped": 0}


# --- tasks/base.py ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "task.md").unlink(), r"task\.md: missing; write a task description"),
    (lambda d: (d / "data/private/test.csv").unlink(), r"data/private/test\.csv: missing; add the private test labels"),
    (lambda d: (d / "sia_task.json").write_text('{"name": "x", "feedback_per_label": 0}'), r"sia_task\.json: invalid task metadata"),
    (lambda d: (d / "sia_task.json").write_text("{not json"), r"sia_task\.json: invalid task metadata"),
    (lambda d: (d / "sia_task.json").write_text('{"name": "x", "direction": "min"}'), r"the loop maximises its metric"),
    (lambda d: shutil.rmtree(d), r"task directory not found"),
])
def test_task_load_errors_name_the_file(tmp_path, tiny, breakage, message):
    broken = shutil.copytree(tiny, tmp_path / "broken")
    breakage(broken)
    with pytest.raises(TaskError, match=message):
        CsvTask.load(broken)


def test_splits_are_deterministic_and_disjoint(tiny):
    first, again = CsvTask.load(tiny).splits(), CsvTask.load(tiny).splits()
    assert first == again
    ids = {name: [r["id"] for r in rows] for name, rows in first.items()}
    assert {k: len(v) for k, v in ids.items()} == {"feedback": 3, "selection": 6, "pool": 15, "test": 7}
    train_ids = ids["feedback"] + ids["selection"] + ids["pool"]
    assert len(set(train_ids)) == len(train_ids) == 24 and not set(train_ids) & set(ids["test"])
    assert sorted(r["label"] for r in first["feedback"]) == ["assault", "fraud", "theft"]
    assert {k: len(v) for k, v in CsvTask.load(tiny).splits(limit=2).items()} == {"feedback": 2, "selection": 2, "pool": 15, "test": 2}


def read_csv(path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_write_view_hides_predicted_items_and_split_names(tmp_path, tiny):
    task = CsvTask.load(tiny)
    sp = task.splits()
    predict = {s: sp[s] for s in ("feedback", "selection", "test")}
    tags = task.write_view(tmp_path / "view", predict, sp["pool"] + sp["feedback"], salt="r:1:task", prefix="g1t-")
    assert sorted(p.name for p in (tmp_path / "view").iterdir()) == ["classes.json", "sample_submission.csv", "task.md",
                                                                  "test.csv", "train.csv"]
    shown = read_csv(tmp_path / "view" / "test.csv")
    assert list(shown[0]) == ["id", "text"] and [r["id"] for r in shown] == list(tags)
    assert all(t.startswith("g1t-q") for t in tags) and len(tags) == 16
    assert [tags[r["id"]][0] for r in shown] != [s for s in predict for _ in predict[s]]  # order reveals no split
    predicted_ids = {r["id"] for rows in predict.values() for r in rows}
    train_ids = {r["id"] for r in read_csv(tmp_path / "view" / "train.csv")}
    assert train_ids == {r["id"] for r in sp["pool"]} and not train_ids & predicted_ids
    for name in ("test.csv", "train.csv"):
        text = (tmp_path / "view" / name).read_text()
        assert "feedback" not in text and "selection" not in text and "perjury" not in text
    assert task.write_view(tmp_path / "again", predict, sp["pool"], salt="r:1:task", prefix="g1t-") == tags


# --- gateway/server.py ------------------------------------------------------------------------

@pytest.fixture
def gateway():
    gw = Gateway(fake_backends(), MemoryRecorder(), batch_window_ms=1, model_name="fake-target").start()
    yield gw
    gw.stop()


CHAT = {"messages": [{"role": "system", "content": "classify"}, {"role": "user", "content": "he punched a clerk"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"label": {"type": "string", "enum": ["theft", "assault"]}}}}}}


def test_gateway_serves_models_and_records_item_tags(gateway):
    token = gateway.issue_token(CallScope("r", 3, None, "task"))
    assert http(gateway, "/v1/models", token) == (200, {"object": "list", "data": [
        {"id": "fake-target", "object": "model", "owned_by": "sia"}]})
    code, reply = http(gateway, "/v1/chat/completions", token, CHAT, {"X-SIA-Item": "g3t-q00007"})
    assert code == 200 and reply["choices"][0]["message"]["content"] == '{"label": "theft"}'  # base: first enum
    code, _ = http(gateway, "/v1/chat/completions", token, {**CHAT, "metadata": {"item": "g3t-q00008"}})
    assert code == 200
    calls = gateway.recorder.calls
    assert [(c.run_id, c.generation, c.purpose, c.adapter_version, c.item) for c in calls] == [
        ("r", 3, "task", None, "g3t-q00007"), ("r", 3, "task", None, "g3t-q00008")]
    assert calls[0].messages == CHAT["messages"] and calls[0].response_format == CHAT["response_format"]
    adapter_token = gateway.issue_token(CallScope("r", 4, "adapters/gen_4", "task"))
    code, reply = http(gateway, "/v1/chat/completions", adapter_token, CHAT, {"X-SIA-Item": "x"})
    assert reply["choices"][0]["message"]["content"] == '{"label": "assault"}'  # the adapter "learned" keywords
    assert gateway.recorder.calls[-1].adapter_version == "adapters/gen_4" and gateway.recorder.rejected == []


def test_gateway_rejects_forged_and_revoked_tokens(gateway):
    token = gateway.issue_token(CallScope("r", 1))
    gateway.revoke_token(token)
    for bad in ("sia-forged", token):
        code, reply = http(gateway, "/v1/chat/completions", bad, CHAT)
        assert code == 401 and reply["error"]["message"] == "invalid API key"
    assert http(gateway, "/v1/models", "")[0] == 401
    assert gateway.recorder.rejected == [("unknown token", "/v1/chat/completions")] * 2 + [("unknown token", "/v1/models")]
    assert gateway.recorder.calls == []


@pytest.mark.parametrize("body, raw, message", [
    ({"messages": []}, None, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "user"}]}, None, "each message needs a 'role' and a string 'content'"),
    ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}}, None, "must be an object"),
    (None, b"{not json", "Expecting property name"),
])
def test_gateway_invalid_body_is_400(gateway, body, raw, message):
    token = gateway.issue_token(CallScope("r", 1))
    code, reply = http(gateway, "/v1/chat/completions", token, body, raw=raw)
    assert code == 400 and message in reply["error"]["message"]
    assert gateway.recorder.calls == []


def test_any_slice_of_the_pool_mixes_labels(tiny):
    """The rollouts are the pool's first items; drawn from one label, they would hide that label's
    every training example from the agent (regression: rollouts once scored 0/48 on lawbench-mini)."""
    pool = CsvTask.load(tiny).splits()["pool"]
    assert len({r["label"] for r in pool[:5]}) >= 2
