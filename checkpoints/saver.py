"""The LangGraph checkpointer, so a run resumes after any crash: by default one SQLite file per run
(runs/RUN/checkpoints.sqlite); with `RunConfig.checkpointer` set to a postgresql:// URL, LangGraph's
PostgresSaver on that database, one thread per run (thread id = run id). Both use the same
serializer, whose allow-list admits only the state's own pydantic types.

A URL may carry a password, but config.json keeps the URL as given: PGPASSWORD or ~/.pgpass are
the better place for it. Every message here shows the URL with its password masked."""

from __future__ import annotations

import importlib
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import ormsgpack
from langgraph.checkpoint.serde.jsonplus import EXT_PYDANTIC_V2, JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from sia.checkpoints.paths import RunPaths
from sia.files import read_json, write_json_atomic

STATE_MODULE = "sia.graph.state"
# The state's own pydantic types, allowed back out of checkpoints; nothing else is.
STATE_TYPES = [(STATE_MODULE, name) for name in ("Candidate", "GenerationResult", "SIAInput",
                                                  "SIAState", "ScaffoldRewriteState", "FinetuneState",
                                                  "SubgraphOutput")]
# Checkpoints written before the `sia.*` package rename name the state's module by its old name.
RENAMED_MODULES = {"graph.state": STATE_MODULE}

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# In the run folder of a run checkpointed in Postgres: the token with which it claimed its thread.
POSTGRES_CLAIM_FILE = "checkpoints.postgres.json"
# Which run folder owns each thread (see _claim_thread); created next to LangGraph's tables.
CLAIMS_TABLE = "sia_run_threads"
# Serializes the table setup of workers opening a fresh database at once: LangGraph's setup()
# is idempotent one after another, but two at once can both insert the same migration row.
SETUP_LOCK = 0x5149_6368_6b70  # any constant bigint, the same in every sia process
CONNECT_TIMEOUT_S = 10  # an unreachable host fails within this, unless the URL sets connect_timeout


class CheckpointerError(RuntimeError):
    """The configured checkpointer cannot be opened; the message names the URL (password masked)
    and the fix."""


def _serializer() -> JsonPlusSerializer:
    """LangGraph's serializer with the allow-list, reading old module names as their new ones."""
    strict = JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)
    default_hook = strict._unpack_ext_hook  # LangGraph's allow-listed hook, for every other ext type
    allowed = set(STATE_TYPES)

    def unpack_ext(code: int, data: bytes):
        if code != EXT_PYDANTIC_V2:
            return default_hook(code, data)
        module, name, kwargs, *_ = ormsgpack.unpackb(data, ext_hook=unpack_ext, option=ormsgpack.OPT_NON_STR_KEYS)
        module = RENAMED_MODULES.get(module, module)
        if (module, name) not in allowed:
            return kwargs  # as LangGraph does for a type off the allow-list: its fields, not the object
        cls = getattr(importlib.import_module(module), name)
        try:
            return cls(**kwargs)
        except Exception:  # a field added since: LangGraph's own fallback
            return cls.model_construct(**kwargs)

    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES, __unpack_ext_hook__=unpack_ext)


