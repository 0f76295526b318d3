"""The scRNA denoising task core: data, molecular cross-validation split, OpenProblems' metrics,
their normalisation, the anti-gaming checks, and the reference denoisers."""

from __future__ import annotations

import numpy as np
import pytest

from sia.tasks.scrna_denoise import metrics, references
from sia.tasks.scrna_denoise.data import load_celltypist_sample, load_counts, simulate_counts
from sia.tasks.scrna_denoise.evaluate import Scorer, score
from sia.tasks.scrna_denoise.split import split_molecules


@pytest.fixture(scope="module")
def sim():
    """A small simulated dataset with clear group structure, split once."""
    counts, groups = simulate_counts(300, 3000, seed=0)
    return counts, groups, split_molecules(counts, seed=0)


@pytest.fixture(scope="module")
def scorer(sim):
    return Scorer(sim[2].train, sim[2].test)


def test_simulator_is_deterministic_shaped_and_structured():
    a, ga = simulate_counts(200, 500, seed=3)
    b, gb = simulate_counts(200, 500, seed=3)
    c, _ = simulate_counts(200, 500, seed=4)
    assert a.shape == (200, 500) and ga.shape == (200,)
    assert np.array_equal(a, b) and np.array_equal(ga, gb)
    assert not np.array_equal(a, c)
    assert (a >= 0).all() and np.array_equal(a, np.round(a)) and a.sum() > 0
    assert set(ga) == {0, 1, 2, 3}
    # groups have different expression profiles: DE genes separate the group means
    def profile(rows):
        return rows.sum(0) / rows.sum()

    g0 = a[ga == 0]
    within = np.abs(profile(g0[::2]) - profile(g0[1::2])).sum()  # two halves of one group
    between = np.abs(profile(g0) - profile(a[ga == 1])).sum()
    assert between > 2 * within


def test_molecular_cross_validation_split():
    counts, _ = simulate_counts(100, 400, seed=1)
    singles = np.zeros((100, 200), dtype=np.float32)
    singles[np.arange(200) % 100, np.arange(200)] = 1  # 200 genes holding one molecule each
    counts = np.hstack([counts, np.zeros((100, 1), np.float32), singles])
    s = split_molecules(counts, seed=7)
    kept = counts[:, s.kept]
    assert np.array_equal(s.train + s.test, kept)
    assert (s.train >= 0).all() and (s.test >= 0).all()
    assert (s.train.sum(axis=0) > 0).all()  # zero-train genes are gone from both halves
    assert not s.kept[400]  # the all-zero gene
    dropped_singles = (~s.kept[401:]).sum()
    assert 5 <= dropped_singles <= 40  # ~10% of single molecules land in test only
    assert s.train.sum() / kept.sum() == pytest.approx(0.9, abs=0.005)
    again = split_molecules(counts, seed=7)
    assert np.array_equal(again.train, s.train) and np.array_equal(again.kept, s.kept)
    assert not np.array_equal(split_molecules(counts, seed=8).train, s.train)
    with pytest.raises(ValueError, match="integer"):
        split_molecules(counts + 0.5)


