"""`sia web`: a local, offline dashboard of every run in a runs folder, live while runs run.

    sia web                       (http://127.0.0.1:8765/, until Ctrl-C)
    sia web --runs-dir runs --port 0     (0: a free port; the URL printed is the real one)

Pages: / (every run and compare), /run/RUN (the `sia report` view with links), /run/RUN/gen/N
(scaffold, diff, rationale, per-item outcomes, logs, model calls), /run/RUN/adapter/gen_N
(training data, loss, rewards, selection). A compare's arms are runs named ARM@COMPARE.

Live: /api/run/RUN/state (and /api/state for /) answer {version, live, ...}; `version` is a
fingerprint of the run's files (sia.web_read.watched_files) and status, and /static/live.js
polls it, fetching `?fragment=1` of the page when it moves on. Everything is read through
sia.web_read, which never writes into a run folder. Served on 127.0.0.1 unless --host says
otherwise; requests naming another host are refused (a web page elsewhere cannot read your runs
through DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
import time
from html import escape as html_escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from sia import web_pages as pages
from sia import web_read as read
from sia.checkpoints.paths import RunPaths
from sia.cli.common import CLIError
from sia.cli.render import console, err_console
from sia.files import read_json
from sia.report_html import render_body

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")  # the browser refuses any other host
CALLS_PER_PAGE = 50
DATASET_ROWS = 20


class SecurityHeaders:
    """Every response says: scripts, styles and requests from this server only; no referrer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def create_app(runs_dir: Path, poll_s: float = 2.0, allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard of `runs_dir`. `poll_s`: how often an open page asks whether its run changed;
    `allowed_hosts`: Host header names served (default: loopback names only)."""
    # Imported here: `sia --help` and every other command build the parser without paying for them.
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from sia.cli.main import run_row, run_status

    runs_dir = Path(runs_dir)
    cache: dict[tuple, tuple[str, str]] = {}  # (page, run) -> (version, body): render once per change
    lock = threading.Lock()

    def cached(key: tuple, version: str, build) -> str:
        with lock:
            hit = cache.get(key)
        if hit and hit[0] == version:
            return hit[1]
        body = build()
        with lock:
            cache[key] = (version, body)
        return body

    def find(request: Request) -> tuple[str, RunPaths]:
        key = request.path_params["run"]
        paths = read.list_runs(runs_dir).get(key)  # only names the listing has: no path from the URL
        if paths is None:
            raise HTTPException(404, f"no run '{key}' in {runs_dir}")
        return key, paths

    def run_version(paths: RunPaths) -> str:
        return read.fingerprint(read.watched_files(paths), run_status(paths))

    def live(paths: RunPaths) -> tuple[str, dict]:
        status = run_status(paths)
        training = read.latest_training(paths) if status == "running" else None
        now, paused = read.now_running(paths), read.paused_reason(paths)
        return pages.live_text(status, now, paused, training, time.time()), {
            "status": status, "node": now.get("node") if status == "running" else None,
            "generation": now.get("generation") if status == "running" else None, "paused": paused,
            "training": None if not training or training["over"] else
            {k: training[k] for k in ("adapter", "step", "max_steps", "loss")}}

    def respond(request: Request, title: str, body: str, crumbs, state_url: str, version: str, live_line: str):
        if request.query_params.get("fragment") == "1":
            return HTMLResponse(body, headers={"X-SIA-Version": version})
        return HTMLResponse(pages.page(title, body, [("/", "runs")] + crumbs, state_url, version, poll_s, live_line))

    # ---- /: every run and every compare ----

    def index_version() -> str:
        runs = read.list_runs(runs_dir)
        files = [f for paths in runs.values() for f in read.watched_files(paths)]
        files += [c / name for c in read.list_compares(runs_dir) for name in ("table.json", "timing.json", "compare.pid")]
        return read.fingerprint(files, *(run_status(p) for p in runs.values()))

    def index_body() -> str:
        runs = read.list_runs(runs_dir)
        rows = []
        for key, paths in runs.items():
            if Path(paths.runs_dir) == runs_dir:
                now = read.now_running(paths) if run_status(paths) == "running" else {}
                rows.append(dict(run_row(paths), key=key, now=f"{now['node']} (gen {now.get('generation')})"
                                 if now.get("node") else ""))
        return pages.runs_body(str(runs_dir), rows, [compare_record(c, runs, run_row) for c in read.list_compares(runs_dir)])

    def index(request: Request):
        version = index_version()
        body = cached(("index",), version, index_body)
        return respond(request, "sia runs", body, [], "/api/state", version, "")

    def index_state(request: Request):
        return JSONResponse({"version": index_version(), "live": ""})

    # ---- /run/RUN ----

    def run_body(key: str, paths: RunPaths) -> str:
        from sia.cli.report import gather

        run = gather(paths)
        body = render_body(run, gen_link=lambda n: pages.gen_url(key, n), adapter_link=lambda v: pages.adapter_url(key, v))
        scored = {g["generation"] for g in run["generations"]}
        pending = sorted(int(p.name[4:]) for p in paths.root.glob("gen_*") if p.name[4:].isdigit()
                         and int(p.name[4:]) not in scored)
        if pending:
            body += "<h2>Generations not scored yet</h2><p>" + " · ".join(
                f"<a href='{html_escape(pages.gen_url(key, n))}'>gen {n}</a>" for n in pending) + "</p>"
        return body

    def run_page(request: Request):
        key, paths = find(request)
        version = run_version(paths)
        body = cached(("run", key), version, lambda: run_body(key, paths))
        return respond(request, f"Run {key}", body, [(pages.run_url(key), key)], pages.state_url(key), version,
                       live(paths)[0])

    def run_state(request: Request):
        key, paths = find(request)
        text, state = live(paths)
        return JSONResponse(dict(state, version=run_version(paths), live=text))

    # ---- /run/RUN/gen/N ----

    def generation_page(request: Request):
        key, paths = find(request)
        n, q = request.path_params["n"], request.query_params
        row = next((g for g in read.generation_rows(paths) if g["generation"] == n), None)
        folder = paths.gen(n)
        if row is None and not folder.is_dir():
            raise HTTPException(404, f"run '{key}' has no generation {n}")
        texts = {name: t for name in ("improvement.md", "feedback.md", "diff.patch", "target_agent.py")
                 if (t := read.read_text(folder / name)) is not None}
        sha, adapter = (row or {}).get("scaffold_sha"), (row or {}).get("adapter")
        splits = read.item_splits(paths, sha, adapter) if sha else []
        split = q.get("split") or ("feedback" if "feedback" in splits or not splits else splits[0])
        items = [dict(it, wrong=read.is_wrong(it)) for it in (read.item_outcomes(paths, sha, adapter, split) if sha else [])]
        wrong_only, gold = q.get("wrong") == "1", q.get("gold") or ""
        shown = [it for it in items if (not wrong_only or it["wrong"]) and (not gold or str(it.get("gold")) == gold)]
        start = int(q["calls"]) if q.get("calls", "").isdigit() else 0
        calls, calls_total = read.model_calls(paths, n, start, CALLS_PER_PAGE)
        logs = [(str(p.relative_to(folder)), *text) for p in read.log_files(folder)
                if (text := read.read_text(p, read.LOG_LIMIT)) is not None]
        body = pages.generation_body(dict(
            key=key, generation=n, row=row, texts=texts, split=split, splits=splits, items=shown[:pages.ITEMS_SHOWN],
            total=len(items), wrong=sum(it["wrong"] for it in items),
            labels=sorted({str(it.get("gold")) for it in items})[:200], wrong_only=wrong_only, gold=gold, logs=logs,
            calls=calls, calls_total=calls_total, calls_from=start, calls_limit=CALLS_PER_PAGE))
        return respond(request, f"Generation {n} of {key}", body,
                       [(pages.run_url(key), key), (pages.gen_url(key, n), f"gen {n}")],
                       pages.state_url(key), run_version(paths), live(paths)[0])

    # ---- /run/RUN/adapter/gen_N ----

    def adapter_page(request: Request):
        key, paths = find(request)
        name = request.path_params["name"]
        folders = {p.name: p for p in (paths.root / "adapters").glob("gen_*") if p.is_dir() and p.name[4:].isdigit()}
        if name not in folders:
            raise HTTPException(404, f"run '{key}' has no adapter {name}")
        folder, version, generation = folders[name], f"adapters/{name}", int(name[4:])
        dataset, count = read.jsonl_head(folder / "dataset.jsonl", DATASET_ROWS)
        records = read.adapter_rows(paths, version)
        files = {n: t for n in ("train.log", "finetune_config.json")
                 if (t := read.read_text(folder / n, read.LOG_LIMIT)) is not None}
        body = pages.adapter_body(dict(
            key=key, version=version, generation=generation,
            rows=[g for g in read.generation_rows(paths) if g.get("adapter") == version],
            record=records[0] if records else None, summary=read_json(folder / "train_summary.json"),
            progress=read.training_progress(folder), rewards=read.rewards_by_step(paths, generation),
            stats=read_json(folder / "dataset_stats.json"), dataset=dataset, dataset_count=count, files=files))
        return respond(request, f"Adapter {version} of {key}", body,
                       [(pages.run_url(key), key), (pages.adapter_url(key, version), version)],
                       pages.state_url(key), run_version(paths), live(paths)[0])

    def script(request: Request):
        # package data (pyproject), so an installed sia serves it too
        return Response((resources.files("sia") / "web_static" / "live.js").read_bytes(), media_type="text/javascript")

    def no_icon(request: Request):
        return Response(status_code=204)  # browsers ask for one; answering spares a 404 per page

    async def not_found(request: Request, exc: HTTPException):
        return HTMLResponse(f"<!DOCTYPE html><title>not found</title><p>{html_escape(str(exc.detail))}</p>"
                            "<p><a href='/'>all runs</a></p>", status_code=exc.status_code)

    routes = [Route("/", index), Route("/api/state", index_state), Route("/static/live.js", script),
              Route("/favicon.ico", no_icon),
              Route("/run/{run}", run_page), Route("/api/run/{run}/state", run_state),
              Route("/run/{run}/gen/{n:int}", generation_page), Route("/run/{run}/adapter/{name}", adapter_page)]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES),
                  Middleware(SecurityHeaders)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: not_found})


def compare_record(folder: Path, runs: dict[str, RunPaths], run_row) -> dict:
    """One compare as pages.compare_html shows it: its spec, table.json once it finished (what
    `sia compare` computed; nothing is recomputed here), else its arms' run rows."""
    from sia.cli.compare import arm_id, arms_of

    spec = read_json(folder / "compare.json")
    table = read_json(folder / "table.json") or None
    keys = [f"{arm_id(p, s)}@{folder.name}" for p, s in arms_of(spec)] if spec.get("policies") else []
    arms = [dict(run_row(runs[k]), key=k) for k in keys if k in runs]
    status = "running" if _alive(folder / "compare.pid") else "finished" if table else "stopped"
    return {"id": folder.name, "spec": spec, "table": table, "arms": arms, "status": status}


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), bound before the app is built."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port.") from None
    sock.listen(128)
    return sock


