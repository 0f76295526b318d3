"""What every `sia` command module shares, below all of them: the user-facing error type and
reading a JSON file a run may not have written (yet).

`cli.main` (the entry point) imports the command modules such as `cli.tasks`; they raise
`CLIError` from here, so no command module needs to import `cli.main` back."""

from __future__ import annotations

import json
from pathlib import Path


class CLIError(Exception):
    """A user-facing error: printed as one message, no traceback."""


def read_json(path: Path) -> dict:
    """The object in `path`, or {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
