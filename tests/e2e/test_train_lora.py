"""End to end: LoRA SFT of the embedded SmolLM2-135M through SubprocessTrainer (real model, CPU).

The slow tests take about 20 s and 45 s on 2 cores; select them with `-m slow`, skip with `-m "not slow"`.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sia.config import FinetuneConfig
from sia.finetune.trainer import SubprocessTrainer, TrainingFailed

NAMES = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi",
         "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil"]
COLOURS = ["RED", "BLUE", "GREEN", "PURPLE"]


def write_dataset(path: Path, n: int = 16) -> Path:
    with path.open("w") as handle:
        for i, name in enumerate(NAMES[:n]):
            row = {
                "messages": [
                    {"role": "system", "content": "Answer with the favourite colour only."},
                    {"role": "user", "content": f"What is {name}'s favourite colour?"},
                ],
                "completion": COLOURS[i % len(COLOURS)],
            }
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def base_dir() -> Path:
    from sia.gateway.model_store import safetensors_dir

    return safetensors_dir()


def _complete_checkpoint_exists(trainer_dir: Path) -> bool:
    return any((p / "trainer_state.json").is_file() for p in trainer_dir.glob("checkpoint-*"))


@pytest.mark.slow
def test_train_writes_adapter_that_changes_logits(tmp_path, base_dir):
    dataset = write_dataset(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    events: list[dict] = []

    summary = SubprocessTrainer(timeout_s=300).train(
        dataset, base_dir, out, FinetuneConfig(max_steps=4, precision="fp32"), on_event=events.append
    )

    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert summary == json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4 and len(summary["loss_history"]) == 4
    assert summary["backend"] in ("unsloth", "trl") and summary["resumed_from_step"] is None
    classes = summary["trainer_classes"]  # whose trainer ran: Unsloth swaps TRL's on import
    assert classes[-1] == "transformers.trainer.Trainer" and any(c.endswith("SFTTrainer") for c in classes)
    assert summary["examples"] == 16 and summary["precision"] == "fp32"
    assert 0 < summary["trained_tokens"] < summary["tokens"] / 2, "prompt tokens must be masked out"
    steps = [e for e in events if e["event"] == "train_step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(e["max_steps"] == 4 and e["loss"] > 0 for e in steps)
    assert events[-1]["event"] == "done"
    assert summary["loss_history"][-1] < summary["loss_history"][0]

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is Grace's favourite colour?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = model(**prompt).logits
        tuned = PeftModel.from_pretrained(model, adapter).eval()
        tuned_logits = tuned(**prompt).logits
    assert (tuned_logits - base_logits).abs().max().item() > 1e-2


@pytest.mark.slow
def test_sigkilled_training_resumes_from_checkpoint(tmp_path, base_dir):
    dataset = write_dataset(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    config = FinetuneConfig(max_steps=12, save_steps=2)
    trainer = SubprocessTrainer(timeout_s=300)
    killed_at: list[int] = []

    def kill_after_first_checkpoint(event: dict) -> None:
        # Checkpoint N is written just after step N is logged; seeing a later step proves it is complete.
        if event["event"] == "train_step" and not killed_at and _complete_checkpoint_exists(out / "trainer"):
            killed_at.append(event["step"])
            os.kill(trainer.process.pid, signal.SIGKILL)

    with pytest.raises(TrainingFailed) as failure:
        trainer.train(dataset, base_dir, out, config, on_event=kill_after_first_checkpoint)
    assert failure.value.returncode == -signal.SIGKILL
    assert "SIGKILL" in failure.value.reason
    assert killed_at and killed_at[0] < 12
    assert not (out / "adapter").exists() and not (out / "train_summary.json").exists()

    events: list[dict] = []
    summary = trainer.train(dataset, base_dir, out, config, on_event=events.append)

    assert summary["resumed_from_step"] is not None and 0 < summary["resumed_from_step"] <= killed_at[0]
    assert summary["steps"] == 12 and len(summary["loss_history"]) == 12
    steps = [e["step"] for e in events if e["event"] == "train_step"]
    assert steps == list(range(summary["resumed_from_step"] + 1, 13))
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

    # Optimizer, scheduler, RNG and data order all come back: the losses match an uninterrupted run.
    straight = trainer.train(dataset, base_dir, tmp_path / "straight", config)
    assert straight["resumed_from_step"] is None
    assert summary["loss_history"] == pytest.approx(straight["loss_history"], rel=1e-3)


@pytest.mark.slow
def test_unsloth_import_failure_falls_back_to_trl_and_says_so(tmp_path, base_dir):
    fake = tmp_path / "fake" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("simulated broken unsloth")\n')
    dataset = write_dataset(tmp_path / "train.jsonl", n=8)
    trainer = SubprocessTrainer(timeout_s=300, extra_env={"PYTHONPATH": str(fake.parent)})

    summary = trainer.train(dataset, base_dir, tmp_path / "run", FinetuneConfig(max_steps=1))
    assert (summary["backend"], summary["backend_requested"]) == ("trl", "unsloth")
    assert "simulated broken unsloth" in summary["fallback_reason"]
    assert not any("unsloth" in c.lower() for c in summary["trainer_classes"])

    with pytest.raises(TrainingFailed, match="simulated broken unsloth"):
        trainer.train(dataset, base_dir, tmp_path / "strict", FinetuneConfig(max_steps=1, allow_fallback=False))


def test_malformed_rows_are_dropped_and_named_when_too_few_remain(tmp_path, base_dir):
    # A bad row is dropped, not fatal (one call of a hostile agent must not disable the weights
    # lever); when too few rows remain, the error names the file and the first dropped row.
    dataset = write_dataset(tmp_path / "train.jsonl", n=6)
    lines = dataset.read_text().splitlines()
    lines[3] = json.dumps({"messages": [{"role": "user", "content": "hi"}]})  # no completion
    dataset.write_text("\n".join(lines) + "\n")

    with pytest.raises(TrainingFailed) as failure:
        SubprocessTrainer(timeout_s=60).train(dataset, base_dir, tmp_path / "run", FinetuneConfig(min_examples=6))
    assert failure.value.returncode == 2
    assert f"{dataset} line 4" in failure.value.reason and "completion" in failure.value.reason


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_dataset_is_refused(tmp_path, base_dir, content):
    dataset = tmp_path / "empty.jsonl"
    dataset.write_text(content)
    with pytest.raises(TrainingFailed, match="dataset is empty"):
        SubprocessTrainer(timeout_s=60).train(dataset, base_dir, tmp_path / "run", FinetuneConfig())


def test_too_small_dataset_is_refused(tmp_path, base_dir):
    dataset = write_dataset(tmp_path / "small.jsonl", n=3)
    with pytest.raises(TrainingFailed, match="only 3 example"):
        SubprocessTrainer(timeout_s=60).train(dataset, base_dir, tmp_path / "run", FinetuneConfig(min_examples=4))


@pytest.mark.slow
def test_bf16_training_and_serving(tmp_path, base_dir):
    """bfloat16 autocast training keeps float32 LoRA weights and learns; the gateway's bf16
    engine serves the same greedy answer as float32."""
    import torch
    from safetensors.torch import load_file

    from sia.gateway.model_store import load_model

    summary = SubprocessTrainer(timeout_s=300).train(
        write_dataset(tmp_path / "train.jsonl"), base_dir, tmp_path / "run", FinetuneConfig(max_steps=4, precision="bf16"))
    assert summary["precision"] == "bf16" and summary["steps"] == 4
    assert summary["loss_history"][-1] < summary["loss_history"][0]
    adapter = tmp_path / "run" / "adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())

    served = {}
    for precision in ("fp32", "bf16"):
        model, tokenizer = load_model(base_dir, adapter, precision)
        assert {p.dtype for p in model.parameters()} == {torch.float32 if precision == "fp32" else torch.bfloat16}
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is Grace's favourite colour?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            served[precision] = model(**prompt).logits[0, -1].float()
    assert served["fp32"].argmax() == served["bf16"].argmax()
    assert torch.nn.functional.cosine_similarity(served["fp32"], served["bf16"], dim=0) > 0.99
