"""`sia web`: the dashboard's pages against a small run folder written here (run.db through RunDB's
own save_* methods, a generation folder, an adapter folder), through Starlette's TestClient; and
`sia web --port 0` as a real process. No browser (tests/e2e/test_web_browser.py has one)."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sia.checkpoints.rundb import RunDB
from sia.cli.web import create_app
from sia.records import ItemResult, ModelCall
from sia.checkpoints.rundb import open_run_db

GENERATIONS = [  # three generations: the first agent, an accepted scaffold rewrite, a rejected adapter
    {"generation": 1, "lever": "meta", "scaffold_sha": "sha1", "adapter": None, "feedback": 0.5, "selection": 0.6,
     "test": 0.55, "accepted": 1, "note": "reference agent"},
    {"generation": 2, "lever": "scaffold", "scaffold_sha": "sha2", "adapter": None, "feedback": 0.75,
     "selection": 0.7, "test": 0.65, "accepted": 1, "p_value": 0.04, "guards": "held (macro_recall)"},
    {"generation": 3, "lever": "weights", "scaffold_sha": "sha2", "adapter": "adapters/gen_3", "feedback": None,
     "selection": 0.68, "test": None, "accepted": 0, "p_value": 0.6},
]
# gen 2's feedback items: (item, gold, prediction); right where they agree
ITEMS = [("i1", "theft", "theft"), ("i2", "fraud", "theft"), ("i3", "fraud", "fraud"), ("i4", "arson", "theft")]
DIFF = "--- incumbent/target_agent.py\n+++ gen_2/target_agent.py\n@@ -1,2 +1,2 @@\n-SHOTS = 0\n+SHOTS = 2\n"
LOSSES = [1.2, 0.8, 0.5, 0.3]


def make_run(runs: Path, run_id: str = "r") -> Path:
    root = runs / run_id
    root.mkdir(parents=True)
    (root / "inputs.json").write_text(json.dumps({"task": "tiny", "policy": "alternate", "max_generations": 3}))
    db = RunDB(root / "run.db")
    for row in GENERATIONS:
        db.save_generation(dict(row, run_id=run_id))
    for split, sha, adapter in (("feedback", "sha2", "base"), ("selection", "sha2", "base")):
        db.save_items([ItemResult(run_id, 2, sha, adapter, split, item, f"t-{item}", pred, gold, float(pred == gold))
                       for item, gold, pred in ITEMS])
    db.save_items([ItemResult(run_id, 1, "sha1", "base", "selection", item, f"t-{item}", "theft", gold,
                              float(gold == "theft")) for item, gold, _ in ITEMS])
    for k in range(3):
        db.record_call(ModelCall(run_id, 2, None, f"t-i{k}", "task", [{"role": "user", "content": f"case {k} <b>"}],
                                 None, '{"label": "theft"}', 10, 3, 0.05))
    db.save_adapter({"run_id": run_id, "version": "adapters/gen_3", "generation": 3, "path": "x", "examples": 5,
                     "train_loss": 0.3, "selection": 0.68, "promoted": 0, "backend": "fake"})
    db.db.conn.close()  # as a finished run leaves it: no writer, no WAL
    gen = root / "gen_2"
    gen.mkdir()
    (gen / "target_agent.py").write_text("SHOTS = 2\n")
    (gen / "diff.patch").write_text(DIFF)
    (gen / "improvement.md").write_text("# Generation 2\nadd two retrieved shots\n")
    (gen / "task_selection_stdout.log").write_text("x" * 30_000)  # longer than a page shows
    adapter = root / "adapters" / "gen_3"
    adapter.mkdir(parents=True)
    (adapter / "train_summary.json").write_text(json.dumps({"method": "sft", "steps": 4, "examples": 5,
                                                            "loss_history": LOSSES, "backend": "fake"}))
    (adapter / "dataset.jsonl").write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{k}"}],
                                                               "completion": "a"}) + "\n" for k in range(5)))
    (adapter / "dataset_stats.json").write_text(json.dumps({"method": "sft", "rewarded": 4, "gold_target": 1}))
    (root / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"generation": 2, "purpose": "task", "items": {"selection": 4}, "wall_s": 1.5},
        {"generation": 2, "node": "feedback", "wall_s": 0.5, "started": 1.0},
        {"generation": 2, "node": "task", "wall_s": 2.0, "started": 2.0})))
    return root


@pytest.fixture
def runs(tmp_path) -> Path:
    make_run(tmp_path / "runs")
    return tmp_path / "runs"


@pytest.fixture
def client(runs) -> TestClient:
    return TestClient(create_app(runs, poll_s=0.5), base_url="http://127.0.0.1")


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_runs_list_shows_each_run_with_its_numbers_and_a_link(client):
    html = client.get("/").text
    row = re.search(r"<tr><td><a href='/run/r'>r</a></td>(.*?)</tr>", html).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    # task, policy, status, now, generations done/max, best accepted selection, first and last test
    assert cells == ["tiny", "alternate", "interrupted", "", "3/3", "0.700", "0.550", "0.650"]


def test_the_run_page_is_the_report_view_with_links(client):
    html = client.get("/run/r").text
    points = {(int(g), s): float(v) for s, g, v in re.findall(
        r"class='point (\w+)' data-generation='(\d+)' data-score='([\d.]+)'", html)}
    assert points == {(g["generation"], s): g[s] for g in GENERATIONS for s in ("feedback", "selection", "test")
                      if g[s] is not None}
    lineage = text_of(html[html.index("<h2>Lineage"):html.index("<h2>Verdict")])
    assert "2 scaffold gen 1 base accepted 0.040" in lineage and "3 weights gen 2 adapters/gen_3 rejected" in lineage
    assert "href='/run/r/gen/2'" in html and "href='/run/r/adapter/gen_3'" in html
    assert "class='loss'" in html and "data-state='/api/run/r/state'" in html and "data-poll='0.5'" in html
    nodes = text_of(html[html.index("<h3>Wall time by graph node"):])
    assert nodes.startswith("Wall time by graph node (s) gen feedback task total 2 0.5 2.0 2.5")
    assert "<th>tokens</th>" not in html  # no generation row has them


def test_token_and_dollar_columns_appear_when_generations_have_them(runs, client):
    db = RunDB(runs / "r" / "run.db")
    db.save_generation(dict(GENERATIONS[0], run_id="r", tokens=json.dumps({"meta": 5, "target": 70}), usd=0.0123))
    db.db.conn.close()
    html = client.get("/run/r").text
    assert "<th>tokens</th><th>usd</th>" in html and "meta 5 · target 70" in html and "0.0123" in html


def test_the_generation_page_shows_the_diff_items_logs_and_calls_and_filters_without_script(client):
    html = client.get("/run/r/gen/2").text
    assert "<span class='add'>+SHOTS = 2</span>" in html and "<span class='del'>-SHOTS = 0</span>" in html
    assert "add two retrieved shots" in html and "SHOTS = 2" in html
    assert "Items of the feedback split" in html
    assert re.findall(r"data-item='(\w+)'", html) == ["i1", "i2", "i3", "i4"]
    assert "4 of 4 items shown (2 wrong)" in html
    assert "<form class='filters' method='get'>" in html and "name='wrong'" in html and "name='gold'" in html
    wrong = client.get("/run/r/gen/2?wrong=1").text  # what the form submits
    assert re.findall(r"data-item='(\w+)'", wrong) == ["i2", "i4"]
    assert re.findall(r"<tr class='(\w+)'", wrong) == ["wrong", "wrong"]
    fraud = client.get("/run/r/gen/2?gold=fraud").text
    assert re.findall(r"data-item='(\w+)'", fraud) == ["i2", "i3"]
    assert re.findall(r"data-item='(\w+)'", client.get("/run/r/gen/2?gold=fraud&wrong=1").text) == ["i2"]
    assert re.findall(r"data-item='(\w+)'", client.get("/run/r/gen/2?split=selection&wrong=1").text) == ["i2", "i4"]
    assert "task_selection_stdout.log (30000 bytes)" in html
    assert "Only the first 20000 characters of 30000 bytes are shown" in html
    assert "3 calls; showing 1–3" in html and "case 0 &lt;b&gt;" in html  # message text escaped


def test_a_generation_in_flight_has_a_page_before_run_db_has_its_row(runs, client):
    (runs / "r" / "gen_4").mkdir()
    (runs / "r" / "gen_4" / "improvement.md").write_text("trying three shots")
    assert "<h2>Generations not scored yet</h2><p><a href='/run/r/gen/4'>gen 4</a>" in client.get("/run/r").text
    html = client.get("/run/r/gen/4").text
    assert "Not scored yet" in html and "trying three shots" in html


def test_the_adapter_page_shows_the_loss_curve_rows_and_selection(client):
    html = client.get("/run/r/adapter/gen_3").text
    curve = re.search(r"points='([^']+)' fill='none' stroke='#6f42c1' class='loss'", html)
    assert len(curve.group(1).split()) == len(LOSSES)
    assert "dataset.jsonl: <b>5</b> rows" in html and "gold_target" in html
    assert "promoted <span class='no'>no</span>" in html and "href='/run/r/gen/3'" in html


@pytest.mark.parametrize("url", ["/run/nope", "/run/%2e%2e", "/run/..%2Fr", "/run/r/gen/9", "/run/r/adapter/gen_9",
                                 "/run/r/adapter/%2e%2e", "/run/compares", "/api/run/nope/state", "/run/%2Fetc"])
def test_unknown_or_crafted_names_are_404(client, url):
    # (a literal /run/.. is normalised away by the client; the real-server test below sends it raw)
    assert client.get(url).status_code == 404


def test_a_folder_beside_the_runs_folder_is_never_served(runs, client):
    make_run(runs.parent / "private", "secret")
    for url in ("/run/..%2Fprivate%2Fsecret", "/run/secret", "/run/..%2F..%2Fprivate"):
        assert client.get(url).status_code == 404


def test_no_page_names_another_host_and_the_browser_is_told_so(client):
    for url in ("/", "/run/r", "/run/r/gen/2", "/run/r/adapter/gen_3", "/run/r?fragment=1"):
        reply = client.get(url)
        targets = re.findall(r"""\b(?:src|href|action)\s*=\s*['"]?([^'"\s>]*)""", reply.text, flags=re.I)
        assert targets and all(t.startswith("/") and not t.startswith("//") for t in targets), (url, targets)
        assert not re.search(r"https?://|url\(|@import", reply.text, flags=re.I)
        assert "default-src 'none'" in reply.headers["content-security-policy"]
    script = client.get("/static/live.js")
    assert script.status_code == 200 and "fetch(" in script.text and "http" not in script.text


