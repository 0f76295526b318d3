"""The weights lever's method choice in the real graph on the tiny task (fakes for models and
trainer): the Feedback-Agent may name the method, `auto` keeps SFT where there is gold, reward
datasets hold only feedback and rollout prompts, and the rewards the trainer hands out land in run.db."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sia.finetune.rewards import REWARDS_NAME, RewardBook
from sia.tasks.csv_task import CsvTask
from tests.fakes import FakeTrainer, fake_config
from tests.unit.test_graph import model_cache, run, task_dir  # noqa: F401,F811  (fixtures)


def decide(lever: str, method: str | None = None) -> str:
    return json.dumps({"diagnosis": "it confuses two labels", "lever": lever, "method": method})


class RewardingTrainer(FakeTrainer):
    """A FakeTrainer that, for a reward dataset, scores one sampled completion per prompt through the
    real RewardBook (as the training process does) before writing its fake adapter."""

    def train(self, dataset: Path, base: Path, out: Path, config, on_event=None) -> dict:
        if config.method in ("grpo", "entropic"):
            rows = [json.loads(line) for line in Path(dataset).read_text().splitlines()]
            book = RewardBook(Path(out) / REWARDS_NAME, {r["item"] for r in rows}, method=config.method)
            sampled = [json.dumps({"label": json.loads(r["reward_spec"])["gold"]}) for r in rows]
            book([r["messages"] for r in rows], sampled, reward_spec=[r["reward_spec"] for r in rows],
                 item=[r["item"] for r in rows])
        return super().train(dataset, base, out, config, on_event)


def test_the_feedback_agent_can_name_entropic_and_its_rewards_are_recorded(tmp_path, task_dir):  # noqa: F811
    trainer = RewardingTrainer()
    svc, out, _ = run(tmp_path, task_dir, [decide("weights", "entropic")], trainer=trainer, feedback_writes_code=True)
    assert trainer.calls[0]["config"].method == "entropic"
    stats = json.loads((svc.paths.adapter(2) / "dataset_stats.json").read_text())
    assert stats["method"] == "entropic" and "Feedback-Agent" in stats["method_why"]
    rows = [json.loads(line) for line in (svc.paths.adapter(2) / "dataset.jsonl").read_text().splitlines()]
    assert rows and all("completion" not in r and json.loads(r["reward_spec"])["kind"] == "label" for r in rows)
    assert "(entropic)" in out["history"][1].note or "(entropic)" in out["candidate"].rationale
    assert "Training method named by the Feedback-Agent: entropic" in (svc.paths.gen(1) / "feedback.md").read_text()
    with sqlite3.connect(svc.paths.run_db) as db:
        rewarded = db.execute("select item, reward, method from rewards").fetchall()
        splits = dict(db.execute("select tag, split from item_results").fetchall())
    assert len(rewarded) == len(rows) and {m for _, _, m in rewarded} == {"entropic"}
    # Every rewarded prompt belongs to a feedback or rollout item; none to selection or test.
    assert {splits[item] for item, _, _ in rewarded} <= {"feedback", "rollout"}
    texts = (svc.paths.adapter(2) / "dataset.jsonl").read_text()
    split_rows = CsvTask.load(task_dir).splits()
    assert not [r["text"] for s in ("selection", "test") for r in split_rows[s] if r["text"] in texts]


def test_auto_keeps_sft_on_a_task_with_gold_answers(tmp_path, task_dir):  # noqa: F811
    trainer = FakeTrainer()
    svc, _, _ = run(tmp_path, task_dir, [decide("weights")], trainer=trainer, feedback_writes_code=True)
    assert trainer.calls[0]["config"].method == "sft"
    stats = json.loads((svc.paths.adapter(2) / "dataset_stats.json").read_text())
    assert stats["method"] == "sft" and stats["method_why"].startswith("auto: every training item has a gold")
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select count(*) from sqlite_master where name = 'rewards'").fetchone() == (0,)


def test_a_configured_method_is_used_when_the_feedback_agent_names_none(tmp_path, task_dir):  # noqa: F811
    trainer = RewardingTrainer()
    config = fake_config(tmp_path, finetune={"method": "grpo"})
    svc, _, _ = run(tmp_path, task_dir, [decide("weights")], trainer=trainer, config=config)
    assert trainer.calls[0]["config"].method == "grpo"
    assert json.loads((svc.paths.adapter(2) / "dataset_stats.json").read_text())["method_why"] == \
        "method 'grpo' as configured"
