"""Reading and checking the SFT dataset file (JSONL) without importing torch.

Each row is `{"messages": [{"role": ..., "content": ...}, ...], "completion": "text"}`.
Rows become TRL's conversational prompt-completion form, `prompt` (the messages)
plus `completion` (one assistant message), for which SFTTrainer computes the loss
on the completion tokens only.
"""

from __future__ import annotations

import json
from pathlib import Path

ROLES = ("system", "user", "assistant", "tool")


class DatasetError(ValueError):
    """The dataset file is missing, malformed or too small; the message names file and row."""


def _check_row(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    messages, completion = row.get("messages"), row.get("completion")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    prompt = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DatasetError(f"{where}: messages[{i}].role is {role!r}; expected one of {list(ROLES)}")
        if not isinstance(content, str):
            raise DatasetError(f"{where}: messages[{i}].content must be a string")
        # Only role/content: extra keys would give rows different Arrow schemas.
        prompt.append({"role": role, "content": content})
    if not isinstance(completion, str) or not completion.strip():
        raise DatasetError(f"{where}: 'completion' must be a non-empty string")
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}


def load_sft_rows(path: Path, min_examples: int = 1) -> list[dict]:
    """Validated prompt-completion rows from a JSONL file; raises DatasetError with file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            rows.append(_check_row(row, where))
    if not rows:
        raise DatasetError(f"{path}: the dataset is empty (no JSONL rows)")
    if len(rows) < min_examples:
        raise DatasetError(f"{path}: only {len(rows)} example(s); at least min_examples={min_examples} are needed")
    return rows