def test_compares_show_their_table_once_finished_and_their_arms_before(runs, client):
    from sia.compare_table import ArmResult, Incumbent, compare_table, fmt_difference

    spec = {"compare_id": "c1", "task": "tiny", "policies": ["scaffold-only", "llm"], "seeds": 1, "generations": 3,
            "limit": None}
    folder = runs / "compares" / "c1"
    for arm in ("scaffold-only-s0", "llm-s0"):
        make_run(folder / "arms", arm)
    (folder / "compare.json").write_text(json.dumps(spec))
    html = client.get("/").text
    assert "The table appears when the compare finishes." in html and "stopped" in html
    assert "href='/run/llm-s0@c1'>llm-s0</a>" in html and client.get("/run/llm-s0@c1").status_code == 200
    assert client.get("/run/llm-s0").status_code == 404  # an arm is named with its compare
    scores = {"i1": 1.0, "i2": 0.0, "i3": 1.0}
    arms = [ArmResult(arm, policy, 0, ("meta", "scaffold"), Incumbent(1, None, {**scores, "i1": 0.0}),
                      Incumbent(2, None, scores), loop_s=12.5) for arm, policy in
            (("scaffold-only-s0", "scaffold-only"), ("llm-s0", "llm"))]
    table = compare_table(arms, spec["policies"], resamples=200)
    (folder / "table.json").write_text(json.dumps(table))  # what `sia compare` writes when it finishes
    html = client.get("/").text
    assert "finished" in html and "The table appears" not in html
    for row in table["rows"]:
        assert f"<td>{row['label']}</td>" in html
    h_row = next(r for r in table["rows"] if r["key"] == "H")
    assert fmt_difference(h_row["vs_initial"]) in html and "12.5" in html
    assert "href='/run/scaffold-only-s0@c1'>scaffold-only-s0</a>" in html


