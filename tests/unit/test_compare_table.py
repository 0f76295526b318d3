"""The statistics of `sia compare`'s table (sia.compare_table), checked against numbers computed
here another way: by hand (a binomial), by enumerating every bootstrap resample exactly, and by
the normal approximation; and which incumbent an arm's row takes from its run.db."""

from __future__ import annotations

import json

import itertools
from fractions import Fraction

import numpy as np
import pytest

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.compare_table import ArmResult, Incumbent, bootstrap_ci, compare_table, paired_difference, table_markdown
from sia.records import ItemResult


def test_bootstrap_ci_of_a_hand_computed_case():
    # diffs [1, 0, 0, 0]: a resample's mean is K/4 with K ~ Binomial(4, 1/4).
    # P(K = 0) = (3/4)^4 = 0.316 > 0.025, so the lower end is 0; P(K <= 2) = 0.949 < 0.975 <= P(K <= 3) = 0.996,
    # so the upper end is 3/4.
    assert bootstrap_ci([1, 0, 0, 0]) == (0.0, 0.75)


def exact_percentile_interval(diffs: list[Fraction], confidence: float) -> tuple[Fraction, Fraction, float]:
    """The bootstrap interval from all n^n equally likely resamples (no random numbers), and how far
    each end's cumulative probability is from its quantile (the Monte Carlo estimate must not be
    able to land on a neighbouring value)."""
    n = len(diffs)
    counts: dict[Fraction, int] = {}
    for resample in itertools.product(diffs, repeat=n):
        mean = sum(resample) / n
        counts[mean] = counts.get(mean, 0) + 1
    cdf, steps = 0.0, []
    for mean in sorted(counts):
        steps.append((mean, cdf, cdf + counts[mean] / n ** n))
        cdf += counts[mean] / n ** n
    ends, margin = [], 1.0
    for q in ((1 - confidence) / 2, (1 + confidence) / 2):
        mean, below, upto = next(step for step in steps if step[2] >= q)
        ends.append(mean)
        margin = min(margin, q - below, upto - q)
    return ends[0], ends[1], margin


def test_bootstrap_ci_matches_the_exact_bootstrap_distribution():
    diffs = [Fraction(x) for x in (0, 0, 1, 1, -1)]
    lo, hi, margin = exact_percentile_interval(diffs, 0.95)
    assert (lo, hi) == (Fraction(-2, 5), Fraction(4, 5)) and margin > 0.005
    for seed in (0, 1, 2):  # 100k resamples: a quantile's standard error is about 0.0005, ten times below the margin
        assert bootstrap_ci([float(d) for d in diffs], 0.95, 100_000, seed) == pytest.approx((float(lo), float(hi)))


def test_bootstrap_ci_against_the_normal_approximation_and_edge_cases():
    diffs = np.random.default_rng(7).normal(0.1, 0.5, size=400)
    half = 1.96 * diffs.std() / np.sqrt(len(diffs))
    lo, hi = bootstrap_ci(diffs)
    assert lo == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(diffs.mean() + half, abs=0.1 * half)
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)  # no spread, no width
    assert bootstrap_ci(diffs, seed=3) == bootstrap_ci(diffs, seed=3)  # reproducible
    with pytest.raises(ValueError):
        bootstrap_ci([])


def arm(policy, seed, final, initial=None, levers=("meta", "scaffold"), adapter=None, loop_s=1.0):
    initial = initial if initial is not None else {item: 0.0 for item in final}
    return ArmResult(f"{policy}-s{seed}", policy, seed, tuple(levers), Incumbent(1, None, initial),
                     Incumbent(len(levers), adapter, final), loop_s)


def test_seeds_are_averaged_per_item_before_the_paired_bootstrap():
    arms = [arm("scaffold-only", 0, {"a": 1, "b": 0, "c": 1}), arm("llm", 0, {"a": 1, "b": 1, "c": 1}, adapter="x"),
            arm("scaffold-only", 1, {"a": 1, "b": 1, "c": 0}), arm("llm", 1, {"a": 1, "b": 1, "c": 0})]
    table = compare_table(arms, ["scaffold-only", "llm"])
    initial, h, wh = table["rows"]
    assert [r["key"] for r in table["rows"]] == ["initial", "H", "W+H"]
    assert initial["test"] == 0 and initial["vs_initial"] is None and initial["arms"] == [a.arm for a in arms]
    # H per item (seeds averaged): a 1, b 0.5, c 0.5; minus initial 0. A resample's mean is 0.5 + K/6 with
    # K ~ Binomial(3, 1/3) ones: P(K = 0) = 8/27 > 0.025 and P(K <= 2) = 26/27 = 0.963 < 0.975.
    # (Six separate arm-items [1, 0, 1, 1, 1, 0] would give a lower end of 1/3 instead.)
    assert h["arms"] == ["scaffold-only-s0", "scaffold-only-s1"] and h["vs_h"] is None
    assert h["vs_initial"] == pytest.approx({"delta": 2 / 3, "lo": 0.5, "hi": 1.0, "n": 3})
    assert h["per_seed"] == pytest.approx({"0": 2 / 3, "1": 2 / 3}) and h["test"] == pytest.approx(2 / 3)
    # W+H per item: 1, 1, 0.5; minus H: 0, 0.5, 0 -> K/6 with K ~ Binomial(3, 1/3): [0, 0.5]
    assert wh["label"].endswith("llm") and wh["arms"] == ["llm-s0", "llm-s1"]
    assert wh["vs_h"] == pytest.approx({"delta": 1 / 6, "lo": 0.0, "hi": 0.5, "n": 3})
    assert wh["per_seed"] == pytest.approx({"0": 1.0, "1": 2 / 3})
    assert wh["incumbents"]["llm-s0"] == {"generation": 2, "adapter": "x"}


