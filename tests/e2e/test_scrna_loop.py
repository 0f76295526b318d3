"""scrna-denoise as a loop task: an SIA task folder whose agents write a denoising program's
output; its evaluator agrees with the standalone scorer, rejects gamed outputs, and the real
loop reaches generation 2 with a scripted code-writing LLM."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sia.cli.main import main
from sia.graph.state import SIAInput
from sia.tasks.registry import resolve_task
from sia.tasks.scrna_denoise import references
from sia.tasks.scrna_denoise.data import simulate_counts
from sia.tasks.scrna_denoise.evaluate import score
from sia.tasks.scrna_denoise.prepare import REFERENCE_AGENT, prepare
from tests.fakes import fake_services, prompts_sent, run_graph, scripted_llm, shutdown

KNN_DENOISE = '''def denoise(counts: np.ndarray) -> np.ndarray:
    """kNN smoothing of library-normalised profiles on PCs of sqrt fractions."""
    lib = counts.sum(axis=1, keepdims=True)
    frac = counts / np.maximum(lib, 1)
    X = np.sqrt(frac)
    X = X - X.mean(axis=0)
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    E = u[:, :10] * s[:10]
    d = ((E[:, None, :] - E[None, :, :]) ** 2).sum(axis=-1)
    nn = np.argsort(d, axis=1, kind="stable")[:, : min(6, len(E))]
    return frac[nn].mean(axis=1) * lib


'''


DIFFUSION_DENOISE = '''def denoise(counts: np.ndarray) -> np.ndarray:
    """MAGIC-style diffusion: sqrt library fractions, an adaptive Gaussian kernel on 20 PCs, three
    diffusion steps, squared back and rescaled to each cell's library size."""
    lib = counts.sum(axis=1, keepdims=True)
    X = np.sqrt(counts / np.maximum(lib, 1))
    Z = X - X.mean(axis=0)
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    E = u[:, :20] * s[:20]
    d = ((E[:, None, :] - E[None, :, :]) ** 2).sum(axis=-1)
    K = np.exp(-d / (np.sort(d, axis=1)[:, min(5, len(E) - 1)][:, None] + 1e-12))
    K = K + K.T
    Y = np.linalg.matrix_power(K / K.sum(axis=1, keepdims=True), 3) @ X
    out = Y ** 2
    return out * lib / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


'''
# The metric probes of references.py, as an agent would write them (README "Known weaknesses").
SHARPEN_DENOISE = '''def denoise(counts: np.ndarray) -> np.ndarray:
    """Each cell's own counts to the power 1.5, rescaled to its library size: uses no other cell."""
    out = counts.astype(np.float64) ** 1.5
    return out * counts.sum(axis=1, keepdims=True) / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


'''
SHRINK_DENOISE = '''def denoise(counts: np.ndarray) -> np.ndarray:
    """The counts times 1e-3: the OpenProblems Poisson loss drifts towards perfect, nothing is denoised."""
    return counts.astype(np.float64) * 1e-3