def test_the_state_changes_when_a_generation_is_appended(runs, client):
    first = client.get("/api/run/r/state").json()
    assert first["status"] == "interrupted" and first["version"] == client.get("/api/run/r/state").json()["version"]
    fragment = client.get("/run/r?fragment=1")
    assert not fragment.text.startswith("<!DOCTYPE") and fragment.headers["x-sia-version"] == first["version"]
    db = RunDB(runs / "r" / "run.db")
    db.save_generation({"run_id": "r", "generation": 4, "lever": "scaffold", "scaffold_sha": "sha4",
                        "selection": 0.9, "test": 0.8, "accepted": 1})
    db.db.conn.close()
    assert client.get("/api/run/r/state").json()["version"] != first["version"]
    assert "data-generation='4' data-score='0.9000'" in client.get("/run/r?fragment=1").text


def test_a_running_run_shows_the_node_in_flight_its_training_and_a_pause(runs, client):
    root = runs / "r"
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process that is not this one: the run's driver
    try:
        (root / "sia.pid").write_text(str(sleeper.pid))
        (root / "now.json").write_text(json.dumps({"node": "train_adapter", "generation": 4,
                                                   "started": time.time() - 12, "pid": sleeper.pid}))
        (root / "adapters" / "gen_4").mkdir()
        (root / "adapters" / "gen_4" / "progress.jsonl").write_text(
            json.dumps({"event": "train_begin", "step": 0, "max_steps": 24}) + "\n"
            + json.dumps({"event": "train_step", "step": 3, "loss": 0.71}) + "\n")
        state = client.get("/api/run/r/state").json()
        assert state["status"] == "running" and (state["node"], state["generation"]) == ("train_adapter", 4)
        assert state["training"] == {"adapter": "adapters/gen_4", "step": 3, "max_steps": 24, "loss": 0.71}
        assert re.fullmatch(r"now: train_adapter \(generation 4, for 1[234]s\) · training adapters/gen_4: "
                            r"step 3/24, loss 0\.710", state["live"])
        assert "<p id='live'>now: train_adapter" in client.get("/run/r").text
        assert "train_adapter (gen 4)" in client.get("/").text
    finally:
        sleeper.kill()
        sleeper.wait()
    assert client.get("/api/run/r/state").json()["live"] == ""  # the driver is gone: nothing runs now
    (root / "paused.json").write_text(json.dumps({"reason": "the budget of 100 tokens is spent"}))
    assert client.get("/api/run/r/state").json()["live"] == "paused: the budget of 100 tokens is spent"


