"""The `sia` command without the model: help, `runs`/`show` on hand-built run folders, clear
errors, and `run`/`resume` driving a scripted stand-in for the graph (no torch import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sia.checkpoints.paths import RunPaths
from sia.cli.main import main
from sia.cli.render import LiveView
from sia.config import RunConfig
from sia.files import write_json_atomic
from sia.graph.state import GenerationResult, SIAInput

REPO = Path(__file__).resolve().parents[2]


def gen_row(n, lever, sel, test, accepted, note=""):
    return GenerationResult(generation=n, lever=lever, adapter=None if lever != "weights" else f"adapters/gen_{n}",
                            feedback=sel, selection=sel, test=test, accepted=accepted, wall_s=1.5 * n, note=note)


@pytest.fixture
def runs_dir(tmp_path):
    """Two runs: 'done' (finished, summary.json) and 'killed' (run.db rows only, no summary)."""
    from sia.checkpoints.rundb import RunDB

    runs = tmp_path / "runs"
    rows = {"done": [gen_row(1, "meta", 0.25, 0.2, True, "reference agent"),
                     gen_row(2, "scaffold", 0.5, 0.4, True, "library edit few-shot"),
                     gen_row(3, "weights", 0.45, None, False, "adapter not promoted")],
            "killed": [gen_row(1, "meta", 0.125, 0.1, True)]}
    for run_id, results in rows.items():
        paths = RunPaths(runs, run_id).create()
        write_json_atomic(paths.config, RunConfig(runs_dir=runs).model_dump(mode="json"))
        write_json_atomic(paths.inputs, SIAInput(run_id=run_id, task="lawbench-mini", policy="alternate",
                                                 max_generations=3).model_dump(mode="json"))
        db = RunDB(paths.run_db)
        for r in results:
            db.save_generation({"run_id": run_id, **r.model_dump(), "scaffold_sha": "x" * 64})
        db.db.conn.close()
    write_json_atomic(runs / "done" / "summary.json", {"run_id": "done", "task": "lawbench-mini",
                                                        "policy": "alternate", "errors": ["gen 3 finetune: boom"]})
    return runs


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_of_the_installed_command():
    out = subprocess.run([str(REPO / ".venv" / "bin" / "sia"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for cmd in ("run", "resume", "runs", "show", "serve", "compare", "transfer", "report", "web"):
        assert cmd in out.stdout


@pytest.mark.parametrize("cmd", ["run", "resume", "runs", "show", "serve", "compare", "transfer", "report", "web"])
def test_subcommand_help(capsys, cmd):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert f"usage: sia {cmd}" in capsys.readouterr().out


def test_usage_errors_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--generations", "2"])  # neither --task nor --task-dir
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "one of the arguments --task --task-dir is required" in err and "Traceback" not in err


def test_runs_lists_each_run(capsys, runs_dir):
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", str(runs_dir))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ("done", "killed")}
    assert set(lines) == {"done", "killed"}
    assert "lawbench-mini" in lines["done"] and "alternate" in lines["done"]
    assert "3/3" in lines["done"] and "0.500" in lines["done"] and "0.200" in lines["done"]
    assert "0.400" in lines["done"] and "finished" in lines["done"]
    assert "1/3" in lines["killed"] and "interrupted" in lines["killed"]


def test_runs_shows_a_live_run_as_running(capsys, runs_dir):
    (runs_dir / "killed" / "sia.pid").write_text(str(os.getppid()))
    _, out, _ = run_cli(capsys, "runs", "--runs-dir", str(runs_dir))
    assert "running" in next(line for line in out.splitlines() if line.startswith("killed"))


def test_runs_on_an_empty_folder(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", str(tmp_path))
    assert code == 0 and "No runs" in out


def test_show_prints_the_generation_table_and_errors(capsys, runs_dir):
    code, out, _ = run_cli(capsys, "show", "done", "--runs-dir", str(runs_dir))
    assert code == 0
    assert "finished" in out and "library edit few-shot" in out and "adapters/gen_3" in out
    row2 = next(line for line in out.splitlines() if line.strip().startswith("2 "))
    assert "scaffold" in row2 and "0.500" in row2 and "0.400" in row2 and "yes" in row2
    assert "gen 3 finetune: boom" in out


def test_show_works_on_a_killed_run(capsys, runs_dir):
    code, out, _ = run_cli(capsys, "show", "killed", "--runs-dir", str(runs_dir))
    assert code == 0 and "interrupted" in out and "0.125" in out


def test_show_and_resume_of_a_missing_run(capsys, runs_dir):
    for cmd in ("show", "resume"):
        code, out, err = run_cli(capsys, cmd, "nope", "--runs-dir", str(runs_dir))
        assert code == 1
        assert "no run 'nope'" in err and "done" in err and "Traceback" not in err + out


def test_run_with_an_unknown_task(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "--task", "no-such-task", "--runs-dir", str(tmp_path / "runs"))
    assert code == 1
    assert "unknown task 'no-such-task'" in err and "lawbench-mini" in err and "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()


def test_run_with_a_missing_task_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--task-dir", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path))
    assert code == 1 and "no such directory" in err


def test_run_refuses_an_existing_run_id(capsys, runs_dir, monkeypatch):
    monkeypatch.setattr("sia.tasks.registry.resolve_task", lambda name: None)
    code, _, err = run_cli(capsys, "run", "--task", "lawbench-mini", "--run-id", "done", "--runs-dir", str(runs_dir))
    assert code == 1 and "already exists" in err and "sia resume done" in err


class FakeGraph:
    """Stands in for the compiled graph: streams scripted items, then holds `final` as its state."""

    from sia.graph.graph import builder  # the real wiring, which the live view reads

    def __init__(self, items, final, values=None, next_=(), error=None):
        self.items, self.final, self.error = items, final, error
        self.values, self.next, self.calls = values or {}, next_, []

    def get_state(self, thread):
        return types.SimpleNamespace(values=self.values, next=self.next)

    def stream(self, payload, thread, **kwargs):
        self.calls.append((payload, thread, kwargs))
        yield from self.items
        if self.error:
            raise self.error
        self.values, self.next = self.final, ()


def use_graph(monkeypatch, fake):
    module = types.ModuleType("sia.graph.graph")
    module.build_graph = lambda checkpointer=None: fake
    monkeypatch.setitem(sys.modules, "sia.graph.graph", module)
    monkeypatch.setattr("sia.tasks.registry.resolve_task", lambda name: None)


SCRIPT = [
    ((), "custom", {"event": "generation", "generation": 1, "lever": "meta", "rationale": "reference agent"}),
    ((), "updates", {"meta": {"generation": 1, "errors": []}}),
    ((), "custom", {"event": "rollout", "generation": 1, "splits": ["feedback"], "items": 4}),
    ((), "custom", {"event": "scored", **gen_row(1, "meta", 0.25, 0.2, True, "reference agent").model_dump()}),
    ((), "updates", {"task": {"history": []}}),
    ((), "custom", {"event": "lever", "generation": 1, "lever": "weights", "why": "alternate"}),
    ((), "updates", {"feedback": {"next_lever": "weights", "errors": ["gen 1 feedback: did not parse"]}}),
    (("finetune:abc",), "custom", {"event": "dataset", "generation": 2, "rows": 12}),
    (("finetune:abc",), "updates", {"build_dataset": {"dataset_rows": 12}}),
    (("finetune:abc",), "custom", {"generation": 2, "event": "train_begin", "step": 0, "max_steps": 4}),
    (("finetune:abc",), "custom", {"generation": 2, "event": "train_step", "step": 2, "max_steps": 4, "loss": 2.5}),
    (("finetune:abc",), "custom", {"generation": 2, "event": "done", "backend": "trl", "steps": 4,
                                   "train_loss": 2.1, "wall_s": 9.0}),
    ((), "updates", {"finetune": None}),
    ((), "updates", {"__interrupt__": ()}),
]
FINAL = {"history": [gen_row(1, "meta", 0.25, 0.2, True, "reference agent"),
                     gen_row(2, "weights", 0.5, 0.3, True, "LoRA on 12 rows")], "errors": ["gen 1 feedback: did not parse"]}


def test_run_streams_and_prints_the_table(capsys, tmp_path, monkeypatch):
    fake = FakeGraph(SCRIPT, FINAL)
    use_graph(monkeypatch, fake)
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "run", "--task", "lawbench-mini", "--run-id", "r1", "--generations", "2",
                             "--policy", "alternate", "--limit", "4", "--runs-dir", str(runs))
    assert code == 0, err
    payload, thread, kwargs = fake.calls[0]
    assert payload.run_id == "r1" and payload.limit == 4 and payload.policy == "alternate"
    assert thread == {"configurable": {"thread_id": "r1"}}
    assert kwargs["stream_mode"] == ["updates", "custom"] and kwargs["subgraphs"]
    assert kwargs["context"].config.runs_dir == runs
    assert json.loads((runs / "r1" / "inputs.json").read_text())["max_generations"] == 2
    assert RunConfig.load(runs / "r1" / "config.json").runs_dir == runs
    assert "accepted" in out and "trained (trl): 4 steps" in out and "12 rows" in out
    assert "LoRA on 12 rows" in out and "did not parse" in out and "loop time" in out
    assert not (runs / "r1" / "sia.pid").exists()


def test_a_failing_run_prints_one_paragraph_and_exits_1(capsys, tmp_path, monkeypatch):
    use_graph(monkeypatch, FakeGraph(SCRIPT[:3], {}, error=RuntimeError("gateway died")))
    code, out, err = run_cli(capsys, "run", "--task", "lawbench-mini", "--run-id", "r2", "--runs-dir", str(tmp_path))
    assert code == 1
    assert "RuntimeError: gateway died" in err and "sia resume r2" in err and "Traceback" not in err + out


def test_resume_continues_from_the_checkpoint(capsys, runs_dir, monkeypatch):
    fake = FakeGraph(SCRIPT[4:], FINAL, values={"generation": 1, "history": FINAL["history"][:1]}, next_=("feedback",))
    use_graph(monkeypatch, fake)
    code, out, err = run_cli(capsys, "resume", "killed", "--runs-dir", str(runs_dir))
    assert code == 0, err
    assert fake.calls[0][0] is None and "Resuming killed at feedback" in out
    assert fake.calls[0][2]["context"].config.runs_dir == runs_dir


def test_resume_of_a_finished_run_prints_the_table(capsys, runs_dir, monkeypatch):
    fake = FakeGraph([], FINAL, values=FINAL, next_=())
    use_graph(monkeypatch, fake)
    code, out, _ = run_cli(capsys, "resume", "done", "--runs-dir", str(runs_dir))
    assert code == 0 and not fake.calls and "already finished" in out and "LoRA on 12 rows" in out


def test_live_view_tracks_generation_and_node():
    view = LiveView("r", FakeGraph.builder, "meta")
    for ns, mode, chunk in SCRIPT[:7]:
        view.handle(ns, mode, chunk)
    assert (view.gen, view.node) == (1, "finetune")
    for ns, mode, chunk in SCRIPT[7:11]:
        view.handle(ns, mode, chunk)
    assert view.gen == 2 and view.train is not None
    assert view.progress.tasks[view.train].completed == 2
    view.handle((), "updates", {"finetune": {"generation": 2}})
    assert view.node == "task"


def test_ctrl_c_keeps_the_run_resumable(capsys, tmp_path, monkeypatch):
    use_graph(monkeypatch, FakeGraph(SCRIPT[:3], {}, error=KeyboardInterrupt()))
    code, _, err = run_cli(capsys, "run", "--task", "lawbench-mini", "--run-id", "r3", "--runs-dir", str(tmp_path))
    err = " ".join(err.split())  # rich wraps long paragraphs
    assert code == 130 and "Interrupted" in err and f"sia resume r3 --runs-dir {tmp_path}" in err
    assert not (tmp_path / "r3" / "sia.pid").exists()
    from sia.config import SandboxLimits
    from sia.sandbox.live import allow_new_sandboxes
    from sia.sandbox.runner import run_sandboxed

    assert run_sandboxed(["/usr/bin/true"], tmp_path / "w", {}, SandboxLimits()).interrupted  # nothing new starts
    allow_new_sandboxes()  # (this process goes on with other tests)


def test_without_isolation_a_run_needs_the_unsafe_flag_and_is_marked(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("sia.sandbox.runner.missing_protections", lambda: ["bubblewrap (apt install bubblewrap)"])
    use_graph(monkeypatch, FakeGraph(SCRIPT, FINAL))
    code, _, err = run_cli(capsys, "run", "--task", "lawbench-mini", "--run-id", "u", "--runs-dir", str(tmp_path))
    assert code == 1 and "--unsafe-sandbox" in err and "bubblewrap" in err
    assert not (tmp_path / "u").exists()  # refused before the run folder is made: the same id works next
    code, _, err = run_cli(capsys, "run", "--task", "lawbench-mini", "--run-id", "u", "--runs-dir", str(tmp_path),
                           "--unsafe-sandbox")
    assert code == 0 and "UNSAFE SANDBOX" in " ".join(err.split())
    assert json.loads((tmp_path / "u" / "isolation.json").read_text()) == {"isolation": "unsafe"}
    assert RunConfig.load(tmp_path / "u" / "config.json").sandbox.allow_unsafe
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", str(tmp_path))
    assert code == 0 and "unsafe" in out


def test_run_and_resume_sweep_what_a_killed_run_left(capsys, runs_dir, monkeypatch):
    from sia.sandbox.boxes import Box

    use_graph(monkeypatch, FakeGraph(SCRIPT[4:], FINAL, values={"generation": 1}, next_=("feedback",)))
    box = Box.create(64999, [])  # as a sandbox of a run killed with SIGKILL leaves it
    box.record(runs_dir / "killed" / "sandboxes")
    code, _, err = run_cli(capsys, "resume", "killed", "--runs-dir", str(runs_dir))
    assert code == 0 and "swept 1 sandbox" in err
    assert not box.path.exists() and not list((runs_dir / "killed" / "sandboxes").iterdir())


# ---- sia tasks list / sia eval ----

def test_tasks_list_shows_builtin_and_prepared_tasks(capsys, tmp_path, monkeypatch):
    from tests.fakes import make_tiny_task

    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    make_tiny_task(tmp_path / "cache" / "tasks" / "tiny")
    code, out, _ = run_cli(capsys, "tasks", "list")
    assert code == 0
    tiny = next(line for line in out.splitlines() if line.startswith("tiny"))
    assert "csv-classification" in tiny and "prepared" in tiny and tiny.split()[4:6] == ["24", "7"]
    assert "lawbench-mini" in out  # built in, prepared on first use


@pytest.mark.parametrize("answer, split, expected", [
    ("gold", "test", "accuracy 1.00000 on 7 test items"),
    ("theft", "test", "accuracy 0.28571 on 7 test items"),  # 2 of 7: the trivial all-one-label submission
    ("gold", "selection", "accuracy 1.00000 on 6 selection items"),
])
def test_eval_scores_a_submission_on_a_split(capsys, tmp_path, answer, split, expected):
    import csv

    from sia.tasks.csv_task import CsvTask
    from tests.fakes import make_tiny_task

    task_dir = make_tiny_task(tmp_path / "tiny")
    rows = CsvTask.load(task_dir).splits()[split]
    with open(tmp_path / "sub.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "label")] + [(r["id"], r["label"] if answer == "gold" else answer) for r in rows])
    code, out, _ = run_cli(capsys, "eval", "--task-dir", str(task_dir), "--submission", str(tmp_path / "sub.csv"),
                           "--split", split)
    assert code == 0 and expected in out


def test_eval_names_a_bad_submission(capsys, tmp_path):
    from tests.fakes import make_tiny_task

    task_dir = make_tiny_task(tmp_path / "tiny")
    (tmp_path / "sub.csv").write_text("PassengerId,Transported\n1,True\n")
    code, _, err = run_cli(capsys, "eval", "--task-dir", str(task_dir), "--submission", str(tmp_path / "sub.csv"))
    assert code == 1 and "sub.csv must have columns id,label" in err


def lawbench_file(path: Path, n: int = 20) -> Path:
    charges = ["盗窃", "诈骗", "故意伤害", "抢劫"]
    items = [{"instruction": "请预测罪名", "question": f"案情{i}：被告人{charges[i % 4]}他人财物。",
              "answer": "罪名:" + (charges[i % 4] if i % 5 else f"{charges[i % 4]};{charges[(i + 1) % 4]}")}
             for i in range(n)]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def test_import_lawbench_makes_a_multilabel_task_scored_by_f1(capsys, tmp_path, monkeypatch):
    import csv

    from sia.tasks.csv_task import CsvTask
    from sia.sandbox.runner import SubprocessSandbox
    from sia.config import SandboxLimits

    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = run_cli(capsys, "tasks", "import-lawbench", str(lawbench_file(tmp_path / "3-3.json")))
    assert code == 0 and "lawbench-3-3: 4 labels, 16 training and 4 test items, scored by mean F1" in out
    task = CsvTask.load(tmp_path / "cache" / "tasks" / "lawbench-3-3")
    gold = {r["id"]: r["label"] for r in task.splits()["test"]}
    run = lambda preds: task.score_items(preds, gold, sandbox=SubprocessSandbox(),  # noqa: E731
                                         limits=SandboxLimits(memory_mb=1024), python=sys.executable)
    assert set(run({i: g.replace(";", " 和 ") for i, g in gold.items()}).values()) == {1.0}  # every charge named
    assert set(run({i: "无" for i in gold}).values()) == {0.0}  # abstention
    two = {"a": "盗窃;诈骗"}
    half = task.score_items({"a": "盗窃"}, two, sandbox=SubprocessSandbox(), limits=SandboxLimits(memory_mb=1024),
                       python=sys.executable)
    assert half == {"a": pytest.approx(2 / 3)}  # P={盗窃}, G={盗窃,诈骗}: F1 = 2*1/(1+2)
    with open(tmp_path / "sub.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "label")] + [(i, g.split(";")[0]) for i, g in gold.items()])
    code, out, _ = run_cli(capsys, "eval", "--task", "lawbench-3-3", "--submission", str(tmp_path / "sub.csv"))
    assert code == 0 and "mean F1" in out


def test_import_lawbench_names_a_bad_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "bad.json").write_text('[{"question": "x"}]')
    code, _, err = run_cli(capsys, "tasks", "import-lawbench", str(tmp_path / "bad.json"))
    assert code == 1 and "bad.json: expected a JSON list of items with 'question' and 'answer' (an item has no 'answer')" \
        in " ".join(err.split())
