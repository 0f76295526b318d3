"""The run directory OUT of `finetune.train_lora`: which checkpoint to resume, and the adapter swap.

Layout: OUT/trainer/checkpoint-N (Hugging Face trainer checkpoints) and OUT/trainer/run_fingerprint.json
(hash of dataset, base and the hyper-parameters that change what is learned), OUT/adapter (final PEFT
adapter), OUT/train_summary.json, OUT/.train.lock (one training process per OUT at a time).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import IO

from sia.config import FinetuneConfig
from sia.files import replacing_dir

CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt")
FINGERPRINT_FILE = "run_fingerprint.json"
# Fields that change what is learned; a checkpoint made under other values is not resumed.
FINGERPRINT_FIELDS = (
    "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "epochs",
    "max_steps", "batch_size", "grad_accum", "max_length", "seed",
)


def fingerprint(dataset: Path, base: Path, config: FinetuneConfig) -> str:
    """Identity of a training run: checkpoints resume only into a run with the same one."""
    digest = hashlib.sha256(dataset.read_bytes())
    picked = {name: getattr(config, name) for name in FINGERPRINT_FIELDS}
    digest.update(json.dumps([str(base.resolve()), picked], sort_keys=True).encode())
    return digest.hexdigest()


def _complete_checkpoint(path: Path) -> int | None:
    """Step of a checkpoint whose files were all written (trainer_state.json comes last), else None."""
    if not all((path / name).is_file() for name in CHECKPOINT_FILES):
        return None
    try:
        return int(json.loads((path / "trainer_state.json").read_text())["global_step"])
    except (ValueError, KeyError, OSError):
        return None


def prepare_resume(trainer_dir: Path, run_id: str) -> tuple[Path | None, int | None]:
    """(path, step) of the latest complete checkpoint made for `run_id` (a `fingerprint`), or
    (None, None). Checkpoints of another run and half-written ones are deleted."""
    marker = trainer_dir / FINGERPRINT_FILE
    if trainer_dir.exists() and (not marker.is_file() or marker.read_text().strip() != run_id):
        if any(trainer_dir.glob("checkpoint-*")):
            print(f"train_lora: {trainer_dir} holds checkpoints of another dataset/config; starting over",
                  file=sys.stderr)
        shutil.rmtree(trainer_dir)
    trainer_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id)
    best: tuple[Path | None, int | None] = (None, None)
    for path in trainer_dir.glob("checkpoint-*"):
        step = _complete_checkpoint(path)
        if step is None:
            # Half-written when the process was killed; the trainer would choke on it.
            shutil.rmtree(path, ignore_errors=True)
        elif best[1] is None or step > best[1]:
            best = (path, step)
    return best


def save_adapter_atomically(model, target: Path) -> None:
    """Write the adapter next to `target`, then swap it in with renames (no half-written adapter)."""
    with replacing_dir(target) as tmp:
        model.save_pretrained(str(tmp))


def lock_run_dir(out: Path) -> IO[str] | None:
    """Exclusive lock on OUT held while the returned file stays open; None if another process holds it."""
    handle = (out / ".train.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel drops it even on SIGKILL
    except BlockingIOError:
        handle.close()
        return None
    for stale in out.glob(".adapter.*-*"):  # replacing_dir's siblings, left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    return handle
