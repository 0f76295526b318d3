"""Guards against a gamed metric (issue 18): keep-best accepts a candidate only if its metric wins
under the paired test and no guard worsens significantly or crosses its bound; the verdict names
the guard. The denoising probes are in tests/e2e/test_scrna_loop.py; here the rule itself and the
classification guard (macro recall beside accuracy)."""

from __future__ import annotations

import pytest

from sia.config import KeepBestConfig
from sia.nodes.keep_best import check_guard, item_scores, keep_best
from sia.records import ItemResult
from sia.tasks.base import Guard, guard_values_of
from sia.tasks.csv_task import MACRO_RECALL, CsvTask
from sia.verdicts import guards_state
from tests.fakes import make_tiny_task

CFG = KeepBestConfig()


def values(*vals: float) -> dict[str, float]:
    return {f"i{k}": float(v) for k, v in enumerate(vals)}


def test_a_guard_past_its_bound_blocks_whatever_the_incumbent_did():
    own = Guard("own_count_r2", "min", bound=0.95, why="a transform of the input")
    check = check_guard(own, values(1.0, 1.0, 1.0), values(1.0, 1.0, 1.0), CFG)
    assert not check.held and check.reason == "own_count_r2 1.000 (must be <= 0.95): a transform of the input"
    assert check_guard(own, values(0.5, 0.6, 0.4), values(1.0, 1.0, 1.0), CFG).held
    floor = Guard("poisson_norm", "max", bound=0.97)
    assert not check_guard(floor, values(0.9, 0.96), {}, CFG).held and check_guard(floor, values(0.98, 0.97), {}, CFG).held


def test_a_guard_blocks_a_significant_worsening_beyond_its_tolerance_only():
    g = Guard("macro_recall", "max")
    lower, higher = values(*[0.2, 0.3] * 15), values(*[0.8, 0.7] * 15)
    clear = check_guard(g, lower, higher, CFG)
    assert not clear.held and clear.p_value < 0.1 and clear.reason.startswith("macro_recall -0.500 (p=")
    noisy = check_guard(g, values(0, 1, 1, 0, 1, 0), values(1, 0, 1, 1, 0, 1), CFG)  # one item worse of six
    assert noisy.held and noisy.p_value > 0.1
    assert check_guard(Guard("x", "max", tolerance=0.7), lower, higher, CFG).held
    lower_is_better = Guard("loss", "min")
    assert not check_guard(lower_is_better, higher, lower, CFG).held
    assert check_guard(lower_is_better, lower, higher, CFG).held
    plain = KeepBestConfig(test="none")  # no test: any worsening beyond the tolerance blocks
    assert not check_guard(g, values(0.79), values(0.8), plain).held
    assert check_guard(g, values(0.8), values(0.8), plain).held


def test_a_guard_the_incumbent_never_reported_is_unchecked_and_says_so():
    """An incumbent scored before guards existed: nothing to pair, so the guard holds, visibly unchecked."""
    check = check_guard(Guard("poisson_rescaled_norm"), values(0.3), {}, CFG)
    assert check.held and not check.checked and "unchecked" in check.reason
    v = keep_best(values(*[1] * 30), values(*[0] * 30), CFG,
                  [(Guard("poisson_rescaled_norm"), values(0.3), {}), (Guard("macro_recall"), values(1), values(1))])
    assert v.accepted and v.guards_summary() == "held (macro_recall); unchecked (poisson_rescaled_norm)"
    assert guards_state(v.guards_summary()) == "unchecked"
    bounded = check_guard(Guard("own_count_r2", "min", bound=0.95), values(0.5), {}, CFG)
    assert bounded.held and bounded.checked and "within its bound" in bounded.reason


def test_leaving_a_guard_out_is_no_way_past_it():
    """The candidate's evaluation reported the guard on fewer items (or NaN) than the incumbent's."""
    check = check_guard(Guard("poisson_rescaled_norm"), {"i0": 0.9}, values(0.1, 0.1, 0.1), CFG)
    assert not check.held and check.reason.startswith("poisson_rescaled_norm not reported for 2 of the candidate's")


def test_per_tier_guard_values_are_compared_as_means_not_tested():
    """One value per tier, given to every item: a bootstrap would call any difference certain."""
    g = Guard("f1", "max", tolerance=0.01)
    worse = check_guard(g, values(*[0.70] * 20), values(*[0.75] * 20), CFG)
    assert not worse.held and worse.p_value is None and worse.reason.startswith("f1 -0.050")
    assert check_guard(g, values(*[0.745] * 20), values(*[0.75] * 20), CFG).held  # within the tolerance


