"""Packaging: the root folders install as `sia.*` and nothing imports them by their folder names;
a checkpoint written before that rename still resumes; a non-editable install runs from anywhere."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.fakes import REPO, fake_config, fake_model_cache, fake_services, make_tiny_task, run_graph, shutdown

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
ROOT_FOLDERS = ("cli", "graph", "nodes", "finetune", "tasks", "checkpoints", "gateway", "sandbox")


def python_folders(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts}


def test_every_folder_with_python_files_is_a_listed_package():
    on_disk = set()
    for package, folder in PYPROJECT["package-dir"].items():
        for d in python_folders(REPO / folder):
            rel = d.relative_to(REPO / folder).parts
            on_disk.add(".".join((package, *rel)))
    assert on_disk == set(PYPROJECT["packages"]), "pyproject.toml's package list and the folders differ"
    assert set(PYPROJECT["package-dir"]) == {"sia"} | {f"sia.{f}" for f in ROOT_FOLDERS}


def test_no_module_imports_a_root_folder_by_its_bare_name():
    offenders = []
    for folder in ("sia", *ROOT_FOLDERS, "tests", "examples", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if {"hostile", "fixtures"} & set(path.parts) or path.name in ("reference_agent.py", "evaluate.py"):
                continue  # programs run in the sandbox, and the script that ran on the old code
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ROOT_FOLDERS]
    assert not offenders


def test_a_checkpoint_from_before_the_rename_resumes(tmp_path, monkeypatch):
    """`fixtures/pre_rename_run` was checkpointed by the code of 10ae1d5 (see make_pre_rename_run.py),
    stopped before its first feedback node; today's code finishes it."""
    from sia.checkpoints.saver import open_saver
    from sia.graph.state import Candidate, GenerationResult

    shutil.copytree(REPO / "tests" / "fixtures" / "pre_rename_run", tmp_path / "runs" / "old")
    checkpoint = (tmp_path / "runs" / "old" / "checkpoints.sqlite").read_bytes()
    assert b"graph.state" in checkpoint and b"sia.graph.state" not in checkpoint
    make_tiny_task(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)  # the run's paths are relative, as it was made
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    config = fake_config(tmp_path).model_copy(update={"runs_dir": Path("runs")})
    decide = json.dumps({"diagnosis": "always the first label", "lever": "scaffold"})
    svc = fake_services(tmp_path, "old", [], [decide, json.dumps({"edit": "retrieved-shots-2"})], config=config)
    saver = open_saver(svc.paths.checkpoints)
    try:
        before = saver.get_tuple({"configurable": {"thread_id": "old", "checkpoint_ns": ""}}).checkpoint
        restored = before["channel_values"]
        assert isinstance(restored["incumbent"], Candidate) and isinstance(restored["history"][0], GenerationResult)
        out = run_graph(svc, None, checkpointer=saver)
    finally:
        shutdown(svc)
        saver.conn.close()
    assert [h.generation for h in out["history"]] == [1, 2]
    assert out["history"][1].accepted and out["history"][1].selection == 1.0
    # guards came later: the old incumbent's stored items (no metrics column) are paired all the same
    assert out["history"][0].guards is None and out["history"][1].guards == "held (macro_recall)"
    assert json.loads((tmp_path / "runs" / "old" / "summary.json").read_text())["final_test"] is not None


@pytest.mark.slow
def test_a_non_editable_install_runs_from_an_unrelated_folder(tmp_path):
    """`pip install .` (a built wheel, no editable finder) into a fresh environment; its `sia run`
    works from a folder that holds no copy of the code. The dependencies come from this venv's
    site-packages through a .pth path (so the 7 GB are not installed twice); .pth files inside
    it, such as the editable install's finder, are not processed from there."""
    import sysconfig

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    env_dir = tmp_path / "env"
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "sia_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    *dist.glob("sia-*.whl")], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIA_CONFIG", "SIA_RUNS_DIR")}
    where = subprocess.run([py, "-c", "import sia.graph.graph as g; print(g.__file__)"], cwd=elsewhere, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(site)), where
    done = subprocess.run([env_dir / "bin" / "sia", "run", "--task", "lawbench-mini", "--limit", "2",
                           "--generations", "1", "--run-id", "installed"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((elsewhere / "runs" / "installed" / "summary.json").read_text())
    assert summary["generations"][0]["selection"] is not None
