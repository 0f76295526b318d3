"""LoRA adapters loaded into a serving gateway at run time, by name, the way vLLM serves them
(`sia serve --runtime-lora`): so that one client path (gateway.remote_adapters) drives vLLM and
our own gateway alike, and tests can stand our gateway in for a vLLM server.

- `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and `POST /v1/unload_lora_adapter
  {"lora_name"}`, allowed only to the gateway's admin token (the one `sia serve` prints; never an
  agent's). Replies are vLLM's: 200 "Success: …", 400 "… has already been loaded.", 404 "… cannot
  be found." (gateway.asgi answers them).
- A chat request whose `model` names a loaded adapter is served by base + that adapter and
  recorded with it; any other `model` is the base model, as before.
`open_backend(adapter_dir or None)` makes the backend of one set of weights (an `Engine` for
`sia serve`); backends are opened on first use and dropped on unload.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable

NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RuntimeAdapters:
    def __init__(self, open_backend: Callable[[Path | None], object]):
        self.open_backend = open_backend
        self.paths: dict[str, Path] = {}
        self._backends: dict[str | None, object] = {}
        self._lock = threading.Lock()

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self.paths

    def load(self, body: dict) -> tuple[int, str]:
        """(status, message) of a load request; the adapter's folder is checked, not yet read."""
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not NAME.match(name) or not isinstance(path, str) or not path:
            return 400, "lora_name (1-128 letters, digits or ._:-) and lora_path (a folder) are required"
        folder = Path(path)
        if not (folder / "adapter_config.json").is_file():
            return 400, f"no LoRA adapter at {path} (adapter_config.json missing)"
        with self._lock:
            if name in self.paths:
                return 400, (f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                             "in place, set 'load_inplace' to True.")  # vLLM 0.32's words
            self.paths[name] = folder
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict) -> tuple[int, str]:
        name = body.get("lora_name")
        with self._lock:
            if not isinstance(name, str) or self.paths.pop(name, None) is None:
                return 404, f"The lora adapter '{name}' cannot be found."
            self._backends.pop(name, None)
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def backend_for(self, name: str | None):
        """The gateway's `backend_for`: None is the base model, a loaded name base + that adapter.
        Opened outside the lock: a load or unload request (answered on the event loop) never waits
        for a model to load."""
        with self._lock:
            backend, path = self._backends.get(name), self.paths.get(name)
        if backend is not None:
            return backend
        if name is not None and path is None:
            raise KeyError(f"LoRA adapter '{name}' is not loaded")
        backend = self.open_backend(path)
        with self._lock:
            if self.paths.get(name) != path:  # unloaded (or loaded anew) meanwhile: never cache stale weights
                raise KeyError(f"LoRA adapter '{name}' was unloaded while it loaded")
            return self._backends.setdefault(name, backend)
