"""The weights lever's reward path without a model: reading answers, scoring, the reward cache and
record, which items may be rewarded, `auto`, the entropic tilt and the CPU log-probability head."""

from __future__ import annotations

import json
import math

import pytest

from sia.checkpoints.rundb import RunDB
from sia.config import FinetuneConfig
from sia.finetune.dataset import DatasetError, load_sft_rows
from sia.finetune.records import resolve_method, reward_rows
from sia.finetune.rewards import RewardBook, answer_of, label_reward, prompt_key, read_rewards
from tests.unit.test_parts import ENUM_FMT, call, item

PROMPT = [{"role": "user", "content": "case"}]


def spec(gold="theft", fmt=ENUM_FMT) -> str:
    return json.dumps({"kind": "label", "gold": gold, "response_format": fmt})


def test_a_completion_is_read_the_way_its_call_asked_for_the_answer():
    assert answer_of(ENUM_FMT, '{"label": "theft"}') == "theft"
    assert answer_of(ENUM_FMT, 'Sure! {"label": " theft "} done') == "theft"
    assert answer_of(ENUM_FMT, "theft") is None  # the call asked for JSON
    assert answer_of(ENUM_FMT, '{"label": 3}') is None and answer_of(ENUM_FMT, '{"label": "th') is None
    assert answer_of(None, "  theft\n") == "theft" and answer_of(None, " ") is None
    assert label_reward(ENUM_FMT, '{"label": "theft"}', "theft") == 1.0
    assert label_reward(ENUM_FMT, '{"label": "fraud"}', "theft") == 0.0
    assert label_reward(None, "Theft", "theft") == 0.0  # top-1 is exact


def test_the_reward_book_scores_once_caches_records_and_reloads(tmp_path):
    path = tmp_path / "rewards.jsonl"
    book = RewardBook(path, {"a", "b"})
    got = book([PROMPT] * 3, [[{"role": "assistant", "content": '{"label": "theft"}'}],
                              [{"role": "assistant", "content": '{"label": "fraud"}'}],
                              [{"role": "assistant", "content": '{"label": "theft"}'}]],
               reward_spec=[spec()] * 3, item=["a", "a", "a"])
    assert got == [1.0, 0.0, 1.0] and (book.scored, book.reused) == (2, 1)
    rows = read_rewards(path)
    assert [(r["item"], r["completion"], r["reward"]) for r in rows] == [
        ("a", '{"label": "theft"}', 1.0), ("a", '{"label": "fraud"}', 0.0)]
    assert {r["prompt_sha"] for r in rows} == {prompt_key(PROMPT)}
    with path.open("a") as handle:
        handle.write('{"prompt_sha": "cut by a ki')  # a kill mid-write
    again = RewardBook(path, {"a"})
    assert again([PROMPT], ['{"label": "fraud"}'], reward_spec=[spec()], item=["a"]) == [0.0]
    assert (again.scored, again.reused) == (0, 1)


def test_an_item_outside_the_dataset_is_never_rewarded(tmp_path):
    book = RewardBook(tmp_path / "r.jsonl", {"feedback-tag"})
    with pytest.raises(ValueError, match="not a feedback or rollout item"):
        book([PROMPT], ["x"], reward_spec=[spec()], item=["selection-tag"])
    assert not (tmp_path / "r.jsonl").exists()


def test_task_rows_are_scored_by_the_task_with_their_item_id(tmp_path):
    seen = []
    book = RewardBook(tmp_path / "r.jsonl", {"t1"}, task_reward=lambda c, i: seen.append((c, i)) or 0.25)
    task_spec = json.dumps({"kind": "task", "item_id": "fb-case-1"})
    assert book([PROMPT], ["def custom_kernel(x): ..."], reward_spec=[task_spec], item=["t1"]) == [0.25]
    assert seen == [("def custom_kernel(x): ...", "fb-case-1")]
    with pytest.raises(ValueError, match="no way to score"):
        RewardBook(tmp_path / "s.jsonl", {"t1"})([PROMPT], ["x"], reward_spec=[task_spec], item=["t1"])


