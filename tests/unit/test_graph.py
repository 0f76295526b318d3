"""The SIA graph, run for real on the tiny task with fakes: every conditional edge, the files and
run-database rows a run leaves, and that nothing of the selection/test splits reaches a prompt."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sia.graph.state import SIAInput
from sia.tasks.classification.edits import LIBRARY, apply_edit
from sia.tasks.csv_task import CsvTask
from tests.fakes import (REFERENCE_AGENT, TEST_ONLY_LABEL, FakeTrainer, fake_config, fake_model_cache,
                         fake_services, make_tiny_task, prompts_sent, run_graph, shutdown)

META_KEEP = json.dumps({"edit": "none"})
BROKEN = "```python\ndef main(:\n    pass\n```"
FIXED = "```python\n" + apply_edit(REFERENCE_AGENT.read_text(), LIBRARY[0]) + "```"  # retrieved-shots-2


def decide(lever: str) -> str:
    return json.dumps({"diagnosis": "it always answers the first label", "lever": lever})


def edit(edit_id: str = "retrieved-shots-2") -> str:
    return json.dumps({"edit": edit_id})


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))


def run(tmp_path, task_dir, feedback_replies, *, max_generations=2, policy="llm", **kw):
    svc = fake_services(tmp_path, "run", [META_KEEP], feedback_replies, **kw)
    trace: list[str] = []
    try:
        out = run_graph(svc, SIAInput(run_id="run", task=str(task_dir), max_generations=max_generations,
                                      policy=policy), trace=trace)
    finally:
        shutdown(svc)
    assert (svc.paths.root / "summary.json").is_file(), "the run did not reach finish"
    assert_no_leak(svc, task_dir, out)
    return svc, out, trace


def assert_no_leak(svc, task_dir, out):
    """No selection/test item id or text, no test-only gold label and no test score in any prompt."""
    prompts = prompts_sent(svc)
    assert prompts, "the scripted models were never asked anything"
    splits = CsvTask.load(task_dir).splits()
    secrets = [TEST_ONLY_LABEL] + [r[k] for s in ("selection", "test") for r in splits[s] for k in ("id", "text")]
    for h in out["history"]:
        if h.test is not None:
            secrets += [repr(h.test), f"{h.test:.3f}"]
    for prompt in prompts:
        leaked = [s for s in secrets if s in prompt]
        assert not leaked, f"{leaked} appear in a prompt"


def sub(name: str, *nodes: str) -> list[str]:
    return [f"{name}:{n}" for n in nodes] + [name]


START = ["meta", "task", "feedback"]
END = ["task", "feedback", "finish"]
FAILED_END = ["record_failure", "feedback", "finish"]  # a lever that produced no candidate


def test_graph_structure_snapshot():
    from sia.graph.graph import graph

    g = graph.get_graph(xray=1)
    assert sorted(g.nodes) == [
        "__end__", "__start__", "feedback", "finetune:__end__", "finetune:build_dataset",
        "finetune:train_adapter", "finish", "meta", "record_failure",
        "scaffold_rewrite:__end__", "scaffold_rewrite:__start__", "scaffold_rewrite:accept_scaffold",
        "scaffold_rewrite:give_up_scaffold", "scaffold_rewrite:propose_scaffold",
        "scaffold_rewrite:validate_scaffold", "task"]
    assert sorted((e.source, e.target, e.conditional, e.data) for e in g.edges) == sorted([
        ("__start__", "meta", False, None),
        ("meta", "task", False, None),
        ("task", "feedback", False, None),
        ("feedback", "scaffold_rewrite:__start__", True, None),
        ("feedback", "finetune:build_dataset", True, None),
        ("feedback", "finish", True, None),
        ("finish", "__end__", False, None),
        ("scaffold_rewrite:__start__", "scaffold_rewrite:propose_scaffold", False, None),
        ("scaffold_rewrite:propose_scaffold", "scaffold_rewrite:validate_scaffold", True, None),
        ("scaffold_rewrite:propose_scaffold", "scaffold_rewrite:give_up_scaffold", True, None),
        ("scaffold_rewrite:validate_scaffold", "scaffold_rewrite:accept_scaffold", True, None),
        ("scaffold_rewrite:validate_scaffold", "scaffold_rewrite:propose_scaffold", True, None),
        ("scaffold_rewrite:accept_scaffold", "scaffold_rewrite:__end__", False, None),
        ("scaffold_rewrite:give_up_scaffold", "scaffold_rewrite:__end__", False, None),
        ("scaffold_rewrite:__end__", "task", True, None),
        ("scaffold_rewrite:__end__", "record_failure", True, None),
        ("finetune:build_dataset", "finetune:train_adapter", True, "continue"),
        ("finetune:build_dataset", "finetune:__end__", True, "stop"),
        ("finetune:train_adapter", "finetune:__end__", False, None),
        ("finetune:__end__", "task", True, None),
        ("finetune:__end__", "record_failure", True, None),
        ("record_failure", "feedback", False, None),
    ])


def test_scaffold_edit_accepted_then_max_generations_finishes(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, [decide("scaffold"), edit()])
    assert trace == START + sub("scaffold_rewrite", "propose_scaffold", "validate_scaffold", "accept_scaffold") + END
    gen1, gen2 = out["history"]
    assert (gen1.lever, gen1.accepted, gen1.selection) == ("meta", True, pytest.approx(1 / 3))
    assert (gen2.lever, gen2.accepted, gen2.selection, gen2.feedback) == ("scaffold", True, 1.0, 1.0)
    assert gen2.test == pytest.approx(6 / 7) and gen1.test == pytest.approx(2 / 7)
    assert out["incumbent"].generation == 2 and out["tried"] == ["retrieved-shots-2"] and out["errors"] == []
    assert "Chosen lever: stop (reached max_generations=2)" in (svc.paths.gen(2) / "feedback.md").read_text()
    # offline, the diagnosis is computed from the feedback items and reaches the lever and edit prompts
    feedback_md = (svc.paths.gen(1) / "feedback.md").read_text()
    assert "Diagnosis (computed from the feedback items" in feedback_md
    assert "collapsed: answers 'theft' for 3 of 3 items" in feedback_md and "| fraud | 'theft' | 1 |" in feedback_md
    lever_prompt, edit_prompt = svc.llm_override["feedback"].chat.prompts
    assert "collapsed: answers 'theft'" in lever_prompt and "collapsed: answers 'theft'" in edit_prompt
    # the edit was chosen by the search on the feedback split, the LLM's pick among its candidates
    search = json.loads((svc.paths.gen(2) / "edit_search.json").read_text())["searches"]
    assert len(search) == 1 and search[0]["pick"] == "retrieved-shots-2" and search[0]["chosen"] == "retrieved-shots-2"
    assert search[0]["beats_incumbent"] is True and search[0]["spent"] <= search[0]["budget"]
    assert "## Edit search (feedback split only)" in (svc.paths.gen(2) / "improvement.md").read_text()
    for gen in (1, 2):
        for name in ("target_agent.py", "improvement.md", "results.json", "diff.patch"):
            assert (svc.paths.gen(gen) / name).is_file(), f"gen_{gen}/{name}"
    diff = (svc.paths.gen(2) / "diff.patch").read_text()
    assert "-    \"retrieved_shots\": 0," in diff and "+    \"retrieved_shots\": 2," in diff
    assert json.loads((svc.paths.gen(2) / "results.json").read_text())["selection"] == 1.0
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select generation, accepted from generations order by generation").fetchall() == [(1, 1), (2, 1)]
        tags = {t for (t,) in db.execute("select tag from item_results")}
        assert db.execute("select count(*) from item_results where split = 'test'").fetchone()[0] == 2 * 7
        called = {i for (i,) in db.execute("select item from model_calls where purpose = 'task'")}
        assert called and None not in called and called <= tags
        assert db.execute("select count(*) from model_calls where purpose = 'smoke' and item is not null").fetchone()[0] == 3
        assert db.execute("select count(*) from model_calls where purpose = 'search' and item is not null").fetchone()[0] > 0


def test_llm_stop_goes_to_finish(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, [decide("stop")], max_generations=4)
    assert trace == START + ["finish"]
    assert [h.generation for h in out["history"]] == [1] and out["next_lever"] == "stop"
    summary = json.loads((svc.paths.root / "summary.json").read_text())
    assert summary["incumbent_generation"] == 1 and summary["final_test"] == pytest.approx(2 / 7)


def test_invalid_feedback_json_is_recorded_and_run_finishes(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, ["I think the scaffold is bad", edit()])
    # offline the model is asked for the lever only (the diagnosis is computed): its schema is LeverChoice
    assert any(e.startswith("gen 1 feedback:") and "LeverChoice" in e for e in out["errors"])
    # no lever from the LLM: policy llm falls back to alternate, i.e. scaffold after the meta generation
    assert trace == START + sub("scaffold_rewrite", "propose_scaffold", "validate_scaffold", "accept_scaffold") + END
    assert "did not parse" in (svc.paths.gen(1) / "feedback.md").read_text()
    assert json.loads((svc.paths.root / "summary.json").read_text())["errors"] == out["errors"]


def test_code_rewrite_retries_after_syntax_error(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, [decide("scaffold"), BROKEN, FIXED], feedback_writes_code=True)
    assert trace == START + sub("scaffold_rewrite", "propose_scaffold", "validate_scaffold", "propose_scaffold",
                                "validate_scaffold", "accept_scaffold") + END
    prompts = svc.llm_override["feedback"].chat.prompts
    assert "SyntaxError" not in prompts[1] and "previous proposal failed validation" in prompts[2]
    assert "SyntaxError" in prompts[2]
    assert out["history"][1].selection == 1.0 and out["history"][1].accepted
    assert "Attempts: 2" in (svc.paths.gen(2) / "improvement.md").read_text()
    assert (svc.paths.gen(2) / "target_agent.py").read_text() == FIXED.removeprefix("```python\n").removesuffix("```")
    # a code-writing model diagnoses in free text and rewrites the code: no computed diagnosis, no edit search
    assert "Diagnosis (the Feedback-Agent's): it always answers the first label" in (svc.paths.gen(1) / "feedback.md").read_text()
    assert not (svc.paths.gen(2) / "edit_search.json").exists()


def test_rewrite_gives_up_after_max_attempts(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, [decide("scaffold"), BROKEN, BROKEN, BROKEN], feedback_writes_code=True)
    assert trace == START + sub("scaffold_rewrite", *["propose_scaffold", "validate_scaffold"] * 3,
                                "propose_scaffold", "give_up_scaffold") + FAILED_END
    gen2 = out["history"][1]
    assert (gen2.generation, gen2.accepted, gen2.selection, gen2.test) == (2, False, None, None)
    assert gen2.note.startswith("rewrite failed after 3 attempts") and "SyntaxError" in gen2.note
    assert out["incumbent"].generation == 1 and out["generation"] == 2
    assert any(e.startswith("gen 2 scaffold_rewrite:") for e in out["errors"])
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select accepted, note from generations where generation = 2").fetchone()[0] == 0


def dataset_texts(svc, gen: int) -> str:
    return (svc.paths.adapter(gen) / "dataset.jsonl").read_text()


def test_weights_adapter_promoted(tmp_path, task_dir, monkeypatch):
    import sia.nodes.task

    verdicts = []
    decide_once = sia.nodes.task.keep_best
    monkeypatch.setattr(sia.nodes.task, "keep_best", lambda *a: verdicts.append(decide_once(*a)) or verdicts[-1])
    trainer = FakeTrainer()
    svc, out, trace = run(tmp_path, task_dir, [decide("weights")], trainer=trainer)
    assert trace == START + sub("finetune", "build_dataset", "train_adapter") + END
    assert len(verdicts) == 2  # keep-best decided once per candidate: generation 1, then the adapter
    gen2 = out["history"][1]
    assert (gen2.lever, gen2.adapter, gen2.accepted, gen2.selection) == ("weights", "adapters/gen_2", True, 1.0)
    assert out["incumbent"].adapter == "adapters/gen_2"
    assert len(trainer.calls) == 1 and trainer.calls[0]["out"] == svc.paths.adapter(2)
    assert (svc.paths.adapter(2) / "adapter" / "adapter_config.json").is_file()
    stats = json.loads((svc.paths.adapter(2) / "dataset_stats.json").read_text())
    rows = [json.loads(line) for line in dataset_texts(svc, 2).splitlines()]
    assert len(rows) == stats["rewarded"] + stats["gold_target"] >= 4  # feedback (3) + rollout (6) calls
    splits = CsvTask.load(task_dir).splits()
    assert not [r["text"] for s in ("selection", "test") for r in splits[s] if r["text"] in dataset_texts(svc, 2)]
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select version, promoted, backend from adapters").fetchall() == [("adapters/gen_2", 1, "fake")]
        assert db.execute("select count(*) from model_calls where purpose = 'rollout'").fetchone()[0] == 6


def test_weights_adapter_not_promoted(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, [decide("weights")], adapter_helps=False)
    assert trace == START + sub("finetune", "build_dataset", "train_adapter") + END
    gen2 = out["history"][1]
    assert (gen2.lever, gen2.accepted, gen2.selection, gen2.test) == ("weights", False, pytest.approx(1 / 3), None)
    assert gen2.note.startswith("LoRA on") and "vs incumbent (needs > +0.000)" in gen2.note
    assert out["errors"] == []  # a rejected adapter is an outcome, not a fault
    assert out["incumbent"].generation == 1 and out["incumbent"].adapter is None
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select promoted, selection from adapters").fetchall() == [(0, pytest.approx(1 / 3))]


def test_too_few_rows_stops_finetune_before_training(tmp_path, task_dir):
    trainer = FakeTrainer()
    config = fake_config(tmp_path, finetune={"min_examples": 1000})
    svc, out, trace = run(tmp_path, task_dir, [decide("weights")], trainer=trainer, config=config)
    assert trace == START + sub("finetune", "build_dataset") + FAILED_END
    assert trainer.calls == [] and "only 9 sft training rows (need 1000)" in out["history"][1].note
    assert not out["history"][1].accepted and any(e.startswith("gen 2 finetune: only") for e in out["errors"])


def test_training_failure_stops_finetune(tmp_path, task_dir):
    svc, out, trace = run(tmp_path, task_dir, [decide("weights")], trainer=FakeTrainer(fail=True))
    assert trace == START + sub("finetune", "build_dataset", "train_adapter") + FAILED_END
    assert out["history"][1].note.startswith("training failed: fake training failure")
    assert out["incumbent"].generation == 1


def test_selection_items_never_reach_training_data_after_a_promoted_adapter(tmp_path, task_dir):
    """Regression: the task node evaluates generation N's selection split, then its feedback and test
    splits, both with purpose 'task'; their item tags must differ, or sft_rows joins a selection
    item's call to a feedback item's result."""
    svc, out, trace = run(tmp_path, task_dir, [decide("weights"), decide("weights")], max_generations=3)
    assert out["history"][1].accepted  # gen 2's adapter promoted: its selection calls carry gen-2 task tags
    data = dataset_texts(svc, 3)
    splits = CsvTask.load(task_dir).splits()
    assert [r["text"] for s in ("selection", "test") for r in splits[s] if r["text"] in data] == []
