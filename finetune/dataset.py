"""Reading and checking the SFT dataset file (JSONL) without importing torch.

Each row is `{"messages": [{"role": ..., "content": ...}, ...], "completion": "text"}`.
Rows become TRL's conversational prompt-completion form, `prompt` (the messages)
plus `completion` (one assistant message), for which SFTTrainer computes the loss
on the completion tokens only. A GRPO/entropic dataset has `"item"` and `"reward_spec"` (see
`finetune.rewards`) instead of a completion: the trainer samples the completions itself.

The rows come from calls the agent made (finetune.records), so one malformed row must not
cost the whole dataset: a bad row (not JSON, an unknown role, no completion, ...) is dropped,
logged and counted (`read_sft_rows` returns why each was dropped). Only a dataset left with
too few valid rows is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("system", "user", "assistant", "tool")
log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The dataset file is missing, malformed or too small; the message names file and row."""


def _check_prompt(row: object, where: str) -> list[dict]:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    prompt = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DatasetError(f"{where}: messages[{i}].role is {role!r:.60}; expected one of {list(ROLES)}")
        if not isinstance(content, str):
            raise DatasetError(f"{where}: messages[{i}].content must be a string")
        # Only role/content: extra keys would give rows different Arrow schemas.
        prompt.append({"role": role, "content": content})
    return prompt


def _check_row(row: object, where: str) -> dict:
    prompt, completion = _check_prompt(row, where), row.get("completion")
    if not isinstance(completion, str) or not completion.strip():
        raise DatasetError(f"{where}: 'completion' must be a non-empty string")
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}


@dataclass
class SftRows:
    """The valid rows of a dataset file, and one message (file, line, why) per dropped row."""

    rows: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _check_reward_row(row: object, where: str) -> dict:
    """A GRPO/entropic row: the prompt, its item tag and how to score a completion (JSON text)."""
    prompt, spec, item = _check_prompt(row, where), row.get("reward_spec"), row.get("item")
    try:
        kind = json.loads(spec).get("kind") if isinstance(spec, str) else None
    except (ValueError, AttributeError):
        kind = None
    if kind not in ("label", "task"):
        raise DatasetError(f"{where}: 'reward_spec' must be a JSON object with kind 'label' or 'task'")
    if item is not None and not isinstance(item, str):
        raise DatasetError(f"{where}: 'item' must be an item tag (a string) or null")
    return {"prompt": prompt, "item": item or "", "reward_spec": spec}


def read_sft_rows(path: Path, check=_check_row) -> SftRows:
    """Every valid prompt-completion row of a JSONL file (with `check=_check_reward_row`: every valid
    prompt-reward row); bad rows are dropped and named."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    out = SftRows()
    with path.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                out.rows.append(check(json.loads(line), where))
            except json.JSONDecodeError as error:
                out.dropped.append(f"{where}: not valid JSON ({error.msg} at column {error.colno})")
            except (DatasetError, RecursionError) as error:
                out.dropped.append(str(error) if isinstance(error, DatasetError) else f"{where}: nested too deep")
    return out


def load_sft_rows(path: Path, min_examples: int = 1, rewards: bool = False) -> list[dict]:
    """Validated prompt-completion rows (with `rewards`: prompt-reward rows) from a JSONL file, bad
    rows dropped (and logged); raises DatasetError, naming the file, when fewer than `min_examples`
    valid rows are left."""
    path = Path(path)
    found = read_sft_rows(path, _check_reward_row if rewards else _check_row)
    for problem in found.dropped[:20]:
        log.warning("dropped training row: %s", problem)
    if found.dropped:
        log.warning("%s: dropped %d bad row(s), kept %d", path, len(found.dropped), len(found.rows))
    rows = found.rows
    dropped = f" ({len(found.dropped)} bad row(s) dropped, the first: {found.dropped[0]})" if found.dropped else ""
    if not rows:
        raise DatasetError(f"{path}: the dataset is empty (no valid JSONL rows){dropped}")
    if len(rows) < min_examples:
        raise DatasetError(f"{path}: only {len(rows)} example(s); at least min_examples={min_examples} are needed{dropped}")
    return rows
