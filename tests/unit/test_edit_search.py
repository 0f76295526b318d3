"""The offline edit search (nodes/edit_search.py): its plan stays within the budget, and on the
tiny task with fake backends it finds the edit that really scores best on the feedback split,
running feedback items only, and records every round.

The library is replaced by a fixed one (five edits that cannot help the KeywordBackend, which
answers by keyword only when few-shot examples are sent, then `retrieved-shots-2`, which can),
so the tests hold whatever the real library holds, and the helpful edit comes last in library
order, where neither the LLM's pick nor the order can carry it."""

from __future__ import annotations

import json
import random

import pytest

import sia.tasks.classification.edits as edits_module
from sia.graph.state import Candidate
from sia.nodes import edit_search
from sia.nodes.common import sha
from sia.nodes.edit_search import cost, interleaved, plan, schedule, search_edit
from sia.nodes.evaluation import evaluate
from sia.tasks.classification.edits import ScaffoldEdit
from sia.tasks.csv_task import CsvTask
from tests.fakes import REFERENCE_AGENT, fake_config, fake_services, make_tiny_task, shutdown

LIBRARY = [
    ScaffoldEdit(id="votes-3", key="votes", value=3, description="majority of 3 answers"),
    ScaffoldEdit(id="longer-text", key="text_chars", value=150, description="more text"),
    ScaffoldEdit(id="more-retries", key="retries", value=4, description="more retries"),
    ScaffoldEdit(id="shorter-text", key="text_chars", value=60, description="less text"),
    ScaffoldEdit(id="list-labels", key="list_labels", value=True, description="list the labels"),
    ScaffoldEdit(id="retrieved-shots-2", key="retrieved_shots", value=2, description="two retrieved examples"),
]
BY_ID = {e.id: e for e in LIBRARY}


# --- the plan --------------------------------------------------------------------------------

def test_schedule_halves_candidates_doubles_items_and_stops_once_every_item_ran():
    assert schedule(6, 4, 24) == [(6, 4), (3, 8), (2, 16)]
    assert cost(schedule(6, 4, 24)) == 6 * 4 + 3 * 4 + 2 * 8  # survivors run on the new items only
    assert schedule(6, 16, 24) == [(6, 16), (3, 24)]  # every item ran: the best of the 3 wins
    assert schedule(1, 5, 24) == [(1, 5)]


def test_plan_prefers_width_then_items_within_the_budget():
    assert plan(6, 24, 120) == [(6, 16), (3, 24)]  # exactly 120
    assert plan(6, 380, 120) == [(6, 9), (3, 18), (2, 36)]  # 13 * 9 = 117
    assert plan(6, 10, 5) == [(3, 1), (2, 2)]  # too little for 6 or 4 candidates on one item
    assert plan(6, 24, 0) == [] and plan(6, 0, 120) == []
    rng = random.Random(0)
    for _ in range(300):
        width, n, budget = rng.randint(1, 12), rng.randint(1, 60), rng.randint(0, 300)
        rounds = plan(width, n, budget)
        assert cost(rounds) <= budget and all(m <= n for _, m in rounds)
        assert bool(rounds) == (budget >= 1)


def test_interleaved_takes_one_row_per_label_in_turn():
    rows = [{"id": i, "label": lab} for i, lab in enumerate("aabcbb")]
    assert [r["id"] for r in interleaved(rows)] == [0, 2, 3, 1, 4, 5]


# --- the search on the tiny task ---------------------------------------------------------------

@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = make_tiny_task(tmp_path_factory.mktemp("tiny4"), n_labels=4, per_label=8)
    spec = json.loads((root / "sia_task.json").read_text())
    (root / "sia_task.json").write_text(json.dumps({**spec, "feedback_per_label": 3}))  # 12 feedback items
    return root


@pytest.fixture
def searched(tmp_path, task_dir, monkeypatch):
    """run(pick_id, **scaffold config) -> (result, record, evaluate calls, services, task)."""
    monkeypatch.setattr(edits_module, "LIBRARY", LIBRARY)
    calls: list[dict] = []

    def spy(svc, task, candidate, splits, **kw):
        rows = (kw.get("rows_override") or {}).get("feedback")
        calls.append({"splits": splits, "purpose": kw.get("purpose", "task"),
                      "ids": None if rows is None else [r["id"] for r in rows]})
        return evaluate(svc, task, candidate, splits, **kw)

    monkeypatch.setattr(edit_search, "evaluate", spy)
    services = []

    def run(pick_id: str | None, **scaffold):
        svc = fake_services(tmp_path, f"s{len(services)}", [], [], config=fake_config(tmp_path, scaffold=scaffold))
        services.append(svc)
        task = CsvTask.load(task_dir)
        code = REFERENCE_AGENT.read_text()
        path = svc.paths.gen(1) / "target_agent.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        incumbent = Candidate(generation=1, lever="meta", scaffold_path=str(path), scaffold_sha=sha(code))
        evaluate(svc, task, incumbent, ["feedback"])  # what the task node leaves cached
        result = search_edit(svc, task, code=code, tried=[], pick=BY_ID.get(pick_id), incumbent=incumbent,
                             generation=2, lever="scaffold", adapter=None, limit=None)
        record = json.loads((svc.paths.gen(2) / "edit_search.json").read_text())["searches"][-1]
        return result, record, calls, svc, task

    yield run
    for svc in services:
        shutdown(svc)


