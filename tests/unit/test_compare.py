"""`sia compare` driving the real graph on the tiny task, offline (scripted models, fake backends,
FakeTrainer): which arm pulls which lever and feeds which row, arms as ordinary runs, a failed arm
continued without redoing the finished one, and the command's refusals."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from sia.cli.main import main
from sia.config import RunConfig
from tests.fakes import fake_config, fake_model_cache, fake_services_for, make_tiny_task, shutdown

META_KEEP = json.dumps({"edit": "none"})
FEEDBACK = {  # the Feedback-Agent's replies per policy (the scaffold-only policy overrules a "weights" lever)
    "scaffold-only": [json.dumps({"diagnosis": "always the first label", "lever": "weights"}),
                      json.dumps({"edit": "retrieved-shots-2"})],
    "llm": [json.dumps({"diagnosis": "always the first label", "lever": "weights"})],
}


def replies_for(run_id: str):
    return [META_KEEP] * 3, FEEDBACK[run_id.rsplit("-s", 1)[0]] * 3


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Fake services for every run the CLI drives; a config file with quick sandbox limits."""
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    services_for = fake_services_for(tmp_path, replies_for)
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    yield services_for, config
    for svc in services_for.made.values():
        shutdown(svc)


def compare(capsys, task_dir, runs, config, *extra):
    code = main(["compare", "--task-dir", str(task_dir), "--policies", "scaffold-only,llm", "--generations", "2",
                 "--compare-id", "c", "--config", str(config), "--runs-dir", str(runs), *extra])
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())  # rich wraps long paragraphs


def generation_rows(runs, arm):
    with sqlite3.connect(runs / "compares" / "c" / "arms" / arm / "run.db") as db:
        return db.execute("select * from generations order by generation").fetchall()  # `created` included


