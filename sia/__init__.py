"""SIA: a self-improving AI loop that rewrites its task agent's scaffold or fine-tunes the
target model's weights, offline by default.

The repository's root folders install as subpackages of `sia` (`graph/` is `sia.graph`, and so
on; see pyproject.toml). Modules directly in this folder sit below all of them: shared types and
small helpers that any component may import and that import no component."""

__version__ = "0.1.0"
