"""The target's backends when a remote vLLM or SGLang server serves it: the base model, and each
LoRA adapter the loop trained, loaded into the server at run time and asked for by name.

`RemoteAdapters(role, run_root, run_id)` is a gateway `backend_for(adapter_version)`:
- None: the base model (`role.model`).
- "adapters/gen_N": the adapter in RUN/adapters/gen_N/adapter, loaded into the server on first use
  in this process under a name fixed by the run, version and path (`served_name`), so a resumed run
  (a new process, maybe a restarted server) loads it again the same way; "already loaded" counts
  as loaded. Requests then name it as their model: vLLM takes the adapter's name; SGLang takes
  "BASE:NAME".
- `release(version)`: unloads it (a rejected adapter, or an incumbent's replaced one); "not
  loaded" counts as unloaded.

The endpoints are the engines' documented ones: vLLM `POST {base_url}/load_lora_adapter` and
`/unload_lora_adapter` (base_url ends in /v1; the server started with --enable-lora and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), SGLang `POST /load_lora_adapter` and `/unload_lora_adapter`
at the server's root; the body is {"lora_name", "lora_path"} (unload: {"lora_name"}). Our own
`sia serve --runtime-lora` speaks vLLM's, so tests run this path against a second gateway.
The adapter's folder must be readable by the server at the same path (one machine, or a shared
filesystem): the server reads the weights, they never travel over HTTP.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

import httpx

from sia.config import RoleConfig
from sia.gateway.remote import RemoteBackend, RemoteError


def served_name(run_id: str, version: str, adapter_dir: Path) -> str:
    """The adapter's name in the server: readable (the run and the version, cut short) and unique
    (a hash of the adapter folder's absolute path). Run ids repeat (every `sia compare` names its
    arms POLICY-sSEED), and a server keeps what it loaded: with the path in the name, "already
    loaded" can only mean these very weights (a resumed run loading its own adapter again)."""
    digest = hashlib.sha256(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run_id[:60]}-{version[-30:]}")
    return f"sia-{readable}-{digest}"


class RemoteAdapters:
    def __init__(self, role: RoleConfig, run_root: Path, run_id: str):
        if role.engine not in ("vllm", "sglang"):
            raise ValueError(f"RemoteAdapters needs a vllm or sglang target engine, not {role.engine!r}")
        self.role, self.run_root, self.run_id = role, Path(run_root), run_id
        base = role.base_url.rstrip("/")
        # vLLM's admin endpoints sit beside /v1/chat/completions; SGLang's at the server's root
        self.admin_url = base if role.engine == "vllm" else re.sub(r"/v1$", "", base)
        self._backends: dict[str | None, RemoteBackend] = {None: RemoteBackend.for_role(role)}
        self._lock = threading.Lock()
        self.loaded: list[str] = []  # names loaded by this process, in order (for tests and logs)

    def __call__(self, version: str | None) -> RemoteBackend:
        with self._lock:
            if version is None and None not in self._backends:  # after close(): the base model again
                self._backends[None] = RemoteBackend.for_role(self.role)
            if version not in self._backends:
                path = self.adapter_dir(version)
                name = served_name(self.run_id, version, path)
                self._post("load_lora_adapter", {"lora_name": name, "lora_path": str(path)}, ok_if="already")
                self.loaded.append(name)
                model = name if self.role.engine == "vllm" else f"{self.role.model}:{name}"
                self._backends[version] = RemoteBackend.for_role(self.role, model)
            return self._backends[version]

    def release(self, version: str | None) -> None:
        """Unload `version` from the server (nothing for the base model). Under the lock, so that a
        request for it cannot load it again between forgetting it here and unloading it there."""
        if version is None:
            return
        with self._lock:
            backend = self._backends.pop(version, None)
            path = (self.run_root / version / "adapter").resolve()
            self._post("unload_lora_adapter", {"lora_name": served_name(self.run_id, version, path)}, ok_if="not")
            if backend is not None:
                backend.close()

    def close(self) -> None:
        """Close this process's HTTP clients (adapters stay loaded: the incumbent's may be served on)."""
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()

    def adapter_dir(self, version: str) -> Path:
        path = (self.run_root / version / "adapter").resolve()
        if not (path / "adapter_config.json").exists():
            raise RemoteError(f"adapter {version}: no adapter_config.json in {path}; it cannot be loaded into "
                              f"the {self.role.engine} server")
        return path

    def _post(self, endpoint: str, body: dict, ok_if: str) -> None:
        """POST to an admin endpoint, retried as requests are (`role.max_retries`: connection
        errors and 5xx); a refusal whose message says `ok_if` ("already" loaded, "not" found) is
        the state wanted, so it passes."""
        url = f"{self.admin_url}/{endpoint}"
        headers = {"Authorization": f"Bearer {os.environ.get(self.role.api_key_env, 'none')}"}
        for attempt in range(self.role.max_retries + 1):
            try:
                resp = httpx.post(url, json=body, headers=headers, timeout=self.role.timeout_s)
                if resp.status_code < 500 or attempt == self.role.max_retries:
                    break
            except httpx.HTTPError as exc:
                if attempt == self.role.max_retries:
                    raise RemoteError(f"{url}: {type(exc).__name__}: {exc}") from None
            time.sleep(min(30.0, 0.5 * 2 ** attempt))
        text = resp.text
        if resp.is_success or (resp.status_code in (400, 404) and ok_if in text.lower() and "lora" in text.lower()):
            return
        hint = (" (start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
                if self.role.engine == "vllm" and resp.status_code == 404 else "")
        raise RemoteError(f"{url} answered {resp.status_code}: {' '.join(text.split())[:300]!r}{hint}")