@pytest.mark.slow  # four arms: about 30 s on two cores
def test_compare_routes_levers_to_rows_and_resumes_as_a_no_op(capsys, tmp_path, task_dir, offline):
    services_for, config = offline
    runs = tmp_path / "runs"
    code, out, err = compare(capsys, task_dir, runs, config, "--seeds", "2")
    assert code == 0, err
    folder = runs / "compares" / "c"
    table = json.loads((folder / "table.json").read_text())
    arms = {a["arm"]: a for a in table["arms"]}
    assert list(arms) == ["scaffold-only-s0", "llm-s0", "scaffold-only-s1", "llm-s1"]  # seed by seed
    for seed in (0, 1):
        scaffold, llm = arms[f"scaffold-only-s{seed}"], arms[f"llm-s{seed}"]
        assert scaffold["levers"] == ["meta", "scaffold"] and not scaffold["pulled_weights"]
        assert services_for.made[f"scaffold-only-s{seed}"].trainer.calls == []  # never trained, though asked to
        assert llm["levers"] == ["meta", "weights"] and llm["final_adapter"] == "adapters/gen_2"
        assert len(services_for.made[f"llm-s{seed}"].trainer.calls) == 1
        arm_cfg = RunConfig.load(folder / "arms" / f"llm-s{seed}" / "config.json")
        assert (arm_cfg.keep_best.seed, arm_cfg.finetune.seed) == (seed, seed)
        assert arm_cfg.runs_dir == folder / "arms"
    initial, h, wh = table["rows"]
    assert (initial["key"], h["key"], wh["key"]) == ("initial", "H", "W+H")
    assert initial["test"] == pytest.approx(2 / 7) and initial["n_items"] == 7 and len(initial["arms"]) == 4
    assert h["arms"] == ["scaffold-only-s0", "scaffold-only-s1"]
    assert all(inc["adapter"] is None for inc in h["incumbents"].values())
    assert wh["arms"] == ["llm-s0", "llm-s1"] and wh["label"] == "best scaffold+weights (W+H): llm"
    assert all(inc == {"generation": 2, "adapter": "adapters/gen_2"} for inc in wh["incumbents"].values())
    for row in (h, wh):  # keyword items right, the test-only "perjury" item wrong
        assert row["test"] == pytest.approx(6 / 7) and row["per_seed"] == pytest.approx({"0": 6 / 7, "1": 6 / 7})
        assert row["vs_initial"]["delta"] == pytest.approx(4 / 7) and row["vs_initial"]["n"] == 7
        # diffs: four items +1, three 0, so a resample's mean is K/7 with K ~ Binomial(7, 4/7):
        # P(K <= 5) = 0.916 < 0.975 <= P(K <= 6) = 0.980, and P(K <= 1) = 0.024, P(K <= 2) = 0.123
        assert row["vs_initial"]["hi"] == pytest.approx(6 / 7) and row["vs_initial"]["lo"] in (
            pytest.approx(1 / 7), pytest.approx(2 / 7))
        assert all(seconds > 0 for seconds in row["loop_s"].values())
    assert wh["vs_h"] == {"delta": 0.0, "lo": 0.0, "hi": 0.0, "n": 7} and h["vs_h"] is None
    md = (folder / "table.md").read_text()
    assert "| best scaffold+weights (W+H): llm | 2 | 0.857 | s0 0.857 · s1 0.857 | +0.571 [" in md
    # each arm's one accepted change: its guard held; no transfer scored yet
    assert all(a["guards"] == "held on 1 of 1 change" and a["transfers"] == {} for a in arms.values())
    assert md.count("| held on 1 of 1 change | not scored |") == 4
    assert "best scaffold-only (H)" in out and "W+H" in out and "Compare folder" in out
    assert json.loads((folder / "compare.json").read_text())["seeds"] == 2

    # an arm is an ordinary run folder
    assert main(["show", "llm-s1", "--runs-dir", str(folder / "arms")]) == 0
    assert "adapters/gen_2" in capsys.readouterr().out

    # continuing a finished compare runs nothing again and prints the same table
    before = {arm: generation_rows(runs, arm) for arm in arms}
    assert main(["compare", "--resume", "c", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, not run again") == 4 and "best scaffold-only (H)" in out
    assert {arm: generation_rows(runs, arm) for arm in arms} == before
    assert json.loads((folder / "table.json").read_text())["rows"] == table["rows"]


def test_a_failed_arm_names_itself_and_the_same_command_continues(capsys, tmp_path, task_dir, offline, monkeypatch):
    services_for, config = offline
    down = {"llm-s0"}

    def flaky(config, run_id):
        if run_id in down:
            raise RuntimeError("the target model's backend is down")
        return services_for(config, run_id)

    monkeypatch.setattr("sia.nodes.services.services_for", flaky)
    runs = tmp_path / "runs"
    code, out, err = compare(capsys, task_dir, runs, config)
    assert code == 1
    assert "Arm llm-s0 of compare c stopped" in err and "backend is down" in err
    assert f"continue with `sia compare --resume c --runs-dir {runs}`" in err and "Traceback" not in err + out
    assert not (runs / "compares" / "c" / "table.json").exists()
    finished = generation_rows(runs, "scaffold-only-s0")
    assert [row[1] for row in finished] == [1, 2]

    (runs / "compares" / "c" / "compare.pid").write_text(str(os.getppid()))  # a live process holds it
    code, _, err = compare(capsys, task_dir, runs, config)
    assert code == 1 and "is being run by process" in err
    (runs / "compares" / "c" / "compare.pid").unlink()

    down.clear()
    made_before = set(services_for.made)
    code, out, err = compare(capsys, task_dir, runs, config)  # the same command again
    assert code == 0, err
    assert "scaffold-only-s0: finished earlier, not run again" in out and "llm-s0 · policy llm · seed 0 · continuing" in out
    assert generation_rows(runs, "scaffold-only-s0") == finished
    assert set(services_for.made) - made_before == {"llm-s0"}  # only the failed arm ran
    rows = json.loads((runs / "compares" / "c" / "table.json").read_text())["rows"]
    assert [r["key"] for r in rows] == ["initial", "H", "W+H"]


def test_compare_refusals(capsys, tmp_path, task_dir, monkeypatch):
    runs = tmp_path / "runs"
    common = ["--task-dir", str(task_dir), "--runs-dir", str(runs), "--compare-id", "c"]

    def err_of(*argv):
        code = main(["compare", *argv])
        assert code == 1
        return " ".join(capsys.readouterr().err.split())

    assert "unknown bogus" in err_of(*common, "--policies", "llm,bogus")
    assert "listed twice" in err_of(*common, "--policies", "llm,llm")
    assert "--seeds must be at least 1" in err_of(*common, "--seeds", "0")
    assert "letters, digits" in err_of(*common[:-1], "../elsewhere")
    assert "no compare 'nope'" in err_of("--resume", "nope", "--runs-dir", str(runs))
    monkeypatch.setattr("sia.sandbox.runner.missing_protections", lambda: ["bubblewrap (apt install bubblewrap)"])
    assert "--unsafe-sandbox" in err_of(*common)
    assert not runs.exists()  # refused before any folder is made: the same --compare-id works next
    folder = runs / "compares" / "c"
    folder.mkdir(parents=True)
    (folder / "compare.json").write_text(json.dumps({"compare_id": "c", "task": str(task_dir), "seeds": 3}))
    assert "exists with another policies, seeds, generations, config" in err_of(*common)
    assert "drop --seeds" in err_of("--resume", "c", "--seeds", "2", "--runs-dir", str(runs))
