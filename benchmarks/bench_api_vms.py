"""The REST API at scale: ``GET /api/vms/`` against a trivial endpoint, big and deep pages,
search and placement, on the shared scale inventory (2,000 hosts, 50,000 VMs with two disks and
one NIC each, 200,000 tasks, 600,000 log lines; ``benchmarks/_scale.py``).

A uvicorn server (the production ASGI app on PostgreSQL and Redis) answers sequential requests
from one keep-alive httpx client, authenticated with a token:

1. ``GET /api/vms/`` (default page of 50) and ``GET /api/auth/whoami/`` (token authentication and
   one small JSON object) alternate, 200 of each after a warm-up, so both see the same machine
   state. Goal: the ratio vm-list/trivial <= 3x (p50 and p95 of the same run).
2. ``?limit=1000``, ``?offset=49000`` and a keyset page as deep (``?cursor=`` at the 49,000th VM):
   goal p95 < 300 ms each.
3. ``?q=vm-01234`` (a name fragment) over HTTP: goal p95 < 300 ms; the search query alone
   (``vms.selectors.search``, in-process, one query): goal p95 < 50 ms; for a name, a UUID and a
   MAC address.
4. Placement (``vms.services.choose_host``) over 2,000 hosts, in-process: goal p95 < 50 ms, and
   one SQL query per decision.
5. SQL queries per list request, in-process: the same for ``?limit=10`` and ``?limit=1000``
   (the script fails otherwise).

Each goal prints a ``GOAL ... PASS|FAIL`` line.
"""

from __future__ import annotations

import sys
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
from _scale import HOSTS, VMS, seed_scale

ROUNDS = 200
WARMUP = 20
DEEP_ROUNDS = 40
PLACEMENT_ROUNDS = 100
RATIO_GOAL = 3.0
PAGE_GOAL_MS = 300.0
SEARCH_GOAL_MS = 50.0
PLACEMENT_GOAL_MS = 50.0


def get_token(client, username: str, password: str) -> str:
    resp = client.post("/api/auth/token/", json={"username": username, "password": password})
    if resp.status_code != 201:
        raise BenchError(f"POST /api/auth/token/ -> {resp.status_code}: {resp.text[:300]}")
    return resp.json()["token"]


def deep_cursor() -> str:
    """The cursor a client holds after walking to the 49,000th VM of the default ordering."""
    from panel.api.pagination import _ordering, _value, encode_cursor
    from vms.models import VirtualMachine

    queryset = VirtualMachine.objects.filter(gone=False)
    ordering = _ordering(queryset)
    row = queryset.order_by(*ordering)[VMS - 1001]
    return encode_cursor([_value(row, f) for f in ordering])


def measure_http(server: Server, token: str, cursor: str) -> bool:
    import httpx

    vm_list, trivial = "/api/vms/", "/api/auth/whoami/"
    headers = {"Authorization": f"Token {token}"}
    ok = True
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60.0) as client:
        sizes: dict[str, int] = {}

        def hit(path: str, params: dict | None = None) -> float:
            start = time.perf_counter()
            resp = client.get(path, params=params)
            elapsed = time.perf_counter() - start
            if resp.status_code != 200:
                raise BenchError(f"GET {path} {params} -> {resp.status_code}: {resp.text[:300]}")
            sizes[f"{path}{params or ''}"] = len(resp.content)
            return elapsed

        page = client.get(vm_list).json()
        if page["count"] != VMS or len(page["results"]) != 50:
            raise BenchError(f"unexpected list: {page['count']} {len(page['results'])}")
        for _ in range(WARMUP):
            hit(vm_list)
            hit(trivial)
        timings: dict[str, list[float]] = {vm_list: [], trivial: []}
        for n in range(ROUNDS):
            for path in (vm_list, trivial) if n % 2 == 0 else (trivial, vm_list):
                timings[path].append(hit(path))
        header(f"HTTP, sequential, keep-alive: {ROUNDS} of each after {WARMUP} warm-up")
        figure("vms in database", VMS, "VMs")
        figure("vm-list response size", sizes[vm_list] / 1024, "KiB", 1)
        stats = {}
        for label, path in (("vm-list", vm_list), ("trivial", trivial)):
            s = stats[label] = summary_ms(timings[path])
            figure(f"{label} p50", s["p50"], "ms")
            figure(f"{label} p95", s["p95"], "ms")
        for pct in ("p50", "p95"):
            ratio = stats["vm-list"][pct] / stats["trivial"][pct]
            ok &= goal(f"GET /api/vms/ / whoami {pct} ratio", ratio, "x", RATIO_GOAL + 0.005, 2)

        header(f"Big, deep and searched pages over HTTP: {DEEP_ROUNDS} each")
        cases = (
            ("?limit=1000", {"limit": 1000}),
            ("?offset=49000", {"offset": 49000}),
            ("?cursor= at the 49,000th VM", {"cursor": cursor}),
            ("?q=vm-01234", {"q": "vm-01234"}),
        )
        for label, params in cases:
            for _ in range(3):
                hit(vm_list, params)
            samples = [hit(vm_list, params) for _ in range(DEEP_ROUNDS)]
            s = summary_ms(samples)
            figure(f"GET /api/vms/{label} p50", s["p50"], "ms")
            figure(f"GET /api/vms/{label} size", sizes[f"{vm_list}{params}"] / 1024, "KiB", 1)
            ok &= goal(f"GET /api/vms/{label} p95", s["p95"], "ms", PAGE_GOAL_MS)
    return ok