def test_the_verdict_names_the_blocking_guard_and_guards_can_be_turned_off():
    win = values(*[1] * 30), values(*[0] * 30)
    guards = [(Guard("own_count_r2", "min", bound=0.95), values(*[1.0] * 30), values(*[1.0] * 30)),
              (Guard("macro_recall"), values(*[0.5] * 30), values(*[0.5] * 30))]
    v = keep_best(*win, CFG, guards)
    assert not v.accepted and v.blocked_by == ["own_count_r2"]
    assert "(significant at 0.80); blocked by guard own_count_r2 1.000" in v.reason
    assert v.guards_summary().startswith("BLOCKED by own_count_r2") and guards_state(v.guards_summary()) == "blocked"
    assert keep_best(*win, CFG.model_copy(update={"guards": False}), guards).accepted
    held = keep_best(*win, CFG, guards[1:])
    assert held.accepted and held.guards_summary() == "held (macro_recall)"
    lost = keep_best(values(*[0] * 30), values(*[1] * 30), CFG, guards)  # lost the metric: not "blocked"
    assert not lost.accepted and "guard also failed: own_count_r2" in lost.reason
    assert lost.guards_summary().startswith("failed: own_count_r2") and guards_state(lost.guards_summary()) == "failed"


def test_a_first_candidate_past_a_bound_is_accepted_and_shown_so():
    """The loop needs an incumbent, so the first agent is kept; a gamed one is marked, not hidden."""
    own = Guard("own_count_r2", "min", bound=0.95)
    first = keep_best(values(0.3, 0.3), None, CFG, [(own, values(1.0, 1.0), {}), (Guard("macro_recall"), values(1, 1), {})])
    assert first.accepted and first.reason == "first candidate" and first.blocked_by == []
    assert [(g.name, g.held) for g in first.guards] == [("own_count_r2", False)]
    assert first.guards_summary().startswith("PAST BOUND: own_count_r2 1.000 (must be <= 0.95)")
    assert keep_best(values(0.3), None, CFG, [(own, values(0.5), {})]).guards_summary() is None


def items(outcomes: list[tuple[str, int]]) -> list[ItemResult]:
    return [ItemResult("r", 1, "sha", "base", "selection", f"i{k}", f"t{k}", gold if ok else "x", gold, float(ok))
            for k, (gold, ok) in enumerate(outcomes)]


def test_macro_recall_is_the_mean_of_per_label_recall(tmp_path):
    task = CsvTask.load(make_tiny_task(tmp_path / "tiny"))
    assert task.guards == (MACRO_RECALL,)
    got = guard_values_of(task, items([("a", 1), ("a", 1), ("a", 0), ("a", 0), ("b", 1), ("c", 0)]))["macro_recall"]
    assert sum(got.values()) / len(got) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_a_candidate_that_raises_accuracy_by_dropping_a_rare_label_is_blocked(tmp_path):
    """Selection: 30 items of a common label, 6 each of two rare ones. The incumbent recalls the
    rare labels well and half the common one; the candidate answers the common label for nearly
    everything: accuracy 0.62 -> 0.79, significant; macro recall 0.78 -> 0.50, blocked."""
    task = CsvTask.load(make_tiny_task(tmp_path / "tiny"))
    incumbent = items([("a", k < 15) for k in range(30)] + [("b", k < 6) for k in range(6)]
                      + [("c", k < 5) for k in range(6)])
    candidate = items([("a", 1)] * 30 + [("b", 0)] * 6 + [("c", k < 3) for k in range(6)])
    accuracy = [sum(i.score for i in side) / len(side) for side in (incumbent, candidate)]
    assert accuracy[1] > accuracy[0] + 0.1
    cand, inc = guard_values_of(task, candidate), guard_values_of(task, incumbent)
    guards = [(g, cand[g.name], inc[g.name]) for g in task.guards]
    verdict = keep_best(item_scores(candidate), item_scores(incumbent), CFG, guards)
    assert not verdict.accepted and verdict.blocked_by == ["macro_recall"]
    assert "(significant at 0.80); blocked by guard macro_recall -0.278 (p=" in verdict.reason
    no_guards = keep_best(item_scores(candidate), item_scores(incumbent), CFG)
    assert no_guards.accepted  # the same gain, judged on accuracy alone, would have gone in


def test_a_scrna_folder_prepared_before_guards_gets_them_and_their_evaluator_on_use(tmp_path, monkeypatch):
    import json

    from sia.tasks.registry import resolve_task

    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    root = resolve_task("scrna-simulated").root  # prepared into the cache (about 2 s)
    spec = json.loads((root / "sia_task.json").read_text())
    assert [g["name"] for g in spec["guards"]] == ["poisson_rescaled_norm", "own_count_r2"]
    evaluator = root / "data/public/evaluate.py"
    packaged = evaluator.read_text()
    evaluator.write_text(packaged.replace('"own_count_r2": float(own.mean()),', ""))  # as an older release wrote it
    (root / "sia_task.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "guards"}))
    task = resolve_task("scrna-simulated")
    assert evaluator.read_text() == packaged and [g.name for g in task.guards] == ["poisson_rescaled_norm", "own_count_r2"]
    assert task.guards[1].bound == 0.95 and task.guards[1].direction == "min"
