"""TriMul as a loop task: `sia run --task trimul` reaches generation 2 with scripted models (the
target model's completions are kernel programs); completion rewards rank the reference above
garbage, wrong and hostile programs and refuse hidden tiers; hidden seeds never reach an agent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sia.cli.main import main
from sia.config import SandboxLimits
from sia.gateway.protocol import Completion
from sia.sandbox.runner import SubprocessSandbox
from sia.tasks.base import TaskError
from sia.tasks.registry import resolve_task
from sia.tasks.trimul import harness
from sia.tasks.trimul.loop_task import REFERENCE_AGENT, TriMulTask, prepare
from tests.fakes import fake_config, fake_model_cache, fake_services_for, prompts_sent, shutdown

BMM_KERNEL = '''import torch
from sia.tasks.trimul.reference import gated_projections, project_out


def custom_kernel(inputs):
    """The contraction as one batched matmul per (b, h)."""
    left, right, gate = gated_projections(inputs)
    B, N, _, H = left.shape
    a = left.permute(0, 3, 1, 2).reshape(B * H, N, N)
    b = right.permute(0, 3, 1, 2).reshape(B * H, N, N)
    t = torch.bmm(a, b.transpose(1, 2)).view(B, H, N, N).permute(0, 2, 3, 1)
    return project_out(t, gate, inputs["weights"])
'''
REFERENCE = (harness.SOLUTIONS / "pytorch_reference.py").read_text()
WRONG = REFERENCE.replace("return reference_kernel(inputs)", "return reference_kernel(inputs) * 1.5")
OUTSIDE = '''from sia.tasks.trimul.reference import reference_kernel


def custom_kernel(inputs):
    with open({path!r}) as f:  # the task's hidden seeds: not mounted in the sandbox, so this raises
        f.read()
    return reference_kernel(inputs)
'''


def fenced(program: str) -> str:
    return "Here is a faster kernel.\n\n```python\n" + program + "```\n"


class ProgramBackend:
    """A gateway backend whose every completion is one fixed kernel program."""

    def __init__(self, text: str):
        self.text, self.requests = text, []

    def generate(self, batch):
        self.requests.extend(batch)
        return [Completion(self.text, 100, len(self.text) // 4) for _ in batch]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> TriMulTask:
    return TriMulTask.load(prepare(tmp_path_factory.mktemp("trimul") / "trimul"))


def reward(task, completion, item_id=None) -> float:
    return task.completion_reward(completion, item_id, sandbox=SubprocessSandbox(), limits=SandboxLimits(),
                                  python=sys.executable)


def hidden_seeds(task) -> set[int]:
    return {case["seed"] for tier, case in task._cases.values() if tier != "feedback"}


def test_tiers_are_public_small_cases_and_hidden_benchmark_cases(task):
    splits = task.splits()
    assert {k: len(v) for k, v in splits.items()} == {"feedback": 8, "selection": 14, "test": 21, "pool": 0}
    ids = [r["id"] for name in ("feedback", "selection", "test") for r in splits[name]]
    assert len(set(ids)) == len(ids)
    assert hidden_seeds(task).isdisjoint({0, 1}) and len(hidden_seeds(task)) == 35
    if task.device == "cpu":
        assert [s["N"] for s in task.scored_shapes()] == [8, 24, 8, 16, 32, 24, 32]  # benchmark N / 32
        assert "CPU proxy" in task.description and "not a GPU time" in task.description
    again = TriMulTask.load(task.root)  # the same folder gives the same tiers
    assert again.splits() == splits and again._cases == task._cases


def test_hidden_seeds_never_appear_in_what_an_agent_can_read(task, tmp_path):
    splits = task.splits()
    predict = {name: splits[name] for name in ("feedback", "selection", "test")}
    tags = task.write_view(tmp_path / "view", predict, [], salt="s", prefix="g1t-")
    assert sorted(tags.values()) == sorted((n, r["id"]) for n, rows in predict.items() for r in rows)
    view = "\n".join(p.read_text() for p in sorted((tmp_path / "view").iterdir()))
    rows = "\n".join(json.dumps(r) for rows in splits.values() for r in rows)  # rows reach prompts and logs
    numbers = {int(tok) for tok in "".join(c if c.isdigit() else " " for c in view + rows).split()}
    assert not numbers & hidden_seeds(task)
    assert not any(name in view for name in ("selection", "sel-", "test-"))  # no tier named in the view
    assert set(json.loads((tmp_path / "view" / "items.json").read_text())) == set(tags)


def test_completion_rewards(task):
    ref = reward(task, fenced(REFERENCE), "fb-n16-b1-c32-normal-s0")
    assert ref > 0.2  # correct: a speed-up near 1 (CPU proxy; noisy on a busy machine)
    assert reward(task, fenced(REFERENCE), "fb-n16-b1-c32-normal-s0") == ref  # remembered: deterministic
    for garbage in ("I cannot help with that.", "```python\ndef custom_kernel(inputs) return 1\n```", "",
                    fenced(WRONG), fenced(OUTSIDE.format(path=str(task.root / "private" / "seeds.json")))):
        assert reward(task, garbage, "fb-n16-b1-c32-normal-s0") == 0.0, garbage[:60]
    selection_item, test_item = task.splits()["selection"][0]["id"], task.splits()["test"][0]["id"]
    for item in (selection_item, test_item, "no-such-item"):
        with pytest.raises(TaskError):
            reward(task, fenced(REFERENCE), item)


def test_the_outcome_says_cpu_proxy_and_a_wrong_kernel_scores_zero(task, tmp_path):
    ids = [r["id"] for r in task.splits()["feedback"][:2]]
    good = task.run_cases(BMM_KERNEL.encode(), ids, sandbox=SubprocessSandbox(), limits=SandboxLimits(),
                          python=sys.executable)
    assert all(o.score > 0 and o.error is None for o in good.values())
    if task.device == "cpu":
        assert all("CPU proxy" in o.prediction for o in good.values())
    bad = task.run_cases(WRONG.encode(), ids, sandbox=SubprocessSandbox(), limits=SandboxLimits(),
                         python=sys.executable)
    assert all(o.score == 0 and "outside" in o.error for o in bad.values())


def test_sia_run_task_trimul_reaches_generation_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    backend = ProgramBackend(fenced(BMM_KERNEL))
    rewrite = "```python\n" + REFERENCE_AGENT.read_text().replace('"max_tokens": 768', '"max_tokens": 1024') + "```"
    feedback = [json.dumps({"diagnosis": "correct but no faster than the reference", "lever": "scaffold"}), rewrite]
    services_for = fake_services_for(tmp_path, lambda run_id: (['{"edit": "none"}'] * 3, feedback),
                                     backend_for=lambda adapter: backend, feedback_writes_code=True)
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    try:
        code = main(["run", "--task", "trimul", "--generations", "2", "--limit", "3", "--run-id", "tm",
                     "--config", str(config), "--runs-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 0, err
        svc = services_for.made["tm"]
        gen1, gen2 = svc.paths.gen(1), svc.paths.gen(2)
        assert (gen2 / "results.json").is_file()
        items = [json.loads(line) for line in (gen1 / "items.jsonl").read_text().splitlines()]
        assert {i["split"] for i in items} == {"feedback", "selection", "test"}
        assert all(i["score"] > 0 and i["error"] is None for i in items), items  # the model's bmm kernel is correct
        assert all("CPU proxy" in i["prediction"] for i in items) or resolve_task("trimul").device == "cuda"
        assert (gen1 / "task_selection_solution.py").read_text() == BMM_KERNEL  # the model's code, submitted
        assert backend.requests and all(r.messages[-1]["content"].count("custom_kernel") for r in backend.requests)
        prompts = "\n".join(prompts_sent(svc))  # the Feedback-Agent saw no selection or test case
        assert "sel-" not in prompts and "test-n" not in prompts
        assert not {str(s) for s in hidden_seeds(resolve_task("trimul"))} & set(prompts.replace(",", " ").split())
    finally:
        for s in services_for.made.values():
            shutdown(s)


def test_grpo_on_trimul_rewards_kernels_through_the_sandboxed_harness(tmp_path, monkeypatch, capsys):
    """`auto` picks GRPO (no gold answers); the training process's reward path (RewardBook with the
    task's completion_reward, as `finetune.grpo` builds it) scores the scripted target's kernels."""
    from sia.finetune.grpo import REWARD_TASK_NAME, task_reward_from
    from sia.finetune.rewards import REWARDS_NAME, RewardBook
    from tests.fakes import FakeTrainer

    class KernelRewardTrainer(FakeTrainer):
        def train(self, dataset, base, out, config, on_event=None):
            rows = [json.loads(line) for line in Path(dataset).read_text().splitlines()]
            book = RewardBook(Path(out) / REWARDS_NAME, {r["item"] for r in rows}, task_reward_from(Path(out)),
                              method=config.method)
            samples = [fenced(BMM_KERNEL), "no code today"]  # a group of two sampled completions per prompt
            book([r["messages"] for r in rows for _ in samples], samples * len(rows),
                 reward_spec=[r["reward_spec"] for r in rows for _ in samples], item=[r["item"] for r in rows for _ in samples])
            return super().train(dataset, base, out, config, on_event)

    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    trainer = KernelRewardTrainer()
    services_for = fake_services_for(tmp_path, lambda run_id: (['{"edit": "none"}'] * 3, []),
                                     backend_for=lambda adapter: ProgramBackend(fenced(BMM_KERNEL)), trainer=trainer)
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path, finetune={"min_examples": 1}).model_dump_json())
    try:
        code = main(["run", "--task", "trimul", "--generations", "2", "--limit", "2", "--policy", "weights-only",
                     "--run-id", "tg", "--config", str(config), "--runs-dir", str(tmp_path / "runs")])
        assert code == 0, capsys.readouterr().err
        svc = services_for.made["tg"]
        out = svc.paths.adapter(2)
        assert trainer.calls and trainer.calls[0]["config"].method == "grpo"
        assert json.loads((out / "dataset_stats.json").read_text())["method_why"].startswith("auto:")
        assert json.loads((out / REWARD_TASK_NAME).read_text())["task"] == "trimul"
        import sqlite3
        with sqlite3.connect(svc.paths.run_db) as db:
            rewards = db.execute("select completion, reward, item from rewards").fetchall()
            splits = dict(db.execute("select tag, split from item_results").fetchall())
        by_text = {c: r for c, r, _ in rewards}
        assert by_text[fenced(BMM_KERNEL)] > 0 and by_text["no code today"] == 0.0
        assert {splits[item] for _, _, item in rewards} == {"feedback"}
    finally:
        for s in services_for.made.values():
            shutdown(s)


def test_the_cuda_benchmark_mode_is_still_wired(tmp_path):
    """`harness.benchmark` runs `run_solution bench`; without CUDA it must say so, not crash."""
    from sia.tasks.trimul import run_solution

    out = tmp_path / "out.json"
    (tmp_path / "shapes.json").write_text("[]")
    code = run_solution.main(["bench", "--solution", str(harness.SOLUTIONS / "pytorch_reference.py"),
                              "--shapes", str(tmp_path / "shapes.json"), "--out", str(out)])
    import torch
    if torch.cuda.is_available():
        assert code == 0 and json.loads(out.read_text()) == {"results": []}
    else:
        assert code == 2 and "no CUDA device" in json.loads(out.read_text())["error"]
