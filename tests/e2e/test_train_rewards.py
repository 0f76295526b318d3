"""End to end: GRPO and entropic LoRA training of the embedded SmolLM2-135M from rewards, through
SubprocessTrainer (real model, real TRL GRPOTrainer, CPU). Short completions and two or three
steps keep each test to about a minute on 2 cores."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sia.config import FinetuneConfig
from sia.finetune.rewards import REWARDS_NAME, read_rewards
from sia.finetune.trainer import SubprocessTrainer, TrainingFailed

SYSTEMS = ["You repeat words exactly.", "Reply with the word only.", "Answer in one word.", "Be brief.",
           "You are a helpful assistant.", "Echo the word you are given.", "Say only what is asked.", "One word."]


ANSWERS = ["Yes", "No", "Maybe"]
FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "string", "enum": ANSWERS}}, "required": ["answer"]}}}


def write_prompts(path: Path) -> Path:
    """Items whose gold is "No", asked for as JSON {"answer": Yes|No|Maybe} (the call's response
    format): the base model answers "No" in about half its samples, so groups have a reward spread."""
    with path.open("w") as handle:
        for i, system in enumerate(SYSTEMS):
            handle.write(json.dumps({
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": 'Is it going to rain tomorrow? Reply as JSON {"answer": ...}.'}],
                "item": f"fb-{i}", "reward_spec": json.dumps({"kind": "label", "gold": "No", "response_format": FORMAT}),
            }) + "\n")
    return path


def config(method: str, **overrides) -> FinetuneConfig:
    settings = dict(method=method, max_steps=2, batch_size=4, num_generations=2, max_completion_length=12,
                    precision="fp32", backend="trl", learning_rate=1e-4, save_steps=1)
    return FinetuneConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def base_dir() -> Path:
    from sia.gateway.model_store import safetensors_dir

    return safetensors_dir()


@pytest.mark.slow
def test_reward_training_samples_scores_records_and_writes_an_adapter(tmp_path, base_dir, method="grpo"):
    dataset = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "run"
    events: list[dict] = []

    summary = SubprocessTrainer(timeout_s=600).train(dataset, base_dir, out, config(method), on_event=events.append)

    assert summary["method"] == method and summary["steps"] == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert len(summary["reward_history"]) == 2 and all(0 <= r <= 1 for r in summary["reward_history"])
    rewards = read_rewards(out / REWARDS_NAME)
    # 2 steps x 2 prompts x 2 samples, each scored once; a repeated sample comes from the cache.
    assert len(rewards) == summary["rewards_scored"] and summary["rewards_scored"] + summary["rewards_reused"] == 8
    assert len({(r["prompt_sha"], r["completion"]) for r in rewards}) == len(rewards)
    assert {r["item"] for r in rewards} <= {f"fb-{i}" for i in range(len(SYSTEMS))}
    assert {r["method"] for r in rewards} == {method}
    for row in rewards:
        # Sampled under the call's grammar, as the gateway serves it: without it the 135M model's free
        # samples are almost never a JSON answer, and every reward would be 0.
        answer = json.loads(row["completion"])["answer"]
        assert answer in ANSWERS
        assert row["reward"] == float(answer == "No")  # the task's own scorer: the answer against the gold
    assert {r["reward"] for r in rewards} == {0.0, 1.0}, "the base model should say No in some samples only"
    assert [e["event"] for e in events if e["event"] in ("loaded", "done")] == ["loaded", "done"]


@pytest.mark.slow
def test_sigkilled_entropic_training_resumes_from_checkpoint_and_keeps_its_rewards(tmp_path, base_dir):
    """Entropic runs GRPO's data path with its own trainer subclass: this covers both end to end."""
    dataset = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "run"
    settings = config("entropic", max_steps=3)
    trainer = SubprocessTrainer(timeout_s=600)
    killed_at: list[int] = []

    def kill_after_first_checkpoint(event: dict) -> None:
        done = any((p / "trainer_state.json").is_file() for p in (out / "trainer").glob("checkpoint-*"))
        if event["event"] == "train_step" and not killed_at and done:
            killed_at.append(event["step"])
            os.kill(trainer.process.pid, signal.SIGKILL)

    with pytest.raises(TrainingFailed):
        trainer.train(dataset, base_dir, out, settings, on_event=kill_after_first_checkpoint)
    assert killed_at and killed_at[0] < 3
    before = read_rewards(out / REWARDS_NAME)
    assert before, "rewards scored before the kill are on disk"

    summary = trainer.train(dataset, base_dir, out, settings)

    assert 0 < summary["resumed_from_step"] <= killed_at[0] and summary["steps"] == 3
    assert summary["method"] == "entropic" and len(summary["reward_history"]) >= 1
    after = read_rewards(out / REWARDS_NAME)
    assert after[:len(before)] == before
    assert len({(r["prompt_sha"], r["completion"]) for r in after}) == len(after), "a cached sample is not re-scored"


def test_a_reward_dataset_without_a_way_to_score_is_refused(tmp_path, base_dir):
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "item": "x",
                                   "reward_spec": '{"kind": "vibes"}'}) + "\n")
    with pytest.raises(TrainingFailed, match=r"bad\.jsonl.*reward_spec"):
        SubprocessTrainer(timeout_s=120).train(dataset, base_dir, tmp_path / "run", config("grpo"))

