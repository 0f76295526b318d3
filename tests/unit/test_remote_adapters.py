"""A remote vLLM/SGLang target keeps the weights lever (gateway.remote_adapters): each adapter the
loop trains is loaded into the engine at run time, scored with requests naming it as their model,
kept when promoted, unloaded when rejected, and loaded again by a resumed run on a restarted
engine. The engine is a second gateway standing in for vLLM (`sia serve --runtime-lora`'s
RuntimeAdapters over fake backends); our requests are also checked against vLLM's documented
shapes, replayed from tests/fixtures/vllm_lora_exchange.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sia.gateway.remote_adapters import RemoteAdapters, served_name
from sia.gateway.runtime_adapters import RuntimeAdapters
from sia.gateway.server import CallScope, Gateway, MemoryRecorder
from sia.graph.state import SIAInput
from sia.nodes.services import Services
from tests.fakes import FakeTrainer, KeywordBackend, fake_config, make_tiny_task, scripted_llm, shutdown

EXCHANGE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_lora_exchange.json"
META_KEEP = json.dumps({"edit": "none"})


class Engine:
    """A gateway serving base + runtime-loaded adapters by name, as vLLM does; `helps` says whether
    an adapter's answers are right (KeywordBackend's adapter bonus)."""

    def __init__(self, helps: bool):
        self.runtime = RuntimeAdapters(lambda path: KeywordBackend("engine-base") if path is None
                                       else KeywordBackend(f"engine+{path}", adapter_bonus=helps))
        self.recorder = MemoryRecorder()
        self.gateway = Gateway(self.runtime.backend_for, self.recorder, model_name="base-model",
                               runtime_adapters=self.runtime).start()
        self.admin = self.gateway.issue_token(CallScope("engine", 0, None, "serve"), quotas=False, admin=True)

    def served_with(self) -> list[str | None]:
        """The adapter (by served name) of each request the engine answered, in order."""
        return [c.adapter_version for c in self.recorder.calls]


@pytest.fixture
def task_dir(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


def services(tmp_path, engine: Engine, monkeypatch, run_id="r"):
    monkeypatch.setenv("ENGINE_KEY", engine.admin)
    weights = tmp_path / "base-weights"
    weights.mkdir(exist_ok=True)
    config = fake_config(tmp_path, target={"base_url": engine.gateway.base_url, "model": "base-model",
                                           "engine": "vllm", "base_weights": str(weights), "api_key_env": "ENGINE_KEY"})
    assert config.weights_available
    return Services.build(config, run_id, trainer=FakeTrainer(),
                          llm_override={"meta": scripted_llm([META_KEEP] * 3), "feedback": scripted_llm([])})


def stream(svc, inputs, checkpointer, **kwargs) -> dict:
    from sia.graph.context import RunContext
    from sia.graph.graph import build_graph

    graph, values = build_graph(checkpointer), {}
    for mode, chunk in graph.stream(inputs, {"configurable": {"thread_id": "r"}}, stream_mode=["values"],
                                    context=RunContext(config=svc.config, services=svc), **kwargs):
        values = chunk
    return values


@pytest.mark.parametrize("helps", [True, False])
def test_an_adapter_is_loaded_scored_by_name_and_kept_or_unloaded(tmp_path, task_dir, monkeypatch, helps):
    engine = Engine(helps)
    svc = services(tmp_path, engine, monkeypatch)
    try:
        final = stream(svc, SIAInput(run_id="r", task=str(task_dir), max_generations=2, policy="weights-only"), None)
    finally:
        shutdown(svc)
        engine.gateway.stop()
    gen2 = final["history"][1]
    name = served_name("r", "adapters/gen_2", svc.paths.root / "adapters" / "gen_2" / "adapter")
    assert gen2.lever == "weights" and gen2.adapter == "adapters/gen_2" and gen2.accepted is helps
    assert svc.trainer.calls[0]["base"] == Path(svc.config.target.base_weights)  # trained on the base weights
    assert svc.backend_for.loaded == [name]
    assert name in engine.served_with() and None in engine.served_with()  # the adapter asked for by name
    assert (name in engine.runtime) is helps  # promoted: kept loaded; rejected: unloaded


def test_a_resumed_run_loads_its_incumbents_adapter_into_a_restarted_engine(tmp_path, task_dir, monkeypatch):
    from langgraph.checkpoint.memory import InMemorySaver

    saver, inputs = InMemorySaver(), SIAInput(run_id="r", task=str(task_dir), max_generations=3, policy="weights-only")
    engine = Engine(helps=True)
    svc = services(tmp_path, engine, monkeypatch)
    stream(svc, inputs, saver, interrupt_after=["task"])  # generation 1 scored
    values = stream(svc, None, saver, interrupt_after=["task"])  # generation 2: its adapter promoted
    shutdown(svc)
    engine.gateway.stop()
    assert values["incumbent"].adapter == "adapters/gen_2"

    restarted = Engine(helps=True)  # a new engine process: nothing loaded
    svc2 = services(tmp_path, restarted, monkeypatch)  # a new `sia resume` process
    try:
        final = stream(svc2, None, saver)
    finally:
        shutdown(svc2)
        restarted.gateway.stop()
    gen2, gen3 = (served_name("r", f"adapters/gen_{n}", svc2.paths.adapter(n) / "adapter") for n in (2, 3))
    assert [h.generation for h in final["history"]] == [1, 2, 3]
    assert svc2.backend_for.loaded[0] == gen2  # the incumbent's adapter, loaded again for its rollouts
    assert gen2 in restarted.served_with() and gen3 in restarted.served_with()


def test_our_requests_match_vllms_documented_shapes(tmp_path, monkeypatch):
    """vLLM's docs (LoRA Adapters, "Dynamically serving LoRA Adapters") give these exchanges
    (tests/fixtures/vllm_lora_exchange.json); the stand-in records what our client sends, and
    answers as the fixture says vLLM does."""
    exchange = json.loads(EXCHANGE.read_text())
    engine, sent = Engine(helps=True), []
    runtime = engine.runtime
    load, unload = runtime.load, runtime.unload
    runtime.load = lambda body: (sent.append(("load", body)), load(body))[1]
    runtime.unload = lambda body: (sent.append(("unload", body)), unload(body))[1]
    monkeypatch.setenv("ENGINE_KEY", engine.admin)
    adapters = RemoteAdapters(_role(tmp_path, engine.gateway.base_url, "ENGINE_KEY"), tmp_path / "r", "r")
    adapter = _adapter(tmp_path / "r")
    try:
        backend = adapters("adapters/gen_2")
        adapters("adapters/gen_2")  # loaded once per process
        backend.generate([_request()])
        assert runtime.load({"lora_name": sent[0][1]["lora_name"], "lora_path": str(adapter)}) == (
            400, exchange["load_again"]["message"].replace("sql_adapter", sent[0][1]["lora_name"]))
        adapters.release("adapters/gen_2")
        adapters.release("adapters/gen_2")  # "cannot be found" is the state wanted: no error
    finally:
        engine.gateway.stop()
    assert [kind for kind, _ in sent] == ["load", "load", "unload", "unload"]
    loaded, unloaded = sent[0][1], sent[2][1]
    assert set(loaded) == set(exchange["load"]["body"]) and set(unloaded) == set(exchange["unload"]["body"])
    assert loaded["lora_path"] == str(adapter) and unloaded["lora_name"] == loaded["lora_name"]
    assert engine.recorder.calls[0].adapter_version == loaded["lora_name"]  # the adapter named as the model
    from sia.gateway.remote import _body

    assert set(exchange["chat"]["body_keys"]) <= set(_body(loaded["lora_name"], _request()))
    assert runtime.unload(exchange["unload"]["body"]) == (404, exchange["unload_missing"]["message"])
    with pytest.raises(Exception, match="no adapter_config.json"):
        adapters("adapters/gen_9")
    adapters.close()  # its clients closed (release_services): the base model is still asked for by name
    assert adapters(None).name == "base-model"


def test_refusals_name_their_cause(tmp_path, monkeypatch):
    plain = Gateway(lambda adapter: KeywordBackend("b"), MemoryRecorder()).start()  # an engine without runtime LoRA
    engine = Engine(helps=True)
    _adapter(tmp_path / "r")
    monkeypatch.setenv("PLAIN_KEY", plain.issue_token(CallScope("x", 0), quotas=False))
    monkeypatch.setenv("AGENT_KEY", engine.gateway.issue_token(CallScope("x", 0)))  # not the admin token
    try:
        with pytest.raises(Exception, match="404.*--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            RemoteAdapters(_role(tmp_path, plain.base_url, "PLAIN_KEY"), tmp_path / "r", "r")("adapters/gen_2")
        with pytest.raises(Exception, match="403.*admin token"):
            RemoteAdapters(_role(tmp_path, engine.gateway.base_url, "AGENT_KEY"), tmp_path / "r", "r")("adapters/gen_2")
        assert not engine.runtime.paths
    finally:
        plain.stop()
        engine.gateway.stop()


def _role(tmp_path, base_url: str, key_env: str):
    return fake_config(tmp_path, target={"base_url": base_url, "model": "base-model", "engine": "vllm",
                                         "base_weights": "/w", "api_key_env": key_env}).target


def _adapter(run_root: Path) -> Path:
    adapter = run_root / "adapters" / "gen_2" / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    return adapter.resolve()


def _request():
    from sia.gateway.protocol import ChatRequest

    return ChatRequest(messages=[{"role": "user", "content": "he stole a bicycle"}], max_tokens=8)


def test_served_names_tell_runs_with_one_id_apart_and_stay_short(tmp_path):
    """Every compare names its arms POLICY-sSEED: two runs with one id must not share a name in the
    server (it would answer "already loaded" and serve the other run's weights)."""
    one = served_name("llm-s0", "adapters/gen_2", tmp_path / "a" / "llm-s0" / "adapters" / "gen_2" / "adapter")
    other = served_name("llm-s0", "adapters/gen_2", tmp_path / "b" / "llm-s0" / "adapters" / "gen_2" / "adapter")
    long = served_name("x" * 300, "adapters/gen_2", tmp_path)
    assert one != other and one.startswith("sia-llm-s0-adapters-gen_2-") and len(long) <= 128
