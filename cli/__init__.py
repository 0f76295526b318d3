"""The `sia` command."""