def test_reward_rows_come_only_from_feedback_and_rollout_calls(tmp_path):
    db = RunDB(tmp_path / "run.db")
    db.save_items([item("r", "a", "feedback", "theft", 1.0), item("r", "b", "feedback", None, 0.3),
                   item("r", "c", "selection", "theft", 1.0), item("r", "d", "test", None, 1.0),
                   item("r", "e", "rollout", "fraud", 0.0)])
    for c in [call("r", "a", "FB", '{"label": "theft"}'), call("r", "a", "FB", '{"label": "fraud"}'),
              call("r", "b", "FB-NO-GOLD", "def custom_kernel(x): ..."), call("r", "c", "SELECTION", "x"),
              call("r", "d", "TEST", "x"), call("r", "e", "ROLLOUT", "x", purpose="rollout"),
              call("r", "a", "SMOKE", "x", purpose="smoke")]:
        db.record_call(c)
    rows, stats = reward_rows(db, "r")
    by_prompt = {r["messages"][0]["content"]: (r["item"], json.loads(r["reward_spec"])) for r in rows}
    assert by_prompt == {"FB": ("a", {"kind": "label", "gold": "theft", "response_format": ENUM_FMT}),
                         "FB-NO-GOLD": ("b", {"kind": "task", "item_id": "id-b"}),
                         "ROLLOUT": ("e", {"kind": "label", "gold": "fraud", "response_format": ENUM_FMT})}
    assert stats == {"label": 2, "task": 1, "duplicate_prompts": 1}
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["item"] for r in load_sft_rows(path, rewards=True)] == [r["item"] for r in rows]
    with pytest.raises(DatasetError, match="completion"):
        load_sft_rows(path)  # a reward dataset is not an SFT dataset


def test_auto_picks_sft_with_gold_answers_and_grpo_without():
    assert resolve_method("auto", 10, 0)[0] == "sft"
    assert resolve_method("auto", 0, 10)[0] == "grpo"
    assert resolve_method("auto", 5, 5)[0] == "grpo"
    assert resolve_method("entropic", 10, 0) == ("entropic", "method 'entropic' as configured")


def test_groups_must_fit_a_step():
    FinetuneConfig(method="grpo", batch_size=8, num_generations=4)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        FinetuneConfig(method="grpo", batch_size=6, num_generations=4)
    FinetuneConfig(method="sft", batch_size=6, num_generations=4)  # only the sampling methods care


def test_the_entropic_tilt_gives_advantages_that_favour_each_groups_best():
    torch = pytest.importorskip("torch")
    from sia.finetune.grpo import _entropic

    class Base:
        def _calculate_rewards(self, inputs, prompts, completions, ids):
            return torch.tensor([[0.0], [1.0], [0.0], [0.0], [0.5], [0.5], [0.5], [0.5]])

    tilted = _entropic(Base, tau=0.5, group=4)()._calculate_rewards(None, None, None, None).view(2, 4)
    advantages = tilted - tilted.mean(dim=1, keepdim=True)  # what TRL does with scale_rewards="none"
    assert torch.allclose(tilted.mean(dim=1), torch.ones(2))
    e = math.exp(2.0)
    assert advantages[0].tolist() == pytest.approx([4 / (3 + e) - 1, 4 * e / (3 + e) - 1, 4 / (3 + e) - 1, 4 / (3 + e) - 1])
    assert advantages[1].tolist() == pytest.approx([0.0] * 4)  # equal rewards: no push


def test_the_cpu_log_probability_head_matches_full_logits():
    torch = pytest.importorskip("torch")
    from sia.finetune.grpo import _PlainLogProb

    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(5, 8), torch.randn(11, 8, requires_grad=True), torch.randint(0, 11, (5,))
    chosen, entropy, *_ = _PlainLogProb.apply(hidden, weight, None, targets, 0.7, 4096, None, 1.0, ("log_probs", "entropy"))
    log_p = (hidden @ weight.T / 0.7).log_softmax(-1)
    assert torch.allclose(chosen, log_p[torch.arange(5), targets], atol=1e-5)
    assert torch.allclose(entropy, -(log_p.exp() * log_p).sum(-1), atol=1e-5)
    chosen.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
