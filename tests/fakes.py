"""Reusable fakes for running the SIA graph offline and fast: no model, no training, no network.

The public API (everything else here is a detail):

- `make_tiny_task(root)`: a csv-classification task folder whose texts carry one keyword per label.
- `make_sia_folder_task(root, items=True)`: the same kind of task as an unmodified SIA task folder
  (`data/public/task.md`, `data/public/evaluate.py --gen-dir`, `reference/reference_target_agent.py`).
- `KeywordBackend` / `fake_backends()`: a gateway backend that "answers" by keyword, but only when
  the agent sends few-shot examples or an adapter is served, so scaffold edits and adapters both
  measurably raise scores.
- `FakeTrainer`: the `finetune.trainer.Trainer` protocol without training (`fail=True` raises).
- `scripted_llm(replies)`: a `sia.llm.RoleLLM` replaying fixed replies; `.chat.prompts` keeps
  every prompt it was sent (one string per call).
- `fake_model_cache(root)`: a SIA cache dir with a placeholder embedded model, so
  `gateway.model_store.safetensors_dir()` (called by the train_adapter node) never downloads.
  Point `SIA_CACHE_DIR` at it (e.g. `monkeypatch.setenv`) in any test that reaches the weights lever.
- `fake_config(tmp_path, **updates)`, `fake_services(...)`, `shutdown(services)`, `prompts_sent(services)`.
- `fake_services_for(tmp_path, replies_for)`: patched in for `sia.nodes.services.services_for`, the
  real CLI (`sia run`, `sia compare`) drives the graph with fake services, one set per run.
- `run_graph(services, inputs, checkpointer=None, trace=None)`: run the real graph with these
  services to the end; returns the final state values (and appends the nodes run to `trace`).

Scores on the tiny task: the reference agent (no shots) on the base model always gets the first
label, so feedback = selection = 1/n_labels and test = test_per_label / (n_labels*test_per_label + 1);
with retrieved shots or a helping adapter every keyword item is right (feedback = selection = 1.0).
The one extra test item has the test-only label "perjury" and no keyword, so it is always wrong and
the test score never equals a feedback/selection score, and "perjury" is a gold label that only the
private test split holds (handy for leak checks).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from pydantic import Field

from sia.config import EMBEDDED_MODEL_NAME
from sia.config import RunConfig
from sia.finetune.trainer import SUMMARY_NAME, TrainingFailed
from sia.gateway.protocol import ChatRequest, Completion
from sia.llm import RoleLLM

REPO = Path(__file__).resolve().parents[1]
REFERENCE_AGENT = REPO / "tasks" / "classification" / "reference_agent.py"

# label -> keyword its texts contain (no keyword is a substring of another text's words)
KEYWORDS = {"theft": "stole", "fraud": "tricked", "assault": "punched", "arson": "torched",
            "bribery": "bribed", "smuggling": "smuggled"}
TEST_ONLY_LABEL = "perjury"
OBJECTS = ["a bicycle", "a wallet", "a neighbour", "a barn", "an inspector", "some cigarettes",
           "a laptop", "a ring", "a cashier", "a shed", "a clerk", "some watches"]


def make_tiny_task(root: Path, n_labels: int = 3, per_label: int = 8, test_per_label: int = 2) -> Path:
    """Write a tiny csv-classification task into `root` (created) and return it.

    Train ids are `tr-LABEL-I`, test ids `te-J`; test texts start with "Hearing", train texts with
    "Case". Labels are the first `n_labels` of KEYWORDS plus the test-only "perjury" (one test item,
    no keyword). feedback_per_label=1, selection_per_label=2, so the pool has per_label-3 per label.
    """
    if not 1 <= n_labels <= len(KEYWORDS):
        raise ValueError(f"n_labels must be 1..{len(KEYWORDS)}")
    root = Path(root)
    labels = list(KEYWORDS)[:n_labels]
    classes = labels + [TEST_ONLY_LABEL]
    (root / "data" / "public").mkdir(parents=True, exist_ok=True)
    (root / "data" / "private").mkdir(parents=True, exist_ok=True)
    (root / "reference").mkdir(parents=True, exist_ok=True)
    (root / "task.md").write_text(
        "# tiny - offence classification\n\nPredict the offence of each short case description.\n"
        "`test.csv` (id,text) holds the cases to predict, `train.csv` (id,text,label) labelled examples, "
        "`classes.json` the allowed labels. Write `submission.csv` with columns id,label. Metric: accuracy.\n",
        encoding="utf-8")
    (root / "sia_task.json").write_text(json.dumps({"name": "tiny", "feedback_per_label": 1, "selection_per_label": 2}))
    (root / "data" / "public" / "classes.json").write_text(json.dumps(classes))
    train = [(f"tr-{label}-{i}", f"Case {li * 100 + i}: the defendant {KEYWORDS[label]} {OBJECTS[(li + i) % len(OBJECTS)]}.", label)
             for li, label in enumerate(labels) for i in range(per_label)]
    test = [(f"te-{li * test_per_label + j}", f"Hearing {li * 100 + j}: the accused {KEYWORDS[label]} "
             f"{OBJECTS[(li + j + 5) % len(OBJECTS)]} at night.", label)
            for li, label in enumerate(labels) for j in range(test_per_label)]
    test.append((f"te-{len(test)}", "Hearing 999: the witness lied under oath.", TEST_ONLY_LABEL))
    _write_csv(root / "data" / "public" / "train.csv", ["id", "text", "label"], train)
    _write_csv(root / "data" / "public" / "test.csv", ["id", "text"], [(i, t) for i, t, _ in test])
    _write_csv(root / "data" / "private" / "test.csv", ["id", "label"], [(i, lab) for i, _, lab in test])
    os.chmod(root / "data" / "private", 0o700)
    shutil.copy(REFERENCE_AGENT, root / "reference" / "target_agent.py")
    return root


SIA_EVALUATE = """\"\"\"SIA-style evaluator: python evaluate.py --gen-dir DIR writes DIR/results.json.\"\"\"
import argparse, csv, json, sys
from pathlib import Path