def measure_search_and_placement(admin) -> bool:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from panel.models import Tenant
    from vms import selectors, services
    from vms.models import Nic, VirtualMachine

    ok = True
    vm = VirtualMachine.objects.get(name="vm-01234")
    mac = Nic.objects.filter(vm=vm).values_list("mac", flat=True).first()
    header("Search in-process (vms.selectors.search: one query)")
    for label, query in (
        ("name fragment", "vm-01234"),
        ("uuid", str(vm.uuid)),
        ("mac", mac),
    ):
        list(selectors.search(admin, query))
        with CaptureQueriesContext(connection) as ctx:
            found = list(selectors.search(admin, query))
        if vm not in found:
            raise BenchError(f"search {query!r} did not find {vm.name}")
        samples = []
        for _ in range(50):
            start = time.perf_counter()
            list(selectors.search(admin, query))
            samples.append(time.perf_counter() - start)
        figure(f"search {label} queries", len(ctx.captured_queries), "queries")
        ok &= goal(f"search {label} p95", summary_ms(samples)["p95"], "ms", SEARCH_GOAL_MS)

    header(f"Placement in-process (vms.services.choose_host over {HOSTS} hosts)")
    tenant = Tenant.get_default()
    with CaptureQueriesContext(connection) as ctx:
        host = services.choose_host(admin, tenant, 2, 4096)
    if host is None:
        raise BenchError("choose_host found no host")
    samples = []
    for _ in range(PLACEMENT_ROUNDS):
        start = time.perf_counter()
        services.choose_host(admin, tenant, 2, 4096)
        samples.append(time.perf_counter() - start)
    figure("placement queries per decision", len(ctx.captured_queries), "queries")
    figure("placement p50", summary_ms(samples)["p50"], "ms")
    ok &= goal("placement p95", summary_ms(samples)["p95"], "ms", PLACEMENT_GOAL_MS)
    return ok


def count_queries(token: str) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="localhost")
    header("SQL queries per request (in-process, Django test client)")
    counts = {}
    for path in ("/api/vms/?limit=10", "/api/vms/", "/api/vms/?limit=1000", "/api/auth/whoami/"):
        client.get(path)
        with CaptureQueriesContext(connection) as ctx:
            resp = client.get(path)
        if resp.status_code != 200:
            raise BenchError(f"GET {path} -> {resp.status_code}")
        counts[path] = len(ctx.captured_queries)
        figure(f"queries {path}", counts[path], "queries")
    if counts["/api/vms/?limit=10"] != counts["/api/vms/?limit=1000"]:
        raise BenchError(f"/api/vms/ is not constant in queries: {counts}")


def main() -> None:
    with BenchDatabase() as db, bench_environment(db) as data_dir:
        header("The REST API at 2,000 hosts / 50,000 VMs")
        note(f"database {db.name} (created for this run, dropped at the end)")
        setup_django_and_migrate()
        start = time.perf_counter()
        seeded = seed_scale()
        figure("seed", time.perf_counter() - start, "s", 1)
        cursor = deep_cursor()

        from django.db import connection

        connection.close()
        import httpx

        note(load_line("measuring"))
        server = Server(data_dir / "uvicorn.log")
        try:
            server.start()
            with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
                token = get_token(client, seeded["admin"].username, seeded["admin_password"])
            ok = measure_http(server, token, cursor)
        finally:
            server.stop()
        ok &= measure_search_and_placement(seeded["admin"])
        count_queries(token)
        note(load_line("end"))
        print("PASS" if ok else "FAIL", flush=True)


if __name__ == "__main__":
    run_main(main)
