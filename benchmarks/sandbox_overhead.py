"""What isolation costs: the bubblewrap sandbox (uid lease, cgroup, tmpfs working folder, seccomp,
network namespace with the gateway relay) against the same command under rlimits only
(`allow_unsafe`, the old non-isolated path), measured side by side in one run.

    .venv/bin/python benchmarks/sandbox_overhead.py [--reps 10] [--requests 200]

Two measurements, alternating the two modes each repetition so load from other processes hits
both alike:
- start-up: wall seconds of `run_sandboxed` for `python -c pass` (what every agent and evaluator
  run pays once);
- gateway traffic: seconds for one child to make `--requests` sequential HTTP requests to a
  local server on the forwarded port: through the relay (isolated) vs the host's loopback
  (rlimits only). A task agent makes about one request per item.
Needs root and bubblewrap.
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from unittest import mock

from rich.console import Console
from rich.table import Table

from sia.config import SandboxLimits
from sia.sandbox import runner
from sia.sandbox.runner import run_sandboxed

CLIENT = """
import http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=b'{"messages": []}', headers={"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()
print(time.perf_counter() - start)
"""


class Echo(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"choices": [{"message": {"content": "ok"}}]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    modes = {"bwrap": SandboxLimits(wall_timeout_s=120), "rlimits only": SandboxLimits(wall_timeout_s=120, allow_unsafe=True)}
    start: dict[str, list[float]] = {m: [] for m in modes}
    traffic: dict[str, list[float]] = {m: [] for m in modes}
    isolation = {}
    with tempfile.TemporaryDirectory(prefix="sia-bench-") as tmp:
        for _ in range(args.reps):
            for mode, limits in modes.items():
                # The rlimits-only path runs only where isolation is missing: pretend it is, even as root.
                forced = [] if mode == "bwrap" else ["(benchmark: forced)"]
                with mock.patch.object(runner, "missing_protections", lambda: forced):
                    res = run_sandboxed([sys.executable, "-c", "pass"], Path(tmp) / "w", {}, limits)
                    start[mode].append(res.wall_s)
                    res = run_sandboxed([sys.executable, "-c", CLIENT, str(port), str(args.requests)], Path(tmp) / "w",
                                        {}, limits, forward_ports=[port])
                assert res.ok, res.stderr
                traffic[mode].append(float(res.stdout))
                isolation[mode] = (res.isolation, res.network)
    server.shutdown()
    table = Table(title=f"sandbox overhead ({args.reps} reps, medians)")
    for col in ("mode", "isolation / network", "start-up s", f"{args.requests} requests s", "per request ms"):
        table.add_column(col)
    for mode in modes:
        s, t = statistics.median(start[mode]), statistics.median(traffic[mode])
        table.add_row(mode, " / ".join(isolation[mode]), f"{s:.3f}", f"{t:.3f}", f"{1000 * t / args.requests:.2f}")
    Console().print(table)
    ratio_s = statistics.median(start["bwrap"]) / statistics.median(start["rlimits only"])
    ratio_t = statistics.median(traffic["bwrap"]) / statistics.median(traffic["rlimits only"])
    print(f"bwrap / rlimits-only: start-up x{ratio_s:.2f}, gateway traffic x{ratio_t:.2f}")


if __name__ == "__main__":
    main()
