"""`langgraph dev` serves the graph that langgraph.json exports, offline: the `sia` assistant
exists and its x-ray drawing shows the loop's nodes and both lever subgraphs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LANGGRAPH = REPO / ".venv" / "bin" / "langgraph"
NODES = ["meta", "task", "feedback", "scaffold_rewrite", "finetune", "finish"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_langgraph_dev_serves_the_sia_graph(tmp_path):
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed in .venv (pip install -e '.[dev]')")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, LANGSMITH_TRACING="false", LANGGRAPH_CLI_NO_ANALYTICS="1",
               LANGGRAPH_NO_VERSION_CHECK="true", SIA_RUNS_DIR=str(tmp_path / "runs"))
    log = (tmp_path / "langgraph-dev.log").open("wb")
    proc = subprocess.Popen([str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{(tmp_path / 'langgraph-dev.log').read_text()[-3000:]}")
            try:
                if call(f"{base}/ok", timeout=2).get("ok"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not serve within 90 s:\n{(tmp_path / 'langgraph-dev.log').read_text()[-3000:]}")
            time.sleep(0.5)

        assistants = call(f"{base}/assistants/search", {"graph_id": "sia"})
        sia = [a for a in assistants if a["graph_id"] == "sia"]
        assert sia, assistants
        drawing = call(f"{base}/assistants/{sia[0]['assistant_id']}/graph?xray=true")
        ids = {n["id"] for n in drawing["nodes"]}
        for node in NODES:
            assert node in ids or any(i.startswith(node + ":") for i in ids), (node, sorted(ids))
        # x-ray opens both lever subgraphs.
        assert "scaffold_rewrite:propose_scaffold" in ids and "finetune:train_adapter" in ids, sorted(ids)
        schemas = call(f"{base}/assistants/{sia[0]['assistant_id']}/schemas")
        assert {"run_id", "task", "max_generations", "policy"} <= set(schemas["input_schema"]["properties"])
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