TASK_DIR = Path(__file__).parent.parent.parent
TRUTH_PATH = TASK_DIR / "data/private/test.csv"
WITH_ITEMS = {with_items}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen-dir", type=Path, required=True)
    args = parser.parse_args()
    submission = args.gen_dir / "submission.csv"
    if not submission.exists():
        print(f"Error: No submission.csv found in {{args.gen_dir}}")
        sys.exit(1)
    with open(TRUTH_PATH, newline="") as f:
        truth = {{r["id"]: r["label"] for r in csv.DictReader(f)}}
    with open(submission, newline="") as f:
        pred = {{r["id"]: r["label"] for r in csv.DictReader(f)}}
    items = [{{"id": i, "correct": pred.get(i) == gold, "prediction": pred.get(i)}} for i, gold in truth.items()]
    results = {{"n_total": len(items), "accuracy": sum(it["correct"] for it in items) / len(items)}}
    if WITH_ITEMS:
        results["items"] = items
    (args.gen_dir / "results.json").write_text(json.dumps(results))
    print(f"Accuracy : {{results['accuracy']:.4f}}")


if __name__ == "__main__":
    main()
"""


def make_sia_folder_task(root: Path, items: bool = True, n_labels: int = 3, per_label: int = 5) -> Path:
    """An unmodified-SIA-layout task: `data/public/{task.md, evaluate.py, train.csv, test.csv,
    classes.json}`, `data/private/test.csv` and `reference/reference_target_agent.py` (no
    sia_task.json). The n_labels*per_label scored ids are `it-K`; tiers (20/20/60%) are hashed."""
    root = Path(root)
    make_tiny_task(root, n_labels=n_labels, per_label=8, test_per_label=1)
    pub, priv = root / "data" / "public", root / "data" / "private"
    (root / "task.md").rename(pub / "task.md")
    (root / "sia_task.json").unlink()
    (pub / "evaluate.py").write_text(SIA_EVALUATE.format(with_items=items))
    labels = list(KEYWORDS)[:n_labels]
    scored = [(f"it-{li * per_label + j}", f"Hearing {li * 100 + j}: the accused {KEYWORDS[label]} "
               f"{OBJECTS[(li + j + 3) % len(OBJECTS)]}.", label)
              for li, label in enumerate(labels) for j in range(per_label)]
    _write_csv(pub / "test.csv", ["id", "text"], [(i, t) for i, t, _ in scored])
    _write_csv(priv / "test.csv", ["id", "label"], [(i, lab) for i, _, lab in scored])
    (root / "reference" / "target_agent.py").rename(root / "reference" / "reference_target_agent.py")
    return root


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


class KeywordBackend:
    """A gateway Backend without a model.

    For a JSON-schema request with one enum property it answers `{"prop": LABEL}`; without a schema
    it answers the bare label. LABEL is the first enum value, unless the request has few-shot
    examples (more than 2 messages) or `adapter_bonus` is set: then it is the enum label whose
    keyword occurs in the last user message (first enum value if none does).
    """

    def __init__(self, name: str = "fake-base", adapter_bonus: bool = False, keywords: dict[str, str] | None = None):
        self.name, self.adapter_bonus = name, adapter_bonus
        self.keywords = dict(keywords or KEYWORDS)
        self.requests: list[ChatRequest] = []

    def answer(self, req: ChatRequest) -> str:
        props = ((req.json_schema or {}).get("properties") or {})
        prop_name, enum = next(((k, v.get("enum")) for k, v in props.items() if v.get("enum")), ("label", None))
        choices = enum or list(self.keywords)
        label = choices[0]
        if self.adapter_bonus or len(req.messages) > 2:
            last_user = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
            label = next((c for c in choices if self.keywords.get(c) and self.keywords[c] in last_user), label)
        if req.json_schema is None:
            return label
        return json.dumps({prop_name: label}) if enum else "{}"

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        self.requests.extend(batch)
        outs = []
        for req in batch:
            text = self.answer(req)
            prompt_tokens = sum(len(m["content"]) for m in req.messages) // 4 + 1
            outs.append(Completion(text, prompt_tokens, len(text) // 4 + 1))
        return outs


def fake_backends(adapter_helps: bool = True):
    """A `backend_for(adapter)` callable: base -> KeywordBackend('fake-base'), an adapter version ->
    KeywordBackend(adapter_bonus=adapter_helps). Built backends are kept in `backend_for.backends`."""
    backends: dict[str | None, KeywordBackend] = {}

    def backend_for(adapter: str | None) -> KeywordBackend:
        if adapter not in backends:
            backends[adapter] = (KeywordBackend("fake-base") if adapter is None
                                 else KeywordBackend(f"fake+{adapter}", adapter_bonus=adapter_helps))
        return backends[adapter]

    backend_for.backends = backends
    return backend_for


class FakeTrainer:
    """The Trainer protocol without training: writes OUT/adapter/adapter_config.json and
    OUT/train_summary.json and returns the summary. `fail=True` raises TrainingFailed.
    Each call's (dataset, base, out) is appended to `calls`."""

    def __init__(self, fail: bool = False, train_loss: float = 0.5):
        self.fail, self.train_loss = fail, train_loss
        self.calls: list[dict] = []

    def train(self, dataset: Path, base: Path, out: Path, config, on_event=None) -> dict:
        dataset, out = Path(dataset), Path(out)
        self.calls.append({"dataset": dataset, "base": Path(base), "out": out, "config": config})
        out.mkdir(parents=True, exist_ok=True)
        if self.fail:
            (out / "train.log").write_text("fake trainer: told to fail\n")
            raise TrainingFailed("fake training failure", returncode=1, log_path=out / "train.log")
        rows = sum(1 for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip())
        (out / "adapter").mkdir(exist_ok=True)
        (out / "adapter" / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "base_model_name_or_path": str(base), "r": config.lora_r}))
        summary = {"backend": "fake", "steps": 1, "train_loss": self.train_loss, "examples": rows,
                   "adapter": str(out / "adapter")}
        (out / SUMMARY_NAME).write_text(json.dumps(summary))
        if on_event is not None:
            on_event({"event": "done", **summary})
        return summary


class ScriptedChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that records each prompt (its messages joined by newlines) in `prompts`
    and the call's keyword arguments (e.g. `response_format`) in `call_kwargs`."""

    prompts: list[str] = Field(default_factory=list)
    call_kwargs: list[dict] = Field(default_factory=list)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any):
        self.prompts.append("\n".join(str(m.content) for m in messages))
        self.call_kwargs.append(kwargs)
        try:
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        except StopIteration:
            raise RuntimeError(f"scripted chat model ran out of replies after {len(self.prompts) - 1}") from None


def scripted_llm(replies: list[str], can_write_code: bool = False) -> RoleLLM:
    """A RoleLLM replying `replies` in order; running out is an endpoint error (LLMOutputError)."""
    return RoleLLM(ScriptedChatModel(messages=iter([AIMessage(content=r) for r in replies])), can_write_code)


def fake_model_cache(root: Path) -> Path:
    """A SIA cache dir (for SIA_CACHE_DIR) whose embedded model is a placeholder file."""
    model = Path(root) / "models" / EMBEDDED_MODEL_NAME
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.safetensors").write_bytes(b"placeholder: the fakes never load it")
    return Path(root)


def _merge(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def fake_config(tmp_path: Path, **updates) -> RunConfig:
    """RunConfig for fake runs: runs_dir=tmp_path/runs, rollout_items=6, quick sandbox limits
    (wall_timeout_s=60, memory_mb=1024), and generation 1 is the Meta-Agent's scripted pick as it
    is (no edit search: the tests' scores start from the reference agent). `updates` are RunConfig
    fields; dict values merge into nested sections, e.g. `fake_config(tmp, finetune={"min_examples": 1000})`."""
    base = RunConfig(runs_dir=Path(tmp_path) / "runs", rollout_items=6).model_dump()
    base["sandbox"].update(wall_timeout_s=60, memory_mb=1024)
    base["scaffold"].update(search_generation_1=False)
    return RunConfig.model_validate(_merge(base, updates))


def fake_services(tmp_path: Path, run_id: str, meta_replies: list[str] | RoleLLM,
                  feedback_replies: list[str] | RoleLLM, *, config: RunConfig | None = None,
                  feedback_writes_code: bool = False, adapter_helps: bool = True, **overrides):
    """Services for `run_id` with fake backends, a FakeTrainer and scripted meta/feedback LLMs
    (pass a RoleLLM instead of a reply list to choose one yourself). `overrides` replace any
    Services field (trainer=FakeTrainer(fail=True), backend_for=..., clock=...)."""
    from sia.nodes.services import Services

    def as_llm(replies, writes_code):
        return replies if isinstance(replies, RoleLLM) else scripted_llm(list(replies), writes_code)

    config = config or fake_config(tmp_path)
    parts = {"backend_for": fake_backends(adapter_helps), "trainer": FakeTrainer(),
             "llm_override": {"meta": as_llm(meta_replies, False),
                              "feedback": as_llm(feedback_replies, feedback_writes_code)}}
    parts.update(overrides)
    return Services.build(config, run_id, **parts)


def fake_services_for(tmp_path: Path, replies_for, **overrides):
    """A stand-in for `sia.nodes.services.services_for` (patch it in) that gives every run the CLI
    drives its own `fake_services`, made once per run: `replies_for(run_id)` -> (meta replies,
    feedback replies). The services made are in `.made`, keyed by run id."""
    made: dict[str, Any] = {}

    def services_for(config: RunConfig, run_id: str):
        if run_id not in made:
            made[run_id] = fake_services(tmp_path, run_id, *replies_for(run_id), config=config, **overrides)
        return made[run_id]

    services_for.made = made
    return services_for


def shutdown(services) -> None:
    """Stop the services' gateway if one was started."""
    if services._gateway is not None:
        services._gateway.stop()
        services._gateway = None


def prompts_sent(services) -> list[str]:
    """Every prompt the scripted meta and feedback models received."""
    return [p for role in ("meta", "feedback") for p in getattr(services.llm_override[role].chat, "prompts", [])]


def run_graph(services, inputs, checkpointer=None, trace: list[str] | None = None) -> dict:
    """Run the real graph to the end with `services` injected; returns the final state values.
    With a `trace` list, every node that ran is appended to it in order, subgraph nodes as
    "subgraph:node" (e.g. "scaffold_rewrite:propose_scaffold"), then the subgraph node itself."""
    from sia.graph.context import RunContext
    from sia.graph.graph import build_graph

    graph = build_graph(checkpointer)
    final: dict = {}
    thread_id = inputs.run_id if inputs is not None else services.paths.run_id  # None resumes the thread
    for ns, mode, chunk in graph.stream(inputs, {"configurable": {"thread_id": thread_id}, "recursion_limit": 100},
                                        context=RunContext(config=services.config, services=services),
                                        stream_mode=["updates", "values"], subgraphs=True):
        if mode == "values" and not ns:
            final = chunk
        elif mode == "updates" and trace is not None:
            trace.extend(":".join([n.split(":")[0] for n in ns] + [node]) for node in chunk)
    return final


def http(gw, path, token, body=None, headers=None, raw: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON reply) of one request to a running Gateway; `path` starts with /v1."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(gw.base_url.removesuffix("/v1") + path, data=data,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
