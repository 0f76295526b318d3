"""LoRA training (SFT, or GRPO/entropic from rewards: `finetune.grpo`) in its own process: `python -m sia.finetune.train_lora --dataset D.jsonl --base MODEL_DIR
--out OUT [--config CONFIG.json]`.

Stdout carries only JSON event lines (`start`, `loaded`, `train_begin`, `train_step`, `done`,
`error`); everything libraries print goes to stderr. Trainer checkpoints live in OUT/trainer,
and a run that finds a complete one there (same data and hyper-parameters) resumes from it, so
a process killed with SIGKILL loses at most `save_steps` steps. Results: OUT/adapter (PEFT adapter,
replaced atomically) and OUT/train_summary.json. Exit status 2 means bad input (config or
dataset), 1 a training failure; either way the last stderr line says why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from sia.config import FinetuneConfig, describe_errors
from sia.files import write_json_atomic
from sia.finetune.dataset import DatasetError, load_sft_rows
from sia.finetune.rundir import fingerprint, lock_run_dir, prepare_resume, save_adapter_atomically


class _Events:
    """JSON lines on the real stdout; fd 1 itself is pointed at stderr so library prints stay off it."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)

    def emit(self, event: str, **fields) -> None:
        self._stream.write(json.dumps({"event": event, **fields}) + "\n")


def _fail(events: _Events, message: str, code: int) -> NoReturn:
    events.emit("error", message=message)
    print(f"train_lora: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _import_backend(config: FinetuneConfig, events: _Events) -> tuple[str, str | None]:
    """Import Unsloth first when asked (it patches trl/transformers on import)."""
    if config.backend != "unsloth":
        return "trl", None
    if config.method in ("grpo", "entropic"):
        import torch

        if not torch.cuda.is_available():  # not even imported: its patches would reach TRL's GRPOTrainer
            reason = "Unsloth's GRPO path needs a GPU; TRL's GRPOTrainer with PEFT trains on the CPU"
            print(f"train_lora: {reason}", file=sys.stderr)
            return "trl", reason
    try:
        import unsloth  # noqa: F401
    except Exception as error:  # unsloth raises many kinds on a broken install
        reason = f"import unsloth failed: {type(error).__name__}: {error}".splitlines()[0]
        if not config.allow_fallback:
            _fail(events, reason, 1)
        print(f"train_lora: {reason}; falling back to trl+peft", file=sys.stderr)
        return "trl", reason
    return "unsloth", None


def _load_unsloth(base: Path, config: FinetuneConfig):
    import torch
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(base), max_seq_length=config.max_length, dtype=torch.float32, load_in_4bit=False,
        use_gradient_checkpointing=config.gradient_checkpointing,
    )
    model = FastLanguageModel.get_peft_model(
        model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", random_state=config.seed,
        # CPU Unsloth turns checkpointing on unless told otherwise.
        use_gradient_checkpointing=config.gradient_checkpointing,
    )
    return model, tokenizer, None


def _load_trl(base: Path, config: FinetuneConfig):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(base), padding_side="right")
    peft_config = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    return model, tokenizer, peft_config


def _plain_loss_trainer(sft_trainer_cls):
    """SFTTrainer whose loss is the model's own cross entropy over `labels`.

    TRL 1.15 always computes the SFT loss through a Triton kernel (`fused_lm_head=True`); on a
    machine without a GPU that fails with "RuntimeError: 0 active drivers". Unsloth's CPU backend
    reroutes it itself, so this is only needed for the plain trl backend. Prompt tokens are
    already -100 in `labels`, so completion-only masking is unchanged.
    """
    from transformers import Trainer

    class PlainLossSFTTrainer(sft_trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    return PlainLossSFTTrainer


def _align_special_tokens(model, tokenizer) -> None:
    # The GGUF-derived tokenizer names <|im_start|> as EOS while the model config says <|im_end|>;
    # TRL would otherwise rewrite the model config to the tokenizer's value and warn.
    for attr in ("eos_token", "pad_token"):
        wanted = getattr(model.config, f"{attr}_id", None)
        if isinstance(wanted, int) and getattr(tokenizer, f"{attr}_id") != wanted:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(wanted))