def test_metrics_match_the_openproblems_formulas_on_a_hand_example():
    train = np.array([[4.0, 0.0, 5.0], [1.0, 2.0, 0.0]])
    test = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    den = np.array([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # an all-zero cell stays zero (scanpy)
    a = np.log1p(test / test.sum(1, keepdims=True) * 1e4)
    b = np.vstack([np.log1p(den[0] / 4.0 * 1e4), np.zeros(3)])
    assert metrics.mse(test, den) == pytest.approx(((a - b) ** 2).mean(), rel=1e-12)
    c = test.sum() / train.sum()  # whole-matrix totals: 4 / 12
    expected = np.mean(test - c * den * np.log(test + 1e-6))  # poisson_nll_loss(test, c * den)
    assert metrics.poisson(train.sum(), test, den) == pytest.approx(expected, rel=1e-12)


def test_no_denoising_scores_zero_and_perfect_scores_one(sim, scorer):
    split = sim[2]
    none = scorer(references.no_denoise(split.train))
    best = scorer(references.perfect(split.train, split.test))
    assert none["mse_norm"] == 0.0 and none["poisson_norm"] == 0.0 and none["poisson_rescaled_norm"] == 0.0
    assert best["mse_norm"] == 1.0 and best["poisson_norm"] == 1.0 and best["poisson_rescaled_norm"] == 1.0
    assert best["mse"] == 0.0 and none["mse"] == none["mse_no_denoise"] > 0
    assert none["poisson"] > best["poisson"] == best["poisson_perfect"]
    assert score(split.train, split.train, split.test) == none


def test_reference_denoisers_beat_no_denoising_on_structured_data(sim, scorer):
    train = sim[2].train
    magic, knn = scorer(references.magic(train)), scorer(references.knn_smooth(train))
    assert magic["mse_norm"] > 0.05, magic
    assert knn["mse_norm"] > 0.0, knn
    assert references.magic(train).shape == train.shape and np.allclose(
        references.magic(train).sum(1), train.sum(1), rtol=1e-4)


def test_shrinking_games_the_openproblems_poisson_but_not_the_rescaled_one(sim, scorer):
    s = scorer(references.shrink(sim[2].train))
    assert s["poisson_norm"] > 0.9  # the documented loophole of the OpenProblems argument order
    assert s["poisson_rescaled_norm"] == pytest.approx(0.0, abs=1e-9)
    assert s["mse_norm"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tr, te: -tr, "negative"),
        (lambda tr, te: np.where(tr > 3, np.nan, tr), "NaN or infinite"),
        (lambda tr, te: np.where(tr > 3, np.inf, tr), "NaN or infinite"),
        (lambda tr, te: tr.T, r"has shape .* expected"),
        (lambda tr, te: tr[:, :-1], r"has shape .* expected"),
        (lambda tr, te: [["a"] * tr.shape[1]] * tr.shape[0], "not a numeric array"),
        (lambda tr, te: np.where(np.arange(tr.size).reshape(tr.shape) == 0, tr.sum() + 1, tr), "above the total"),
        (lambda tr, te: te * 10, "better than the perfect"),  # more mass on held-out molecules
        (lambda tr, te: np.where(te >= 2, 1e4, 0.0) * 1e-3, "better than the perfect"),
    ],
    ids=["negative", "nan", "inf", "transposed", "missing-gene", "strings", "over-bound",
         "scaled-test", "test-peaks-shrunk"],
)
def test_gaming_attempts_are_rejected(sim, scorer, make, message):
    split = sim[2]
    with pytest.raises(ValueError, match=message):
        scorer(make(split.train, split.test))


def test_load_counts_reads_csv_and_names_bad_files(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(",GENE1,GENE2\ncell_a,0,3\ncell_b,1.0,0\n")
    c = load_counts(good)
    assert c.genes == ["GENE1", "GENE2"] and c.cells == ["cell_a", "cell_b"]
    assert np.array_equal(c.X, [[0, 3], [1, 0]])
    for name, body, problem in [
        ("neg.csv", ",G\nc1,-1\n", "non-negative"),
        ("frac.csv", ",G\nc1,0.5\n", "integers"),
        ("text.csv", ",G\nc1,abc\n", "non-numeric"),
        ("nan.csv", ",G\nc1,nan\n", "finite"),
        ("ragged.csv", ",G,H\nc1,1\n", "fields"),
    ]:
        path = tmp_path / name
        path.write_text(body)
        with pytest.raises(ValueError, match=problem) as err:
            load_counts(path)
        assert name in str(err.value)


def test_celltypist_sample_loads_whole():
    c = load_celltypist_sample()
    assert c.X.shape == (559, 32786) and len(c.genes) == 32786 and len(c.cells) == 559
    assert (c.X >= 0).all() and np.array_equal(c.X, np.round(c.X))
    totals = c.X.sum(axis=1)
    assert totals.min() == 945 and totals.max() == 39886
    assert (c.X.sum(axis=0) > 0).sum() == 9810
