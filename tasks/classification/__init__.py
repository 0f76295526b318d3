"""What the classification tasks share (lawbench, lawbench-mini, spaceship-titanic and imported
MLE-bench tables): one reference agent, and the library of scaffold edits that apply to its
SCAFFOLD settings (`edits.py`)."""

import importlib.util
from pathlib import Path

REFERENCE_AGENT = Path(__file__).parent / "reference_agent.py"


def load_reference_agent():
    """A fresh module of the reference agent, loaded from its file (it is a script, run in the
    sandbox as `target_agent.py`): its SCAFFOLD and globals are this copy's own to change."""
    spec = importlib.util.spec_from_file_location("reference_agent", REFERENCE_AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
