"""End to end with the real embedded model (SmolLM2-135M through our gateway), the real
sandbox and real LoRA training, on a tiny task: one scaffold step and one fine-tune step."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sia.config import RunConfig
from sia.graph.state import SIAInput
from sia.nodes.services import Services
from tests.fakes import make_tiny_task, run_graph, shutdown

pytestmark = pytest.mark.slow


def test_embedded_model_scaffold_and_finetune(tmp_path):
    task = make_tiny_task(tmp_path / "task", n_labels=3, per_label=8, test_per_label=2)
    config = RunConfig.model_validate({
        "runs_dir": str(tmp_path / "runs"), "rollout_items": 6,
        "finetune": {"max_steps": 2, "batch_size": 4, "save_steps": 1, "min_examples": 2, "max_length": 512},
        "sandbox": {"wall_timeout_s": 300}})
    svc = Services.build(config, "e2e")
    try:
        final = run_graph(svc, SIAInput(run_id="e2e", task=str(task), max_generations=3, policy="alternate"))
    finally:
        shutdown(svc)
    history = final["history"]
    assert [h.lever for h in history] == ["meta", "scaffold", "weights"]
    assert history[0].accepted and history[0].test is not None
    root = tmp_path / "runs" / "e2e"
    gen2 = root / "gen_2"
    if history[1].selection is not None:  # the rewrite was validated and evaluated
        assert (gen2 / "diff.patch").read_text().count("\n+ ") + (gen2 / "diff.patch").read_text().count("\n+") >= 1
        assert (gen2 / "improvement.md").exists()
    summary = json.loads((root / "adapters" / "gen_3" / "train_summary.json").read_text())
    assert summary["backend"] in ("unsloth", "trl") and summary["steps"] == 2
    assert (root / "adapters" / "gen_3" / "adapter" / "adapter_config.json").exists()
    assert history[2].selection is not None  # the adapter was served by the gateway and scored
    db = sqlite3.connect(root / "run.db")
    tagged = db.execute("select count(*) from model_calls where purpose='task' and item is not null").fetchone()[0]
    joined = db.execute("select count(*) from model_calls c join item_results r on r.tag = c.item "
                        "where c.purpose='task'").fetchone()[0]
    assert tagged > 0 and joined == tagged
    adapter_calls = db.execute("select count(*) from model_calls where adapter='adapters/gen_3'").fetchone()[0]
    assert adapter_calls > 0
    rows = [json.loads(line) for line in (root / "adapters" / "gen_3" / "dataset.jsonl").read_text().splitlines()]
    assert rows and all(r["messages"] and r["completion"] for r in rows)