'''


def agent_with(denoise_src: str = KNN_DENOISE) -> str:
    src = REFERENCE_AGENT.read_text()
    return src[: src.index("def denoise")] + denoise_src + src[src.index("def read_counts"):]


def run_two_generations(tmp_path, task_root, first: str, second: str, run_id: str = "sc") -> tuple[list, object]:
    """Generation 1 is `first` (the Meta-Agent's agent), generation 2 the Feedback-Agent's rewrite `second`."""
    meta = scripted_llm(["```python\n" + first + "```"], can_write_code=True)
    svc = fake_services(tmp_path, run_id, meta, [json.dumps({"diagnosis": "denoise better", "lever": "scaffold"}),
                                                 "```python\n" + second + "```"], feedback_writes_code=True)
    try:
        out = run_graph(svc, SIAInput(run_id=run_id, task=str(task_root), max_generations=2, policy="llm"))
    finally:
        shutdown(svc)
    return out["history"], svc


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return resolve_task(str(prepare(tmp_path_factory.mktemp("sc") / "scrna", data="simulated", cells=80, genes=4000)))


def read(path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def write(path, header, X) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *([f"cell{i}", *row] for i, row in enumerate(X.tolist()))])


def run_evaluator(task, gen_dir, header, X) -> dict:
    write(gen_dir / "denoised.csv", header, X)
    proc = subprocess.run([sys.executable, str(task.root / "data/public/evaluate.py"), "--gen-dir", str(gen_dir)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads((gen_dir / "results.json").read_text())


def test_the_folder_evaluator_agrees_with_the_standalone_scorer(task, tmp_path):
    header, train = read(task.root / "data/public/train_counts.csv")
    _, test = read(task.root / "data/private/test_counts.csv")
    assert run_evaluator(task, tmp_path, header, train)["mse_norm"] == 0.0  # no denoising
    assert run_evaluator(task, tmp_path, header, test)["mse_norm"] == 1.0  # perfect
    denoised = references.magic(train)
    got, want = run_evaluator(task, tmp_path, header, denoised), score(denoised, train, test)
    assert got["mse_norm"] == pytest.approx(want["mse_norm"], rel=1e-9) and got["mse_norm"] > 0.05
    assert got["poisson_norm"] == pytest.approx(want["poisson_norm"], rel=1e-9)
    assert np.mean([i["score"] for i in got["items"]]) == pytest.approx(got["mse_norm"], rel=1e-9)
    # the guards: per-cell shares whose mean is the tier's value, equal to the standalone scorer's
    assert got["poisson_rescaled_norm"] == pytest.approx(want["poisson_rescaled_norm"], rel=1e-9)
    for key in ("poisson_norm", "poisson_rescaled_norm", "own_count_r2"):
        assert np.mean([i[key] for i in got["items"]]) == pytest.approx(got[key], rel=1e-9)
    assert 0.2 < got["own_count_r2"] < 0.9  # MAGIC borrows from other cells; a transform of the counts scores 1
    assert run_evaluator(task, tmp_path, header, references.sharpen(train))["own_count_r2"] == pytest.approx(1.0)


@pytest.mark.parametrize("breakage, message", [
    (lambda train, test: -train, "negative values"),
    (lambda train, test: test * 10, "beats the perfect reference"),  # mass on the held-out molecules
    (lambda train, test: train[:, :-1], "genes of train_counts.csv"),
])
def test_gamed_or_malformed_outputs_are_rejected_on_the_command_line(task, tmp_path, capsys, breakage, message):
    header, train = read(task.root / "data/public/train_counts.csv")
    X = breakage(train, read(task.root / "data/private/test_counts.csv")[1])
    write(tmp_path / "out.csv", header[: X.shape[1] + 1], X)
    assert main(["eval", "--task-dir", str(task.root), "--submission", str(tmp_path / "out.csv")]) == 1
    assert message in capsys.readouterr().out.replace("\n", "")


def test_sia_run_reaches_generation_2_on_scrna_denoise(task, tmp_path):
    h, svc = run_two_generations(tmp_path, task.root, REFERENCE_AGENT.read_text(), agent_with(DIFFUSION_DENOISE))
    assert [g.generation for g in h] == [1, 2] and h[1].lever == "scaffold" and h[1].accepted
    assert h[0].selection == pytest.approx(0.0, abs=1e-12) and h[0].test == pytest.approx(0.0, abs=1e-12)
    assert h[1].selection > 0.05 and h[1].test > 0.05  # diffusion beats no denoising on every tier ...
    assert h[1].guards == "held (poisson_rescaled_norm, own_count_r2)"  # ... without buying it with a guard
    assert h[0].guards.startswith("PAST BOUND: own_count_r2 1.000")  # returning the counts is no denoiser: marked, kept
    tiers = {name: {r["id"] for r in rows} for name, rows in task.splits().items()}
    with open(svc.paths.gen(2) / "task_selection_denoised.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 81  # the agent denoised every cell ...
    items = [json.loads(line) for line in (svc.paths.gen(2) / "items.jsonl").read_text().splitlines()]
    assert {i["item_id"] for i in items if i["split"] == "selection"} == tiers["selection"]  # ... scored per tier
    assert np.mean([i["score"] for i in items if i["split"] == "test"]) == pytest.approx(h[1].test)
    results = json.loads((svc.paths.gen(2) / "results.json").read_text())
    assert results["n"] == {"selection": 16, "feedback": 16, "test": 48}
    prompts = "\n".join(prompts_sent(svc))  # the Feedback-Agent saw feedback cells and their scores ...
    assert "- item 'cell" in prompts and "score 0" in prompts
    assert not [c for c in tiers["test"] | tiers["selection"] if f"'{c}'" in prompts]  # ... and no other cell


def with_metric(task_root, dest, metric: str):
    """A copy of the task folder scored by another of its evaluator's numbers."""
    shutil.copytree(task_root, dest)
    spec = json.loads((dest / "sia_task.json").read_text())
    (dest / "sia_task.json").write_text(json.dumps(dict(spec, metric=metric)))
    return dest


def assert_blocked(h, svc, blocked: set[str]) -> None:
    """Generation 2 won the metric under the paired test, and a guard, named, kept it out."""
    assert h[0].accepted and not h[1].accepted and h[1].selection > h[0].selection
    verdict = json.loads((svc.paths.gen(2) / "results.json").read_text())["keep_best"]
    assert "(significant at" in verdict["reason"] and set(verdict["blocked_by"]) == blocked, verdict
    assert h[1].guards.startswith("BLOCKED by") and all(name in h[1].guards for name in blocked)
    assert all(name in h[1].note for name in blocked)  # the verdict's reason reaches the summary and `sia show`


@pytest.mark.parametrize("metric, first, probe, blocked", [
    # sharpen raises mse_norm over no denoising: caught as a transform of each cell's own counts
    ("mse_norm", REFERENCE_AGENT.read_text(), SHARPEN_DENOISE, {"own_count_r2"}),
    # shrink takes the OpenProblems Poisson from a real denoiser's 0.02 to 0.99: caught twice
    ("poisson_norm", agent_with(DIFFUSION_DENOISE), SHRINK_DENOISE, {"own_count_r2", "poisson_rescaled_norm"}),
    # not a probe but an honest trade-off: kNN smoothing raises mse_norm and fits the Poisson worse than no denoising
    ("mse_norm", REFERENCE_AGENT.read_text(), KNN_DENOISE, {"poisson_rescaled_norm"}),
], ids=["sharpen", "shrink", "knn-trade-off"])
def test_the_metric_probes_win_their_metric_and_are_blocked_by_a_guard(task, tmp_path, metric, first, probe, blocked):
    root = with_metric(task.root, tmp_path / "task", metric)
    h, svc = run_two_generations(tmp_path, root, first, agent_with(probe))
    assert_blocked(h, svc, blocked)


@pytest.mark.slow
def test_sharpen_beats_a_real_denoiser_on_celltypist_and_is_blocked(tmp_path):
    """The README's case: on the celltypist sample sharpen scores mse_norm 0.31 (a MAGIC-style
    diffusion about 0.2) while denoising nothing."""
    root = prepare(tmp_path / "celltypist", data="celltypist")
    h, svc = run_two_generations(tmp_path, root, agent_with(DIFFUSION_DENOISE), agent_with(SHARPEN_DENOISE))
    assert h[0].selection > 0.1
    assert_blocked(h, svc, {"own_count_r2"})


def test_import_counts_turns_a_users_csv_into_a_loop_task(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    counts, _ = simulate_counts(30, 200, seed=1)
    write(tmp_path / "mine.csv", ["cell", *(f"g{j}" for j in range(200))], counts)
    assert main(["tasks", "import-counts", str(tmp_path / "mine.csv")]) == 0
    assert "scrna-mine: 30 scored items" in capsys.readouterr().out
    task = resolve_task("scrna-mine")
    assert task.spec.metric == "mse_norm" and len(task.item_ids) == 30
    write(tmp_path / "bad.csv", ["cell", "g0", "g1"], np.array([[1.0, -2.0]]))
    assert main(["tasks", "import-counts", str(tmp_path / "bad.csv")]) == 1
    assert "bad.csv" in capsys.readouterr().err


def write_h5ad(path, counts: np.ndarray, layout: str) -> None:
    """counts in AnnData's on-disk layout (encoding-type attributes, obs/var `_index`), as X
    (dense or CSR), or as raw/X (CSC) beside a normalised X."""
    h5py = pytest.importorskip("h5py")
    strings = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        for group, names in (("obs", [f"c{i}" for i in range(counts.shape[0])]),
                             ("var", [f"g{j}" for j in range(counts.shape[1])])):
            g = f.create_group(group)
            g.attrs["_index"] = "_index"
            g.create_dataset("_index", data=np.array(names, dtype=object), dtype=strings)
        if layout == "dense":
            f.create_dataset("X", data=counts)
            return
        m = counts if layout == "csr" else counts.T
        rows, cols = np.nonzero(m)
        target = f.create_group("X" if layout == "csr" else "raw/X")
        target.attrs["encoding-type"] = "csr_matrix" if layout == "csr" else "csc_matrix"
        target.attrs["shape"] = counts.shape
        target.create_dataset("data", data=m[rows, cols])
        target.create_dataset("indices", data=cols)
        target.create_dataset("indptr", data=np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m.shape[0]))]))
        if layout == "csc":
            f.create_dataset("X", data=np.log1p(counts))  # normalised; the raw counts are in raw/X
            f.copy(f["var"], "raw/var")


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
def test_h5ad_counts_are_read_from_anndatas_layout(tmp_path, layout):
    from sia.tasks.scrna_denoise.data import load_counts

    counts, _ = simulate_counts(12, 40, seed=2)
    write_h5ad(tmp_path / "x.h5ad", counts, layout)
    got = load_counts(tmp_path / "x.h5ad")
    assert np.array_equal(got.X, counts) and got.cells[3] == "c3" and got.genes[-1] == "g39"


def test_import_counts_reads_an_h5ad_and_refuses_normalised_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    counts, _ = simulate_counts(20, 100, seed=3)
    write_h5ad(tmp_path / "pbmc.h5ad", counts, "csr")
    assert main(["tasks", "import-counts", str(tmp_path / "pbmc.h5ad")]) == 0
    assert resolve_task("scrna-pbmc").item_ids[:2] == ["c0", "c1"]
    write_h5ad(tmp_path / "norm.h5ad", np.log1p(counts), "dense")
    assert main(["tasks", "import-counts", str(tmp_path / "norm.h5ad")]) == 1
    assert "counts must be integers" in capsys.readouterr().err


def test_a_completions_reward_is_its_denoisers_score_on_the_feedback_tier(task):
    """The reward path of the weights lever (GRPO) on a task with no answer key: the completion's
    `denoise` replaces the reference agent's, runs in the sandbox on the feedback cells and is
    scored by the folder's evaluator, whose guards zero a gamed output."""
    from sia.config import SandboxLimits
    from sia.sandbox.runner import SubprocessSandbox
    from sia.tasks.base import TaskError

    def reward(completion, item=None):
        return task.completion_reward(completion, item, sandbox=SubprocessSandbox(), limits=SandboxLimits(),
                                      python=sys.executable)

    knn = reward("A smoother:\n\n```python\n" + KNN_DENOISE + "```\n")
    assert knn > 0.01  # kNN smoothing beats returning the counts (mse_norm 0) on grouped cells
    identity = "```python\ndef denoise(counts):\n    return counts.astype(float)\n```"
    assert reward(identity) == pytest.approx(0.0, abs=1e-9)
    negative = "```python\ndef denoise(counts):\n    return -counts.astype(float)\n```"
    for bad in ("I would smooth the counts.", "```python\ndef denoise(counts) return 1\n```", negative):
        assert reward(bad) == 0.0, bad
    # sharpening wins mse_norm here too, but its output is a transform of each cell's own counts:
    # past own_count_r2's bound, so no reward (the weights lever is not trained towards it)
    sharpen = "```python\n" + SHARPEN_DENOISE + "```"
    assert reward(sharpen) == 0.0 and task.guards[1].name == "own_count_r2"
    unguarded = type(task)(task.root, task.spec.model_copy(update={"guards": []}), task.item_table, task.item_ids,
                           task.reference_agent)
    assert unguarded.completion_reward(sharpen, None, sandbox=SubprocessSandbox(), limits=SandboxLimits(),
                                       python=sys.executable) > 0.01
    feedback, selection = task.splits()["feedback"], task.splits()["selection"]
    assert reward("```python\n" + KNN_DENOISE + "```", feedback[0]["id"]) != 0.0
    with pytest.raises(TaskError, match="not a feedback item"):
        reward("```python\n" + KNN_DENOISE + "```", selection[0]["id"])
