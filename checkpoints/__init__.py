"""Persistence: run folder layout, the SQLite checkpointer and the run database."""
