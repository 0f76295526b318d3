"""The reinforcement side of `finetune.train_lora`: TRL's GRPOTrainer with LoRA, rewarded by the
task's own scoring (`finetune.rewards`), and its entropic variant. Imported only in the training
process (it imports torch and TRL).

GRPO samples `num_generations` completions per prompt and gives each the advantage
(r - mean(group)) / std(group). Entropic advantage weighting (the paper's variant) tilts the group
instead: w_i = G * softmax(r / tau)_i, and the advantage is w_i - 1 (TRL's group mean of w is 1, and
the std scaling is off), so the best completions of a group get nearly all the push when tau is small
and a group whose rewards are all equal gets none. On a CPU TRL generates with `model.generate`;
Unsloth's GRPO path needs a GPU and is used there.
"""

from __future__ import annotations

import json
from pathlib import Path

from sia.config import FinetuneConfig, SandboxLimits
from sia.finetune.rewards import REWARDS_NAME, RewardBook, TaskReward

REWARD_TASK_NAME = "reward_task.json"  # written by the parent when rows need the task to score them


def task_reward_from(out: Path) -> TaskReward | None:
    """The task's `completion_reward`, run through a sandbox, as described by OUT/reward_task.json
    ({"task": name or folder, "limits": SandboxLimits, "python": interpreter, "record_dir": the run's
    sandbox records}); None without it."""
    spec_path = out / REWARD_TASK_NAME
    if not spec_path.is_file():
        return None
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    from sia.sandbox.runner import SubprocessSandbox
    from sia.tasks.registry import resolve_task

    task = resolve_task(spec["task"])
    if not hasattr(task, "completion_reward"):
        raise ValueError(f"task {spec['task']!r} cannot score single completions (no completion_reward); "
                         "use finetune.method 'sft'")
    limits = SandboxLimits.model_validate(spec.get("limits") or {})
    # The run's record folder: what a killed training leaves behind is swept when the run resumes.
    sandbox = SubprocessSandbox(record_dir=Path(spec["record_dir"]) if spec.get("record_dir") else out / "sandboxes")

    def reward(completion: str, item: str | None) -> float:
        return task.completion_reward(completion, item, sandbox=sandbox, limits=limits, python=spec["python"])

    return reward


class _PlainLogProb:
    """What TRL's fused LM head computes (per-token log-probabilities of the labels, and the entropy),
    in plain PyTorch. TRL 1.15's GRPOTrainer always goes through a Triton kernel for this, which
    fails without a GPU ("0 active drivers"); for a 135M model the full logits of a batch fit
    easily in CPU memory. Same signature as `trl.kernels.ChunkedLogProbFunction.apply`."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs):
        import torch

        logits = torch.nn.functional.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
        logits = logits * logit_scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        log_p = (logits / temperature).log_softmax(-1)
        chosen = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        sum_sq = torch.logsumexp(2 * log_p, -1) if "log_sum_sq_probs" in outputs else None
        mean = (logits / temperature).mean(-1) if "mean_logits" in outputs else None
        top1 = (chosen >= log_p.max(-1).values) if "is_top1" in outputs else None
        return chosen, entropy, sum_sq, mean, top1


def call_schema(response_format: dict | None) -> dict | None:
    """The JSON schema a recorded call's answer had to follow (as the gateway reads it), or None."""
    if not response_format or response_format.get("type") == "text":
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    return (response_format.get("json_schema") or {}).get("schema")


def _constrained(trainer_cls, tokenizer):
    """GRPO whose samples obey each call's response format, as the gateway's decoding does when
    the adapter is served: a free sample of a 135M model asked for a JSON label is almost never one,
    so every reward would be 0 and nothing would be learned. The grammar is the gateway's own
    (xgrammar through `gateway.engine`); the loss still uses the model's unconstrained log-probabilities."""
    import transformers

    from sia.gateway.engine import Engine, _GrammarMask

    class ConstrainedGRPOTrainer(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            # Row i of the generation batch is inputs[i] (TRL keeps the order), so its schema is known.
            self._row_schemas = [call_schema(json.loads(x["reward_spec"]).get("response_format")) for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _constrain_generation(self):
            model = self.accelerator.unwrap_model(self.model)
            engine = Engine(model, tokenizer, "grpo")
            plain_generate = model.generate

            def generate(*args, **kwargs):
                schemas = getattr(self, "_row_schemas", None) or []
                if any(schemas):
                    rows = kwargs["input_ids"].shape[0]
                    grammars = [engine.grammar(s) if s else None for s in schemas][:rows]
                    mask = _GrammarMask(grammars, model.config.vocab_size, tokenizer.eos_token_id, tokenizer,
                                        [self.max_completion_length] * rows, finish_forced=False)
                    kwargs["logits_processor"] = transformers.LogitsProcessorList([mask])
                return plain_generate(*args, **kwargs)

            model.generate = generate

    return ConstrainedGRPOTrainer


def _entropic(trainer_cls, tau: float, group: int):
    import torch

    class EntropicGRPOTrainer(trainer_cls):
        """GRPO whose group rewards are replaced by their exponential tilt before the advantages."""

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            grouped = rewards.view(-1, group, rewards.shape[1])
            return (torch.softmax(grouped / tau, dim=1) * group).view_as(rewards)

    return EntropicGRPOTrainer


def reward_trainer(model, tokenizer, peft_config, rows: list[dict], out: Path, config: FinetuneConfig,
                   args_common: dict, callback):
    """(trainer, reward book) for `config.method` in grpo/entropic, training on `rows` ({"prompt",
    "item", "reward_spec"}) with checkpoints in OUT/trainer."""
    import torch
    import trl.trainer.utils
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if not torch.cuda.is_available():
        trl.trainer.utils._ChunkedLogProbFunction = _PlainLogProb

    book = RewardBook(out / REWARDS_NAME, {row["item"] for row in rows if row["item"]},
                      task_reward_from(out), method=config.method)
    args = GRPOConfig(
        **args_common, num_generations=config.num_generations, max_completion_length=config.max_completion_length,
        temperature=config.temperature, beta=config.kl_beta,
        scale_rewards="none" if config.method == "entropic" else "group",
        log_completions=False,
    )
    trainer_cls = _constrained(GRPOTrainer, tokenizer)
    if config.method == "entropic":
        trainer_cls = _entropic(trainer_cls, config.entropic_tau, config.num_generations)
    trainer = trainer_cls(model=model, reward_funcs=[book], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
    trainer._constrain_generation()
    return trainer, book
