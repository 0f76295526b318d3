"""Fine-tuning data from the gateway's records: every recorded task or rollout call joined
with its item's reward. Rewarded completions are kept as they are (rejection-sampling SFT);
unrewarded ones get the gold answer written in the format the call asked for (gold-target
SFT). Only feedback-split and training-pool items are used: selection and test never.
Given a scaffold's hash, only the calls that scaffold made are used: the adapter will be
served under that scaffold, so its prompts are the ones worth learning. Rows come sorted by a
hash of their content, not in record order: concurrent calls are recorded in whatever order
their threads finish, and the trainer's seeded shuffle only repeats on the same input order."""

from __future__ import annotations

import hashlib
import json

TRAINABLE_SPLITS = ("feedback", "rollout")


def answer_field(response_format: dict | None) -> tuple[str, dict] | None:
    """(name, schema) of the one field a JSON-object answer format holds, else None."""
    schema = ((response_format or {}).get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties") or {}
    if schema.get("type") == "object" and len(props) == 1:
        return next(iter(props.items()))
    return None


def gold_completion(response_format: dict | None, gold: str) -> str | None:
    """The gold answer as the call would have produced it, or None if the format is unknown."""
    if not response_format:
        return gold
    if field := answer_field(response_format):
        name, prop = field
        if prop.get("type") == "string" and gold in prop.get("enum", [gold]):
            return json.dumps({name: gold}, ensure_ascii=False)
    return None


def trainable_calls(db, run_id: str, scaffold_sha: str | None) -> list[dict]:
    """The recorded task and rollout calls of feedback and rollout items, each with its item's
    result (gold, score, item id), in record order; with `scaffold_sha`, only that scaffold's."""
    sql = """select c.messages, c.response_format, c.completion, c.item, r.score, r.gold, r.item_id
             from model_calls c join item_results r
               on r.run_id = c.run_id and r.generation = c.generation and r.tag = c.item
             where c.run_id = ? and c.purpose in ('task', 'rollout') and r.split in (?, ?)
               and (? is null or r.scaffold_sha = ?)
             order by c.id"""
    with db.lock:
        return list(db.db.query(sql, [run_id, *TRAINABLE_SPLITS, scaffold_sha, scaffold_sha]))


def sft_rows(db, run_id: str, scaffold_sha: str | None = None) -> tuple[list[dict], dict]:
    """(rows, stats): {"messages", "completion"} rows, deduplicated, in content-hash order; with
    `scaffold_sha`, only from calls made by that scaffold."""
    keyed, seen = [], set()
    stats = {"rewarded": 0, "gold_target": 0, "skipped": 0}
    records = trainable_calls(db, run_id, scaffold_sha)
    for rec in records:
        fmt = json.loads(rec["response_format"]) if rec["response_format"] else None
        if rec["score"] >= 1:
            completion, kind = rec["completion"], "rewarded"
        else:
            completion, kind = gold_completion(fmt, rec["gold"]) if rec["gold"] else None, "gold_target"
        if completion is None:
            stats["skipped"] += 1
            continue
        key = (rec["messages"], completion)
        if key in seen:
            continue
        seen.add(key)
        stats[kind] += 1
        digest = hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()
        keyed.append((digest, {"messages": json.loads(rec["messages"]), "completion": completion}))
    return [row for _, row in sorted(keyed, key=lambda pair: pair[0])], stats


def reward_rows(db, run_id: str, scaffold_sha: str | None = None) -> tuple[list[dict], dict]:
    """(rows, stats) for GRPO/entropic: one row per distinct recorded prompt of the feedback and
    rollout items, `{"messages", "item", "reward_spec"}` (JSON, see `finetune.rewards`), in
    content-hash order. Items with a gold answer are scored by their label; items without one by
    the task (`{"kind": "task", "item_id": ...}`). Selection and test items never appear: their calls
    are not joined."""
    keyed, seen = [], set()
    stats = {"label": 0, "task": 0, "duplicate_prompts": 0}
    records = trainable_calls(db, run_id, scaffold_sha)
    for rec in records:
        if rec["messages"] in seen:
            stats["duplicate_prompts"] += 1
            continue
        seen.add(rec["messages"])
        fmt = json.loads(rec["response_format"]) if rec["response_format"] else None
        spec = ({"kind": "label", "gold": rec["gold"], "response_format": fmt} if rec["gold"]
                else {"kind": "task", "item_id": rec["item_id"]})
        stats[spec["kind"]] += 1
        digest = hashlib.sha256(rec["messages"].encode()).hexdigest()
        keyed.append((digest, {"messages": json.loads(rec["messages"]), "item": rec["item"],
                               "reward_spec": json.dumps(spec, ensure_ascii=False)}))
    return [row for _, row in sorted(keyed, key=lambda pair: pair[0])], stats


def resolve_method(method: str, rows_with_gold: int, rows_without_gold: int) -> tuple[str, str]:
    """(method, why): what `auto` means for this dataset; an explicit method is kept."""
    if method != "auto":
        return method, f"method '{method}' as configured"
    if rows_without_gold == 0 and rows_with_gold > 0:
        return "sft", "auto: every training item has a gold answer, so supervised (rejection-sampling + gold) SFT"
    return "grpo", (f"auto: {rows_without_gold} of {rows_with_gold + rows_without_gold} training prompts have no "
                    "gold answer, only the task's reward, so GRPO")
