"""scrna-denoise as a loop task: an SIA task folder whose agents write a denoising program's
output; its evaluator agrees with the standalone scorer, rejects gamed outputs, and the real
loop reaches generation 2 with a scripted code-writing LLM."""

from __future__ import annotations

import csv
import json
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


def knn_agent() -> str:
    src = REFERENCE_AGENT.read_text()
    return src[: src.index("def denoise")] + KNN_DENOISE + src[src.index("def read_counts"):]


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
    rewrite = "```python\n" + knn_agent() + "```"
    meta = scripted_llm(["```python\n" + REFERENCE_AGENT.read_text() + "```"], can_write_code=True)
    svc = fake_services(tmp_path, "sc", meta, [json.dumps({"diagnosis": "no denoising at all", "lever": "scaffold"}),
                                               rewrite], feedback_writes_code=True)
    try:
        out = run_graph(svc, SIAInput(run_id="sc", task=str(task.root), max_generations=2, policy="llm"))
    finally:
        shutdown(svc)
    h = out["history"]
    assert [g.generation for g in h] == [1, 2] and h[1].lever == "scaffold" and h[1].accepted
    assert h[0].selection == pytest.approx(0.0, abs=1e-12) and h[0].test == pytest.approx(0.0, abs=1e-12)
    assert h[1].selection > 0.02 and h[1].test > 0.02  # kNN smoothing beats no denoising on every tier
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
    feedback, selection = task.splits()["feedback"], task.splits()["selection"]
    assert reward("```python\n" + KNN_DENOISE + "```", feedback[0]["id"]) != 0.0
    with pytest.raises(TaskError, match="not a feedback item"):
        reward("```python\n" + KNN_DENOISE + "```", selection[0]["id"])
