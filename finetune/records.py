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


def gold_completion(response_format: dict | None, gold: str) -> str | None:
    """The gold answer as the call would have produced it, or None if the format is unknown."""
    if not response_format:
        return gold
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties") or {}
    if schema.get("type") == "object" and len(props) == 1:
        (name, prop), = props.items()
        if prop.get("type") == "string" and gold in prop.get("enum", [gold]):
            return json.dumps({name: gold}, ensure_ascii=False)
    return None


def sft_rows(db, run_id: str, scaffold_sha: str | None = None) -> tuple[list[dict], dict]:
    """(rows, stats): {"messages", "completion"} rows, deduplicated, in content-hash order; with
    `scaffold_sha`, only from calls made by that scaffold."""
    keyed, seen = [], set()
    stats = {"rewarded": 0, "gold_target": 0, "skipped": 0}
    sql = """select c.messages, c.response_format, c.completion, r.score, r.gold
             from model_calls c join item_results r
               on r.run_id = c.run_id and r.generation = c.generation and r.tag = c.item
             where c.run_id = ? and c.purpose in ('task', 'rollout') and r.split in (?, ?)
               and (? is null or r.scaffold_sha = ?)
             order by c.id"""
    with db.lock:
        records = list(db.db.query(sql, [run_id, *TRAINABLE_SPLITS, scaffold_sha, scaffold_sha]))
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
