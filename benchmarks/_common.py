"""Shared helpers of the benchmarks: a throwaway database, Django setup, a server, statistics.

Not a benchmark itself: ``make bench`` runs every ``benchmarks/*.py``, so this module only
defines functions and does nothing when it is run as a script.

Every benchmark works in its own PostgreSQL database (``paddock_bench_<pid>``), created from
the role in ``DATABASE_URL`` (it needs CREATEDB), migrated, and dropped at the end, so the data
in the real database is never read or touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://paddock:paddock@127.0.0.1:5432/paddock"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


class BenchError(RuntimeError):
    """A benchmark could not run or its result is wrong; the script exits non-zero."""


# --- output -----------------------------------------------------------------------------------


def header(title: str) -> None:
    print(f"\n### {title}", flush=True)


def figure(name: str, value: float | int | str, unit: str = "", digits: int = 2) -> None:
    """One ``name: value unit`` line."""
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
    else:
        text = str(value)
    print(f"{name}: {text}{' ' + unit if unit else ''}", flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


# --- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in samples_s]
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "mean": statistics.fmean(ms),
        "min": min(ms),
        "max": max(ms),
    }


# --- the throwaway database -------------------------------------------------------------------


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _psycopg_connect(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "",
        password=parts.password or "",
        dbname=parts.path.lstrip("/") or "postgres",
        autocommit=True,
        connect_timeout=10,
    )


class BenchDatabase:
    """``CREATE DATABASE paddock_bench_<pid>`` on enter, ``DROP DATABASE`` on exit."""

    def __init__(self, base_url: str | None = None, prefix: str = "paddock_bench") -> None:
        self.base_url = base_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        if not self.base_url.startswith(("postgres://", "postgresql://")):
            raise BenchError("The benchmarks need a PostgreSQL DATABASE_URL.")
        self.name = f"{prefix}_{os.getpid()}"
        self.url = _with_dbname(self.base_url, self.name)
        self.created = False

    def _drop_sql(self):
        from psycopg import sql

        return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))

    def create(self) -> None:
        from psycopg import sql

        with _psycopg_connect(self.base_url) as conn:
            conn.execute(self._drop_sql())
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.created = True

    def drop(self) -> None:
        if not self.created:
            return

        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django not set up (yet): nothing to close
            pass
        with _psycopg_connect(self.base_url) as conn:
            conn.execute(self._drop_sql())
        self.created = False

    def session_stats(self) -> tuple[int, int]:
        """(sessions ever opened on the bench database, backends connected to it now)."""
        with _psycopg_connect(self.base_url) as conn:
            sessions = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.name,)
            ).fetchone()[0]
            backends = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchone()[0]
        return int(sessions or 0), int(backends)

    def __enter__(self) -> BenchDatabase:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()


# --- the environment and Django ---------------------------------------------------------------


@contextlib.contextmanager
def bench_environment(db: BenchDatabase) -> Iterator[Path]:
    """Point this process (and the servers it starts) at the bench database and a temp data dir.

    Yields the temporary data directory; it is removed afterwards.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="paddock-bench-"))
    os.environ["DATABASE_URL"] = db.url
    os.environ.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    os.environ.setdefault("SECRET_KEY", "bench-" + secrets.token_urlsafe(40))
    os.environ["PADDOCK_DATA_DIR"] = str(data_dir)
    os.environ["PADDOCK_TEST_NODE_DIRS"] = str(data_dir)
    os.environ["STATIC_ROOT"] = str(data_dir / "static")
    (data_dir / "static").mkdir()
    os.environ["DJANGO_SETTINGS_MODULE"] = "paddock.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    try:
        yield data_dir
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def setup_django_and_migrate() -> None:
    """``django.setup()`` for the environment above, then ``migrate`` the bench database."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    name = settings.DATABASES["default"]["NAME"]
    if not str(name).startswith("paddock_bench"):
        raise BenchError(f"Refusing to run against database {name!r}: not a bench database.")
    call_command("migrate", interactive=False, verbosity=0)


def exit_on_signals() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks drop what was created."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def run_main(main) -> None:
    """Run ``main()``; report a failure on stderr and exit non-zero."""
    exit_on_signals()
    started = time.perf_counter()
    note(load_line("at start"))
    try:
        main()
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    print()
    note(load_line("at end"))
    figure("total wall time", time.perf_counter() - started, "s", 1)


def load_line(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs "
        "(other work on the machine skews the figures)"
    )


# --- a server in a subprocess -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``uvicorn paddock.asgi:application`` on a free loopback port, stopped by its PID."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, ready_path: str = "/api/auth/whoami/", timeout: float = 60.0) -> None:
        import httpx

        cmd = [
            sys.executable, "-m", "uvicorn", "paddock.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"uvicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                httpx.get(self.base_url + ready_path, timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise BenchError(f"uvicorn did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # `make bench` runs every benchmarks/*.py; this one is the helper module.
    print("benchmarks/_common.py: shared helpers, nothing to measure")


def goal(name: str, value: float, unit: str, limit: float, digits: int = 1) -> bool:
    """One ``GOAL name: value unit (goal < limit unit) PASS|FAIL`` line; True when it passes."""
    passed = value < limit
    print(
        f"GOAL {name}: {value:.{digits}f} {unit} (goal < {limit:g} {unit}) "
        f"{'PASS' if passed else 'FAIL'}",
        flush=True,
    )
    return passed
