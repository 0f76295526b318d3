"""What every `sia` command module shares, below all of them: the user-facing error type.

`cli.main` (the entry point) imports the command modules such as `cli.tasks`; they raise
`CLIError` from here, so no command module needs to import `cli.main` back."""

from __future__ import annotations


class CLIError(Exception):
    """A user-facing error: printed as one message, no traceback."""