def true_feedback_score(svc, task, edit: ScaffoldEdit) -> float:
    code = edits_module.apply_edit(REFERENCE_AGENT.read_text(), edit)
    path = svc.paths.gen(9) / f"{edit.id}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code)
    cand = Candidate(generation=9, lever="scaffold", scaffold_path=str(path), scaffold_sha=sha(code))
    return evaluate(svc, task, cand, ["feedback"], purpose="check",
                    rows_override={"feedback": task.splits()["feedback"]})["feedback"].score


def test_search_finds_the_best_edit_on_feedback_items_only_within_budget(searched):
    result, record, calls, svc, task = searched("votes-3", search_items_budget=40, search_candidates=6)
    splits = task.splits()
    feedback = {r["id"] for r in splits["feedback"]}
    assert result.edit.id == "retrieved-shots-2" and record["chosen"] == "retrieved-shots-2"
    # it really is the best on the whole feedback split, not only on the search's items
    truth = {e.id: true_feedback_score(svc, task, e) for e in LIBRARY}
    assert truth["retrieved-shots-2"] == 1.0 and max(v for k, v in truth.items() if k != "retrieved-shots-2") == 0.25
    # only feedback items ran: the incumbent's cached feedback scores, then 'search' runs on feedback rows
    searches = [c for c in calls if c["purpose"] == "search"]
    assert calls[0] == {"splits": ["feedback"], "purpose": "task", "ids": None}
    assert len(calls) == 1 + len(searches) and all(c["splits"] == ["feedback"] for c in calls)
    ran = [i for c in searches for i in c["ids"]]
    assert set(ran) <= feedback
    assert not set(ran) & {r["id"] for s in ("selection", "test", "pool") for r in splits[s]}
    # the plan: 6 -> 3 -> 2 candidates on 3 -> 6 -> 12 items = 39 item-evaluations, within 40
    assert record["plan"] == [[6, 3], [3, 6], [2, 12]] and record["spent"] == len(ran) == 39 <= record["budget"]
    assert [len(r["candidates"]) for r in record["rounds"]] == [6, 3, 2]
    assert len(searches) == 6 + 3 + 2
    for rnd in record["rounds"]:  # paired: every candidate of a round scored on the round's items
        assert all(list(c["scores"]) == rnd["items"] for c in rnd["candidates"])
    first = record["rounds"][0]
    assert len({i.split("-")[1] for i in first["items"]}) == 3  # one item per label (train ids tr-LABEL-N)
    # the LLM's pick is in the first round and wins the tie among the edits that cannot help
    assert [c["id"] for c in first["candidates"]][:3] == ["retrieved-shots-2", "votes-3", "longer-text"]
    assert [c["kept"] for c in first["candidates"]] == [True, True, True, False, False, False]
    last = record["rounds"][-1]["candidates"][0]
    assert last["mean"] == 1.0 and last["vs_incumbent"]["delta"] == pytest.approx(0.75)
    assert record["beats_incumbent"] is True
    assert set(record["incumbent"]["scores"]) == feedback
    assert "retrieved-shots-2 beats the incumbent on 12 feedback items: 1.000 vs 0.250" in result.summary
    assert result.note == "search: best of 6 on 12 feedback items, 1.000 vs 0.250"


def test_when_nothing_beats_the_incumbent_the_best_is_returned_and_the_record_says_so(searched):
    result, record, calls, svc, task = searched("list-labels", search_items_budget=120, search_candidates=2)
    # the pick (last of the edits that cannot help in library order) gets a place, and wins the tie
    assert record["plan"] == [[2, 12]] and [c["id"] for c in record["rounds"][0]["candidates"]] == ["list-labels", "votes-3"]
    assert result.edit.id == "list-labels" and record["beats_incumbent"] is False
    assert "does not beat the incumbent" in record["verdict"] and "proposed anyway" in record["verdict"]
    assert "proposed anyway" in result.summary and result.note.endswith(", not better")


def test_a_zero_budget_runs_nothing_and_applies_the_pick(searched):
    result, record, calls, svc, task = searched("more-retries", search_items_budget=0)
    assert result.edit.id == "more-retries" and record["rounds"] == [] and record["spent"] == 0
    assert calls == []  # nothing evaluated, not even the incumbent's cached scores read
    assert "untested" in record["verdict"]


def test_generation_1_search_lets_the_unedited_reference_compete(tmp_path, monkeypatch):
    """search_generation_1: the Meta-Agent's pick ("none") is one candidate, the library edits the
    others; the edit that beats the unedited agent on the feedback items becomes generation 1."""
    from tests.fakes import fake_model_cache
    from tests.unit.test_graph import run

    monkeypatch.setattr(edits_module, "LIBRARY", LIBRARY)
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    task_dir = make_tiny_task(tmp_path / "tiny")
    config = fake_config(tmp_path, scaffold={"search_generation_1": True, "search_candidates": 7})
    svc, out, trace = run(tmp_path, task_dir, [], max_generations=1, config=config)
    assert trace == ["meta", "task", "feedback", "finish"]
    gen1 = out["history"][0]
    assert (gen1.lever, gen1.selection) == ("meta", 1.0) and out["tried"] == ["retrieved-shots-2"]
    record = json.loads((svc.paths.gen(1) / "edit_search.json").read_text())["searches"][0]
    assert record["pick"] == "none" and record["candidates"][0] == "none" and record["baseline"] == "the unedited agent"
    assert record["chosen"] == "retrieved-shots-2" and record["beats_incumbent"] is True
    assert "## Edit search" in (svc.paths.gen(1) / "improvement.md").read_text()
    assert "search: best of 7 on 3 feedback items" in gen1.note
    assert len(svc.llm_override["meta"].chat.prompts) == 1  # the Meta-Agent was asked for its pick