def _make_callback(events: _Events, timings: list[float]):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """One `train_step` event per logging step, plus per-step wall times for benchmarks."""

        def __init__(self) -> None:
            self._started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            events.emit("train_begin", step=state.global_step, max_steps=state.max_steps)

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timings.append(time.perf_counter() - self._started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                events.emit(
                    "train_step", step=state.global_step, loss=float(logs["loss"]), max_steps=state.max_steps,
                    epoch=state.epoch, learning_rate=logs.get("learning_rate"),
                    step_s=round(timings[-1], 3) if timings else None,
                )

    return ProgressCallback()


def _trainer_classes(trainer) -> list[str]:
    names = [f"{c.__module__}.{c.__qualname__}" for c in type(trainer).__mro__]
    last = "transformers.trainer.Trainer"
    return names[: names.index(last) + 1] if last in names else names[:4]


def _reward_summary(book) -> dict:
    """Mean sampled reward per generation step of this process, and how many rewards were scored."""
    return {"reward_history": book.mean_by_step(), "rewards_scored": book.scored, "rewards_reused": book.reused}


def train(dataset: Path, base: Path, out: Path, config: FinetuneConfig, events: _Events) -> dict:
    started = time.time()
    rewarded = config.method in ("grpo", "entropic")
    try:
        rows = load_sft_rows(dataset, config.min_examples, rewards=rewarded)
    except DatasetError as error:
        _fail(events, str(error), 2)
    if not (base / "config.json").is_file():
        _fail(events, f"{base}: not a model directory (no config.json)", 2)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(out)
    if lock is None:
        _fail(events, f"{out}: another training run is using this directory", 2)
    trainer_dir = out / "trainer"
    checkpoint, resumed_step = prepare_resume(trainer_dir, fingerprint(dataset, base, config))

    backend, fallback_reason = _import_backend(config, events)
    import datasets
    import torch
    import transformers
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()  # stderr is a log file; bars only bloat it
    transformers.utils.logging.disable_progress_bar()
    transformers.set_seed(config.seed)
    if backend == "unsloth":
        try:
            model, tokenizer, peft_config = _load_unsloth(base, config)
        except Exception as error:
            fallback_reason = f"Unsloth could not load the model: {type(error).__name__}: {error}".splitlines()[0]
            if not config.allow_fallback:
                _fail(events, fallback_reason, 1)
            print(f"train_lora: {fallback_reason}; falling back to trl+peft", file=sys.stderr)
            backend = "trl"
            transformers.set_seed(config.seed)
    if backend == "trl":
        model, tokenizer, peft_config = _load_trl(base, config)
    _align_special_tokens(model, tokenizer)

    from sia.precision import use_bf16

    bf16 = use_bf16(config.precision)
    common = dict(
        output_dir=str(trainer_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, seed=config.seed, bf16=bf16,
        fp16=False, use_cpu=not torch.cuda.is_available(), gradient_checkpointing=config.gradient_checkpointing,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        logging_steps=1, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
    )
    timings: list[float] = []
    book = None
    if rewarded:
        from sia.finetune.grpo import reward_trainer

        trainer, book = reward_trainer(model, tokenizer, peft_config, rows, out, config, common,
                                       _make_callback(events, timings))
        used, tokens = len(rows), {}
    else:
        if backend == "trl" and not torch.cuda.is_available():
            SFTTrainer = _plain_loss_trainer(SFTTrainer)
        trainer = SFTTrainer(
            model=model, args=SFTConfig(**common, max_length=config.max_length), train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer, peft_config=peft_config, callbacks=[_make_callback(events, timings)],
        )
        used = len(trainer.train_dataset)
        if used == 0:
            _fail(events, f"{dataset}: every prompt is longer than max_length={config.max_length} tokens", 2)
        if used < len(rows):
            print(f"train_lora: {len(rows) - used} of {len(rows)} examples dropped: their prompt fills "
                  f"max_length={config.max_length} tokens", file=sys.stderr)
        labels = trainer.train_dataset["labels"]
        tokens = {"tokens": sum(map(len, labels)), "trained_tokens": sum(t != -100 for row in labels for t in row)}
    events.emit("loaded", backend=backend, method=config.method, examples=used, resumed_from_step=resumed_step,
                **tokens)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    save_adapter_atomically(trainer.model, out / "adapter")
    history = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    steady = timings[1:] if len(timings) > 1 else timings
    summary = {
        "backend": backend,
        "backend_requested": config.backend,
        "method": config.method,
        "precision": "bf16" if bf16 else "fp32",
        "fallback_reason": fallback_reason,
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": trainer.state.epoch,
        "train_loss": history[-1] if history else None,
        "loss_history": history,
        "examples": used,
        "examples_dropped": len(rows) - used,
        **tokens,  # trained_tokens < tokens: the prompt is masked out of the loss
        "wall_s": round(time.time() - started, 2),
        "resumed_from_step": resumed_step,
        # The trainer's classes down to transformers' Trainer: whether Unsloth's patched trainer
        # or TRL's own ran (Unsloth swaps TRL's classes on import, differently on CPU and GPU).
        "trainer_classes": _trainer_classes(trainer),
        "step_times_s": [round(t, 4) for t in timings],
        "mean_step_s": round(sum(steady) / len(steady), 4) if steady else None,
        "adapter_dir": str(out / "adapter"),
        **(_reward_summary(book) if book is not None else {}),
        "config": config.model_dump(),
    }
    write_json_atomic(out / "train_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sia.finetune.train_lora", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="JSONL with messages + completion rows")
    parser.add_argument("--base", type=Path, required=True, help="local model directory (safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="run directory: adapter, summary, checkpoints")
    parser.add_argument("--config", type=Path, help="FinetuneConfig as JSON (defaults when omitted)")
    opts = parser.parse_args(argv)
    events = _Events()
    events.emit("start", pid=os.getpid())
    # The base is local; stop hub look-ups from stalling on a machine without network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = FinetuneConfig.model_validate_json(opts.config.read_text(encoding="utf-8")) if opts.config else FinetuneConfig()
    except ValidationError as error:
        _fail(events, f"{opts.config}: bad config: {describe_errors(error)}", 2)
    except OSError as error:
        _fail(events, f"{opts.config}: cannot read config: {error.strerror}", 2)
    try:
        summary = train(opts.dataset, opts.base, opts.out, config, events)
    except Exception as error:  # one clear line for the parent; the traceback goes to the log above it
        import traceback

        traceback.print_exc()
        _fail(events, f"training failed: {type(error).__name__}: {error}".splitlines()[0], 1)
    events.emit("done", **{k: summary[k] for k in ("backend", "steps", "train_loss", "wall_s", "resumed_from_step")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