def open_saver(path: Path) -> SqliteSaver:
    """A SqliteSaver on `path` (WAL, usable from LangGraph's worker threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn, serde=_serializer())


# ---- choosing the run's checkpointer ----

def is_postgres_url(url: str | None) -> bool:
    return bool(url) and url.lower().startswith(POSTGRES_SCHEMES)


def configured_checkpointer(paths: RunPaths) -> str | None:
    """The `checkpointer` of the run's config.json: what every process opening this run uses, so
    `sia resume` and `sia show` reach the database `sia run` wrote to (None: SQLite, also for a
    folder without config.json)."""
    return read_json(paths.config).get("checkpointer") or None


def has_checkpoints(paths: RunPaths, url: str | None) -> bool:
    """Whether this run has opened its checkpointer before; creates nothing, connects nowhere."""
    return (paths.root / POSTGRES_CLAIM_FILE if is_postgres_url(url) else paths.checkpoints).exists()


def holds_password(url: str) -> bool:
    """Whether `url` itself carries a password (user:password@ or ?password=), which config.json
    would then keep in plain text."""
    return masked(url) != url


def masked(text: str, url: str | None = None) -> str:
    """`text` (a URL, or a message quoting one) with every password replaced by ***: a URL's
    user:password@, a password=… parameter, and `url`'s password wherever it appears."""
    text = re.sub(r"(://[^:/?#@\s]*):[^\s]*@", r"\1:***@", text)  # greedy: a password may hold '@'
    text = re.sub(r"(password\s*=\s*)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)
    try:
        password = urlsplit(url).password if url else None
    except ValueError:  # an unparsable URL: the patterns above are all there is
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text


@contextmanager
def open_checkpointer(paths: RunPaths, url: str | None) -> Iterator:
    """The run's checkpointer, closed on exit: SQLite in the run folder when `url` is None, else
    LangGraph's PostgresSaver on `url` with our serializer, its tables set up (idempotent) and the
    run's thread claimed (see _claim_thread). Raises CheckpointerError for any other URL, a
    server that cannot be reached, or a database it cannot set up."""
    if not url:
        saver = open_saver(paths.checkpoints)
        try:
            yield saver
        finally:
            saver.conn.close()
        return
    if not is_postgres_url(url):
        raise CheckpointerError(f"checkpointer {masked(url, url)!r} is not supported: use a postgresql://USER@HOST:PORT/"
                                f"DATABASE URL, or null for SQLite in the run folder (the `checkpointer` of "
                                f"{paths.config}).")
    from langgraph.checkpoint.postgres import PostgresSaver

    pool = _pool(paths, url)
    try:
        saver = PostgresSaver(pool, serde=_serializer())
        _setup(saver, paths, url)
        yield saver
    finally:
        pool.close()


def _failure(paths: RunPaths, url: str, exc: Exception) -> CheckpointerError:
    reason = masked(" ".join(str(exc).split()) or type(exc).__name__, url)
    return CheckpointerError(
        f"cannot use the checkpoint database {masked(url, url)}: {reason}{'' if reason[-1] in '.?!' else '.'} "
        f"Check that the server is running and reachable from here and that the database and user exist; fix "
        f"the URL in the `checkpointer` of {paths.config} if it is wrong (give a password with PGPASSWORD or "
        f"~/.pgpass, not in the URL).")


def _pool(paths: RunPaths, url: str):
    """psycopg's pool of one connection as PostgresSaver requires (autocommit, dict rows, and no
    server-side prepared statements, as its own from_conn_string, so a pooler such as PgBouncer
    works). The pool checks the connection each time it hands it out and replaces a broken one, so
    a server restart or a dropped connection during a long node costs a reconnect, not the run. One
    plain connection first: where the server cannot be reached, its own reason is the message."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool, PoolTimeout

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    try:
        given = conninfo_to_dict(url).get("connect_timeout")  # the URL's own wins
        if not given:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        psycopg.Connection.connect(url, **kwargs).close()
        timeout = max(CONNECT_TIMEOUT_S, float(given or 0))
        pool = ConnectionPool(url, kwargs=kwargs, min_size=1, max_size=1, open=False,
                              check=ConnectionPool.check_connection, name=f"sia-{paths.run_id}")
        pool.open(wait=True, timeout=timeout)
    except (psycopg.Error, PoolTimeout) as exc:
        raise _failure(paths, url, exc) from None
    return pool


def _setup(saver, paths: RunPaths, url: str) -> None:
    import psycopg

    try:
        with saver.conn.connection() as conn:  # the advisory lock belongs to this one session
            conn.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK,))
            try:
                type(saver)(conn, serde=saver.serde).setup()  # on the locked session: the pool has one
                conn.execute(f"CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} (thread_id TEXT PRIMARY KEY, token TEXT "
                             "NOT NULL, run_dir TEXT NOT NULL, claimed_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
            _claim_thread(conn, paths)
    except psycopg.Error as exc:
        raise _failure(paths, url, exc) from None


def _claim_thread(conn, paths: RunPaths) -> None:
    """A database holds the threads of every run pointed at it, keyed by run id alone, and run
    ids repeat (`sia compare` names its arms POLICY-sSEED in every comparison; a second runs dir):
    without a check, a new run would silently continue another's thread. The first run folder to
    open a thread claims it with a random token kept in the folder; another folder is refused."""
    claim = paths.root / POSTGRES_CLAIM_FILE
    token = read_json(claim).get("token")
    if not token:  # written before the claim: a kill in between leaves a token the next open claims with
        token = uuid.uuid4().hex
        paths.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(claim, {"thread_id": paths.run_id, "token": token})
    conn.execute(f"INSERT INTO {CLAIMS_TABLE} (thread_id, token, run_dir) VALUES (%s, %s, %s) "
                 "ON CONFLICT (thread_id) DO NOTHING", (paths.run_id, token, str(paths.root.resolve())))
    owner = conn.execute(f"SELECT token, run_dir FROM {CLAIMS_TABLE} WHERE thread_id = %s", (paths.run_id,)).fetchone()
    if owner["token"] != token:
        raise CheckpointerError(
            f"run id '{paths.run_id}' already has checkpoints in this database, written for the run folder "
            f"{owner['run_dir']}, not {paths.root}: run ids must be unique within one checkpoint database. "
            f"Pick another --run-id, or give these runs their own database.")
