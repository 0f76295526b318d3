"""Rewards for the weights lever's reinforcement methods (GRPO, entropic), computed in the training
process from the task's own scoring, never from selection or test items.

A training row names its prompt's item and how to score a completion of it (`reward_spec`, JSON):

- `{"kind": "label", "gold": G, "response_format": F}`: a classification item. The completion's answer
  is read the way the call asked for it (the single field of a JSON-schema object, or the plain text)
  and scores 1 when it is the gold label, else 0 (the task's top-1 scorer).
- `{"kind": "task", "item_id": I}`: a task with no answer key (`tasks.base.RewardedTask`, e.g. TriMul):
  the task runs whatever program the completion holds in the sandbox, on feedback-tier inputs only
  (item I's, the item the call was recorded for).

`RewardBook` caches every reward by (prompt, completion), so a repeated sample is not scored again,
and appends each new one to a JSONL file in the training folder: a resumed run reuses what a killed
one scored, and the parent copies the file into run.db (`rewards` table) so a run shows what the
model was rewarded for.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from sia.files import read_jsonl
from sia.finetune.records import answer_field

REWARDS_NAME = "rewards.jsonl"
TaskReward = Callable[[str, "str | None"], float]  # (completion, item id) -> reward


def prompt_key(messages: list[dict]) -> str:
    """A short stable hash of a prompt's messages (role and content only)."""
    plain = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    return hashlib.sha256(json.dumps(plain, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def answer_of(response_format: dict | None, completion: str) -> str | None:
    """The answer in a completion, read as the call asked for it: the single string field of a JSON
    object schema (the first JSON object in the text), else the stripped text. None: unreadable."""
    if field := answer_field(response_format):
        name = field[0]
        start = completion.find("{")
        if start < 0:
            return None
        try:
            value, _ = json.JSONDecoder().raw_decode(completion[start:])
        except ValueError:
            return None
        answer = value.get(name) if isinstance(value, dict) else None
        return answer.strip() if isinstance(answer, str) else None
    return completion.strip() or None


def label_reward(response_format: dict | None, completion: str, gold: str) -> float:
    """1.0 when the completion's answer is exactly the gold label, else 0.0 (top-1 accuracy)."""
    return float(answer_of(response_format, completion) == gold)


def completion_text(completion) -> str:
    """TRL hands conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


class RewardBook:
    """The reward function handed to the trainer: scores completions, caches and records them.

    `task_reward` scores `{"kind": "task"}` rows (None: such rows are refused). `allowed_items`: the
    item tags rows may name (the feedback and rollout items the dataset was built from); a row
    naming any other item raises, so a selection or test item can never be rewarded."""

    __name__ = "task_reward"  # TRL logs each reward function under its name

    def __init__(self, path: Path, allowed_items: set[str], task_reward: TaskReward | None = None,
                 method: str = "grpo") -> None:
        self.path = Path(path)
        self.allowed_items = set(allowed_items)
        self.task_reward = task_reward
        self.method = method
        self.cache: dict[tuple[str, str], float] = {}
        self.scored = self.reused = 0
        self.by_step: dict[int, list[float]] = {}  # every reward handed out, cached or not, per trainer step
        self._lock = threading.Lock()
        for row in read_rewards(self.path):  # what a killed run already scored
            try:
                self.cache[(row["prompt_sha"], row["completion"])] = float(row["reward"])
            except (ValueError, TypeError):
                continue

    def score(self, spec: dict, item: str | None, completion: str) -> float:
        if item is not None and item not in self.allowed_items:
            raise ValueError(f"reward asked for item {item!r}, which is not a feedback or rollout item of this dataset")
        if spec.get("kind") == "label":
            return label_reward(spec.get("response_format"), completion, str(spec["gold"]))
        if spec.get("kind") == "task" and self.task_reward is not None:
            return float(self.task_reward(completion, spec.get("item_id")))
        raise ValueError(f"no way to score a row with reward_spec {spec!r:.80}")

    def __call__(self, prompts, completions, reward_spec, item, trainer_state=None, **_) -> list[float]:
        rewards = []
        step = getattr(trainer_state, "global_step", None)
        for prompt, completion, spec_json, tag in zip(prompts, completions, reward_spec, item):
            text = completion_text(completion)
            key = (prompt_key(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]), text)
            with self._lock:
                cached = self.cache.get(key)
            if cached is not None:
                self.reused += 1
                rewards.append(cached)
                continue
            reward = self.score(json.loads(spec_json), tag or None, text)
            with self._lock:
                self.cache[key] = reward
                self.scored += 1
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"prompt_sha": key[0], "item": tag or None, "completion": text,
                                             "reward": reward, "step": step, "method": self.method},
                                            ensure_ascii=False) + "\n")
            rewards.append(reward)
        self.by_step.setdefault(step or 0, []).extend(rewards)
        return rewards

    def mean_by_step(self) -> list[float]:
        """The mean raw reward of the completions sampled at each step (entropic's logged reward is tilted)."""
        return [round(sum(v) / len(v), 4) for _, v in sorted(self.by_step.items())]


def read_rewards(path: Path) -> list[dict]:
    """The recorded rewards of a training folder (lines cut by a kill are skipped)."""
    return [row for row in read_jsonl(path) if {"prompt_sha", "completion", "reward"} <= row.keys()]