def test_one_w_plus_h_row_per_weights_policy_and_none_without_arms():
    arms = [arm("scaffold-only", 0, {"a": 1}), arm("alternate", 0, {"a": 1}, levers=("meta", "scaffold", "weights")),
            arm("llm", 0, {"a": 0})]
    table = compare_table(arms, ["scaffold-only", "llm", "alternate", "plateau"])
    assert [r["label"] for r in table["rows"]] == ["initial", "best scaffold-only (H)", "best scaffold+weights (W+H): llm",
                                                   "best scaffold+weights (W+H): alternate"]
    assert [a["pulled_weights"] for a in table["arms"]] == [False, True, False]
    without_h = compare_table([arm("llm", 0, {"a": 1})])
    assert [r["key"] for r in without_h["rows"]] == ["initial", "W+H"] and without_h["rows"][1]["vs_h"] is None
    text = table_markdown(dict(table, compare={"compare_id": "c", "task": "t", "policies": ["scaffold-only", "llm"],
                                               "seeds": 1, "generations": 2, "limit": None}))
    assert "| best scaffold-only (H) | 1 | 1.000 | s0 1.000 | +1.000 [+1.000, +1.000] |  | s0 1.0 |" in text
    assert "| alternate-s0 | meta, scaffold, weights | gen 3 (base) | 0.000 | 1.000 | 1.0 |" in text


def test_paired_difference_uses_the_common_items_only():
    assert paired_difference({"a": 1, "b": 1}, {"b": 0, "c": 0}) == {"delta": 1.0, "lo": 1.0, "hi": 1.0, "n": 1}
    assert paired_difference({"a": 1}, {"b": 0}) is None


def test_an_arm_row_takes_the_selection_choice_never_the_best_test_score(tmp_path):
    from sia.cli.compare import arm_result

    folder = tmp_path / "compares" / "c"
    paths = RunPaths(folder / "arms", "llm-s0").create()
    db = RunDB(paths.run_db)
    # gen 2 has the best test score, but gen 3 beat it on the selection split and became the incumbent;
    # gen 4 (rejected, scored on test with report_rejected) is better still on test and must not count.
    gens = [(1, "meta", "A", None, 1, [0, 0, 0]), (2, "scaffold", "B", None, 1, [1, 1, 1]),
            (3, "weights", "B", "adapters/gen_3", 1, [1, 0, 0]), (4, "scaffold", "D", None, 0, [1, 1, 1])]
    for gen, lever, sha, adapter, accepted, scores in gens:
        db.save_generation({"run_id": "llm-s0", "generation": gen, "lever": lever, "adapter": adapter,
                            "scaffold_sha": sha, "accepted": accepted, "test": sum(scores) / 3, "wall_s": 1.0,
                            "guards": "held (macro_recall)" if gen == 3 else None})
        db.save_items([ItemResult(
            "llm-s0", gen, sha, adapter or "base", split, f"t{i}", f"tag{gen}{split}{i}", "x", "y", s)
            for i, s in enumerate(scores) for split in ("test", "selection")])
    db.db.conn.close()
    result = arm_result({}, folder, "llm", 0)
    assert result.levers == ("meta", "scaffold", "weights", "scaffold")
    assert (result.initial.generation, result.initial.test) == (1, {"t0": 0, "t1": 0, "t2": 0})
    assert (result.final.generation, result.final.adapter) == (3, "adapters/gen_3")
    assert result.final.test == {"t0": 1, "t1": 0, "t2": 0}
    assert result.guards == "held on 1, no guards on 1 of 2 changes" and result.transfers == ()
    (paths.root / "transfer").mkdir()
    (paths.root / "transfer" / "other.json").write_text(json.dumps({"task": "other", "incumbents": [], "first_to_final": {
        "from": 1, "to": 3, "delta": -0.2, "ci": [-0.3, -0.1], "verdict": "loss on transfer"}}))
    assert arm_result({}, folder, "llm", 0).transfers == (("other", "-0.200 [-0.300, -0.100] loss on transfer"),)
