"""`sia serve --runtime-lora` as a second process standing in for a vLLM server, with the real
embedded model: our client (gateway.remote_adapters) loads a LoRA adapter into it by name, a
request naming the adapter is answered by base + adapter (not the base model), and once unloaded
the name is the base model again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sia.config import RoleConfig
from sia.gateway.protocol import ChatRequest
from sia.gateway.remote_adapters import RemoteAdapters, served_name

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def random_adapter(dest: Path) -> Path:
    """A LoRA adapter for the embedded model whose weights are random (init_lora_weights=False),
    so that it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sia.gateway.model_store import load_model

    torch.manual_seed(0)
    model, _ = load_model(precision="fp32")
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(dest)
    return dest


@pytest.fixture
def serve(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sia.cli.main", "serve", "--runtime-lora", "--port", "0",
                             "--precision", "fp32"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, COLUMNS="200"))
    lines, deadline = [], time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "".join(lines)
        lines.append(line)
        if "API key" in line:
            break
    text = "".join(lines)
    base_url = re.search(r"base URL\s+(\S+)", text).group(1)
    key = re.search(r"API key\s+(sia-\w+)", text).group(1)
    yield base_url, key
    proc.terminate()
    proc.wait(30)


def test_an_adapter_loaded_at_run_time_answers_by_name_until_unloaded(tmp_path, serve, monkeypatch):
    base_url, key = serve
    run_root = tmp_path / "run"
    random_adapter(run_root / "adapters" / "gen_2" / "adapter")
    monkeypatch.setenv("ENGINE_KEY", key)
    role = RoleConfig(base_url=base_url, model="smollm2", engine="vllm", base_weights="/unused",
                      api_key_env="ENGINE_KEY", timeout_s=120)
    adapters = RemoteAdapters(role, run_root, "r")
    ask = [ChatRequest(messages=[{"role": "user", "content": "Name three fruits."}], max_tokens=16)]
    base = adapters(None).generate(ask)[0].text
    tuned = adapters("adapters/gen_2").generate(ask)[0].text
    name = served_name("r", "adapters/gen_2", run_root / "adapters" / "gen_2" / "adapter")
    assert adapters.loaded == [name]
    assert tuned != base  # served by base + the random adapter
    named = adapters("adapters/gen_2")
    adapters.release("adapters/gen_2")
    assert named.name == name
    from sia.gateway.remote import RemoteBackend

    after = RemoteBackend(base_url, named.name, "ENGINE_KEY", timeout_s=120).generate(ask)[0].text
    assert after == base  # unloaded: the name is no adapter any more, the base model answers
