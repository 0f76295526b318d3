"""FinetuneConfig: defaults, field limits and cross-field checks (no torch, runs in milliseconds)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sia.config import ALL_LINEAR, FinetuneConfig, describe_errors


def test_defaults_are_the_cpu_profile():
    config = FinetuneConfig()
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.0)
    assert config.target_modules == list(ALL_LINEAR)
    assert (config.learning_rate, config.epochs, config.max_steps) == (1e-3, 3, -1)
    assert (config.batch_size, config.grad_accum, config.max_length) == (8, 1, 1024)
    assert (config.seed, config.save_steps, config.min_examples) == (0, 4, 4)
    assert config.backend == "unsloth" and config.allow_fallback and config.precision == "auto"


def test_a_run_uses_the_configs_own_defaults():
    """One set of defaults per component: the run config does not override them."""
    from sia.config import GatewayConfig, KeepBestConfig, RunConfig, SandboxLimits, ScaffoldConfig

    run = RunConfig()
    assert run.finetune == FinetuneConfig() and run.sandbox == SandboxLimits() and run.keep_best == KeepBestConfig()
    assert run.gateway == GatewayConfig() and run.scaffold == ScaffoldConfig()


@pytest.mark.parametrize("precision, native, expected", [
    ("auto", True, True), ("auto", False, False), ("fp32", True, False), ("bf16", False, True)])
def test_precision_auto_follows_the_hardware(monkeypatch, precision, native, expected):
    from sia import precision as precisions

    monkeypatch.setattr(precisions, "native_bf16", lambda: native)
    assert precisions.use_bf16(precision) is expected


CPUINFO = "model name\t: Test CPU\nflags\t\t: fpu avx512f {extra}\n"


@pytest.mark.parametrize("extra, fp32_s, bf16_s, expected, timed", [
    ("avx512_bf16", 0.010, 0.004, True, True),    # AMX-like: bf16 2.5x faster
    ("avx512_bf16", 0.010, 0.020, False, True),   # AVX512-BF16 without AMX: bf16 slower (measured here)
    ("avx512_bf16", 0.010, 0.009, False, True),   # faster, but not by enough to pay for the rounding
    ("", 0.010, 0.001, False, False),             # no bf16 instructions: emulated, never timed
])
def test_auto_precision_times_bf16_against_fp32_once_per_cpu(monkeypatch, tmp_path, extra, fp32_s, bf16_s, expected, timed):
    import torch

    from sia import precision

    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra=extra))
    timings = []
    monkeypatch.setattr(precision, "_matmul_seconds",
                        lambda dtype: timings.append(dtype) or (bf16_s if dtype == torch.bfloat16 else fp32_s))
    check = precision.native_bf16.__wrapped__  # the uncached function: each call re-reads the record
    assert check() is expected
    assert check() is expected
    assert timings == ([torch.float32, torch.bfloat16] if timed else [])  # the second answer came from the record
    if timed:
        (entry,) = json.loads((tmp_path / "bf16_check.json").read_text()).values()
        assert entry["bf16_faster"] is expected and entry["fp32_s"] == fp32_s


def test_auto_precision_still_answers_when_its_record_cannot_be_written(monkeypatch, tmp_path):
    import torch

    from sia import precision

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the cache "folder" is a file: every write under it fails
    monkeypatch.setattr(precision, "cache_dir", lambda: blocker)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra="amx_bf16"))
    monkeypatch.setattr(precision, "_matmul_seconds", lambda dtype: 0.002 if dtype == torch.bfloat16 else 0.01)
    assert precision.native_bf16.__wrapped__() is True
    assert blocker.is_file() and blocker.read_text() == ""


def test_every_field_is_documented():
    for name, field in FinetuneConfig.model_fields.items():
        assert field.description, name


def test_json_round_trip():
    config = FinetuneConfig(max_steps=7, backend="trl", target_modules=["q_proj", "v_proj"])
    assert FinetuneConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_steps": 0}, "max_steps=0"),
        ({"max_steps": -5}, "max_steps=-5"),
        ({"lora_r": 4, "lora_alpha": 512}, "lora_alpha / lora_r"),
        ({"lora_r": 256, "lora_alpha": 1}, "lora_alpha / lora_r"),
        ({"target_modules": []}, "at least 1"),
        ({"target_modules": ["q_proj", "q_proj"]}, "more than once"),
        ({"target_modules": ["model.layers.0.q_proj"]}, "plain layer names"),
        ({"lora_dropout": 1.0}, "less than 1"),
        ({"learning_rate": 0}, "greater than 0"),
        ({"epochs": 0}, "greater than 0"),
        ({"batch_size": 0}, "greater than or equal to 1"),
        ({"save_steps": 0}, "greater than or equal to 1"),
        ({"max_length": 8}, "greater than or equal to 16"),
        ({"backend": "axolotl"}, "'unsloth' or 'trl'"),
        ({"precision": "fp16"}, "'auto', 'fp32' or 'bf16'"),
        ({"lora_rank": 8}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValidationError) as error:
        FinetuneConfig(**kwargs)
    assert message in describe_errors(error.value)


def test_assignment_is_validated_too():
    config = FinetuneConfig()
    with pytest.raises(ValidationError, match="max_steps=0"):
        config.max_steps = 0


def test_describe_errors_names_the_fields():
    with pytest.raises(ValidationError) as error:
        FinetuneConfig.model_validate({"lora_r": 0, "bogus": 1})
    text = describe_errors(error.value)
    assert text.startswith("lora_r: ") and "bogus: Extra inputs are not permitted" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "kwargs, n_examples, steps",
    [
        ({}, 16, 6),  # 2 batches of 8 per epoch, 3 epochs
        ({}, 17, 9),  # a partial last batch is still a step
        ({"grad_accum": 2}, 16, 3),
        ({"epochs": 0.5}, 40, 3),
        ({"max_steps": 4}, 1000, 4),
    ],
)
def test_total_steps_matches_the_trainer_schedule(kwargs, n_examples, steps):
    assert FinetuneConfig(**kwargs).total_steps(n_examples) == steps
