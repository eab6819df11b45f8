"""The platform admin's UI pages at scale: size, latency and queries per page on the shared
scale inventory (2,000 hosts, 50,000 VMs, 200,000 tasks, 600,000 log lines;
``benchmarks/_scale.py``).

A uvicorn server (the production ASGI app on PostgreSQL and Redis) answers a keep-alive httpx
client logged in through the login form (a session cookie, as a browser holds it):

1. Each page — datacenter, VM list, host, host VMs tab, VM summary, search, tasks — is asked
   for ``ROUNDS`` times in turn after a warm-up, sequentially. Goals per page: p95 < 300 ms and
   HTML < 100 KiB.
2. The resource tree's lazily loaded nodes (the datacenter's hosts, a host, a host's VMs, the
   tenants): p50, p95 and size, figures only (a node loads when it opens, not with the page).
3. The same pages while ``LOAD_CLIENTS`` other clients ask for them without pause: p50/p95 per
   page, figures only (two cores, shared).
4. In-process (Django test client): SQL queries per page, and EXPLAIN of the datacenter's one
   grouped count, which must read the covering index ``vm_counts`` (an index-only scan).

The database is vacuumed after seeding, as autovacuum does to a table after bulk inserts, so
the planner knows which pages are all-visible. Each goal prints a ``GOAL ... PASS|FAIL`` line.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    BenchError,
    Server,
    bench_environment,
    figure,
    goal,
    header,
    load_line,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)
from _scale import HOSTS, LOG_LINES, TASKS, VMS, seed_scale

ROUNDS = 60
WARMUP = 5
LOAD_ROUNDS = 20
LOAD_CLIENTS = 3
TREE_ROUNDS = 30
P95_GOAL_MS = 300.0
SIZE_GOAL_KIB = 100.0


def pages(seeded: dict) -> list[tuple[str, str]]:
    host, vm = seeded["host_id"], seeded["vm_id"]
    return [
        ("datacenter", "/"),
        ("vm list", "/vms/"),
        ("host", f"/hosts/{host}/"),
        ("host vms tab", f"/hosts/{host}/?tab=vms"),
        ("vm summary", f"/vms/{vm}/"),
        ("search", "/search/?q=vm-01234"),
        ("tasks", "/tasks/"),
    ]


def tree_nodes(seeded: dict) -> list[tuple[str, str]]:
    host = seeded["host_id"]
    return [
        ("tree: the hosts", "/tree/hosts/"),
        ("tree: a host", f"/tree/hosts/{host}/"),
        ("tree: a host's vms", f"/tree/hosts/{host}/vms/"),
        ("tree: the tenants", "/tree/tenants/"),
    ]


def log_in(client, username: str, password: str) -> None:
    """Log in through the form, as a browser does: the CSRF cookie, then the POST."""
    resp = client.get("/login/")
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', resp.text)
    if resp.status_code != 200 or not match:
        raise BenchError(f"GET /login/ -> {resp.status_code}: no CSRF token")
    resp = client.post(
        "/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": match[1]},
        headers={"Referer": str(client.base_url) + "/login/"},
    )
    if resp.status_code != 302 or "sessionid" not in client.cookies:
        raise BenchError(f"POST /login/ -> {resp.status_code}: not logged in")


def get(client, path: str) -> tuple[float, int]:
    start = time.perf_counter()
    resp = client.get(path)
    elapsed = time.perf_counter() - start
    if resp.status_code != 200:
        raise BenchError(f"GET {path} -> {resp.status_code}: {resp.text[:300]}")
    return elapsed, len(resp.content)


@contextlib.contextmanager
def logged_in_client(server: Server, seeded: dict):
    import httpx

    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        log_in(client, seeded["admin"].username, seeded["admin_password"])
        yield client


def measure_quiet(server: Server, seeded: dict) -> bool:
    ok = True
    cases = pages(seeded)
    with logged_in_client(server, seeded) as client:
        for _ in range(WARMUP):
            for _label, path in cases:
                get(client, path)
        samples: dict[str, list[float]] = {path: [] for _label, path in cases}
        sizes: dict[str, int] = {}
        # In turn, so every page sees the same machine.
        for _ in range(ROUNDS):
            for _label, path in cases:
                elapsed, sizes[path] = get(client, path)
                samples[path].append(elapsed)
        header(f"Pages, sequential, keep-alive, session cookie: {ROUNDS} each after {WARMUP}")
        for label, path in cases:
            s = summary_ms(samples[path])
            note(f"{label}: GET {path}")
            figure(f"{label} p50", s["p50"], "ms")
            ok &= goal(f"{label} p95", s["p95"], "ms", P95_GOAL_MS)
            ok &= goal(f"{label} size", sizes[path] / 1024, "KiB", SIZE_GOAL_KIB)

        header(f"Tree nodes loaded when opened: {TREE_ROUNDS} each")
        for label, path in tree_nodes(seeded):
            get(client, path)
            got = [get(client, path) for _ in range(TREE_ROUNDS)]
            s = summary_ms([t for t, _n in got])
            figure(f"{label} p50", s["p50"], "ms")
            figure(f"{label} p95", s["p95"], "ms")
            figure(f"{label} size", got[-1][1] / 1024, "KiB", 1)
    return ok


def measure_loaded(server: Server, seeded: dict) -> None:
    """The pages while LOAD_CLIENTS other clients ask for them without pause."""
    cases = pages(seeded)
    stop = threading.Event()
    errors: list[str] = []
    served = [0]

    def hammer() -> None:
        try:
            with logged_in_client(server, seeded) as client:
                while not stop.is_set():
                    for _label, path in cases:
                        get(client, path)
                        served[0] += 1
        except Exception as exc:  # reported below: the measuring thread must not hang
            errors.append(str(exc))

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(LOAD_CLIENTS)]
    with logged_in_client(server, seeded) as client:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        samples: dict[str, list[float]] = {path: [] for _label, path in cases}
        started = time.perf_counter()
        for _ in range(LOAD_ROUNDS):
            for _label, path in cases:
                samples[path].append(get(client, path)[0])
        wall = time.perf_counter() - started
        stop.set()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise BenchError(f"a load client failed: {errors[0]}")
    header(f"Pages under load: {LOAD_CLIENTS} other clients without pause, {LOAD_ROUNDS} each")
    figure("requests per second (all clients)", (served[0] + LOAD_ROUNDS * len(cases)) / wall, "")
    for label, _path in cases:
        s = summary_ms(samples[_path])
        figure(f"{label} under load p50", s["p50"], "ms")
        figure(f"{label} under load p95", s["p95"], "ms")


def count_queries(seeded: dict) -> None:
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    client.force_login(seeded["admin"])
    header("SQL queries per page (in-process, Django test client)")
    for label, path in pages(seeded) + tree_nodes(seeded):
        client.get(path)
        with CaptureQueriesContext(connection) as ctx:
            resp = client.get(path)
        if resp.status_code != 200:
            raise BenchError(f"GET {path} -> {resp.status_code}")
        figure(f"queries {label}", len(ctx.captured_queries), "queries")


def explain_counts(seeded: dict) -> None:
    """The datacenter's grouped count must read the covering index, not the table."""
    from django.db import connection

    from paddock.views import vm_counts

    header("EXPLAIN of the datacenter's VM counts (one grouped query)")
    with CaptureSql() as sql:
        vm_counts(seeded["admin"])
    if len(sql.queries) != 1:
        raise BenchError(f"vm_counts ran {len(sql.queries)} queries, not one")
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql.queries[0])
        plan = [row[0] for row in cursor.fetchall()]
    for line in plan:
        note(line)
    if not any("Index Only Scan using vm_counts" in line for line in plan):
        raise BenchError("the datacenter's counts do not read the vm_counts index")
    ms = float(re.search(r"Execution Time: ([\d.]+)", "\n".join(plan))[1])
    figure("vm counts execution", ms, "ms")


class CaptureSql:
    """The SQL of the queries run inside, with their parameters in (for EXPLAIN)."""

    def __enter__(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self._ctx = CaptureQueriesContext(connection)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        self.queries = [q["sql"] for q in self._ctx.captured_queries]


def main() -> None:
    with BenchDatabase() as db, bench_environment(db) as data_dir:
        header(f"UI pages at {HOSTS} hosts / {VMS} VMs / {TASKS} tasks / {LOG_LINES} log lines")
        note(f"database {db.name} (created for this run, dropped at the end)")
        setup_django_and_migrate()
        start = time.perf_counter()
        seeded = seed_scale()
        figure("seed", time.perf_counter() - start, "s", 1)

        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE)")
        connection.close()

        note(load_line("measuring"))
        server = Server(data_dir / "uvicorn.log")
        try:
            server.start(ready_path="/login/")
            ok = measure_quiet(server, seeded)
            measure_loaded(server, seeded)
        finally:
            server.stop()
        count_queries(seeded)
        explain_counts(seeded)
        note(load_line("end"))
        print("PASS" if ok else "FAIL", flush=True)


if __name__ == "__main__":
    run_main(main)
