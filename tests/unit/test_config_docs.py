"""docs/config.md is generated from the pydantic models of sia/config.py and must match them."""

from __future__ import annotations

from sia.config import RunConfig
from sia.config_docs import main, nested_models, render
from tests.fakes import REPO

DOC = REPO / "docs" / "config.md"


def test_docs_config_md_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/config.md does not match sia/config.py: regenerate it with `make docs` "
        "(or `.venv/bin/python -m sia.config_docs` from the repository root) and commit the result")


def test_every_field_of_every_model_is_listed():
    text = render()
    for model in (RunConfig, *(m for m, _ in nested_models(RunConfig))):
        assert f"## {model.__name__}\n" in text
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} missing"


def test_render_is_deterministic_and_check_mode_agrees(tmp_path):
    assert render() == render()
    out = tmp_path / "config.md"
    assert main([str(out), "--check"]) == 1  # missing file
    assert main([str(out)]) == 0 and out.read_text(encoding="utf-8") == render()
    assert main([str(out), "--check"]) == 0
    out.write_text(render().replace("| `lora_r` |", "| `lora_rank` |"), encoding="utf-8")
    assert main([str(out), "--check"]) == 1
