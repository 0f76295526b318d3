"""What the classification tasks share (lawbench, lawbench-mini, spaceship-titanic and imported
MLE-bench tables): one reference agent, and the library of scaffold edits that apply to its
SCAFFOLD settings (`edits.py`)."""

from pathlib import Path

REFERENCE_AGENT = Path(__file__).parent / "reference_agent.py"