def test_reading_never_writes_into_the_run_folder(runs, client):
    root = runs / "r"

    def listing() -> dict:
        return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}

    before = listing()
    for url in ("/", "/run/r", "/run/r/gen/2?wrong=1", "/run/r/gen/1", "/run/r/adapter/gen_3", "/api/run/r/state",
                "/api/state", "/run/r?fragment=1"):
        assert client.get(url).status_code == 200
    assert listing() == before


def test_the_dashboards_own_reader_leaves_even_the_folders_time_alone(runs):
    """open_run_db: read-only, and immutable where no WAL is there; a plain read-only connection
    would leave run.db-wal and -shm behind."""
    root = runs / "r"
    stamp = root.stat().st_mtime_ns
    conn = open_run_db(root / "run.db")
    assert conn.execute("select count(*) from generations").fetchone() == (3,)
    conn.close()
    assert root.stat().st_mtime_ns == stamp and sorted(p.name for p in root.glob("run.db*")) == ["run.db"]
    writer = RunDB(root / "run.db")  # a live run: its writer holds the WAL open
    writer.save_generation({"run_id": "r", "generation": 4, "lever": "meta", "scaffold_sha": "s"})
    conn = open_run_db(root / "run.db")
    assert conn.execute("select count(*) from generations").fetchone() == (4,)  # sees the uncheckpointed row
    conn.close()
    writer.db.conn.close()


def test_requests_naming_another_host_are_refused(client):
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200


def test_sia_web_serves_on_a_free_port_and_prints_its_url(runs):
    proc = subprocess.Popen([sys.executable, "-m", "sia.cli.main", "web", "--runs-dir", str(runs), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, COLUMNS="200"))
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url and url.group(1) != "0", line + proc.stderr.read() if proc.poll() is not None else line
        with urllib.request.urlopen(url.group(0), timeout=10) as reply:
            assert "<a href='/run/r'>r</a>" in reply.read().decode()
        for raw in ("/run/..", "/run/../r", "/run/r/adapter/..", "/run/../../etc/passwd", "/static/../cli/web.py"):
            conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=10)
            conn.request("GET", raw)  # sent as written, not normalised
            assert conn.getresponse().status == 404, raw
            conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Stopped." in proc.stdout.read()