def cmd_web(args) -> int:
    import uvicorn

    from sia.cli.driving import default_runs_dir

    runs_dir = Path(args.runs_dir or default_runs_dir()).resolve()
    host = args.host or "127.0.0.1"
    if not is_loopback(host):  # only reachable through an explicit --host
        err_console.print(f"[yellow]warning:[/] serving on {escape(host)}: anyone who can reach this machine can "
                          "read every run in the folder (scaffolds, prompts, model calls, item data).")
    sock = bind(host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    app = create_app(runs_dir, poll_s=args.poll, allowed_hosts=None if is_loopback(host) else ["*"])
    console.print(f"Dashboard of {escape(str(runs_dir))}: [bold]http://{shown}:{port}/[/]  (Ctrl-C stops)",
                  soft_wrap=True)  # one line, however long the folder's path: scripts read the URL from it
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    # Served from a thread (uvicorn leaves signals alone there), stopped from here on Ctrl-C or
    # SIGTERM, as `sia serve` does: uvicorn's own handlers would re-raise the signal after stopping.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sia-web", daemon=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread.start()
    while not stop.wait(0.5) and thread.is_alive():
        pass
    server.should_exit = True
    thread.join(10)
    sock.close()
    console.print("Stopped.")
    return 0


def add_command(sub, runs_dir: dict) -> None:
    p = sub.add_parser("web", help="serve a live dashboard of the runs (local, offline)",
                       description="A dashboard of every run and compare in the runs folder: score charts, "
                                   "generations, diffs, item outcomes, model calls, adapters; pages of running runs "
                                   "update themselves. Reads the run folders only; serves 127.0.0.1 by default.")
    p.add_argument("--runs-dir", **runs_dir)
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--host", help="address to serve on (default 127.0.0.1; another exposes the run data)")
    p.add_argument("--poll", type=float, default=2.0, metavar="S", help="how often open pages check for changes "
                                                                        "(seconds, default 2)")
    p.set_defaults(func=cmd_web)
