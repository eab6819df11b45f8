"""Latency of ``GET /api/vms/`` against a trivial authenticated endpoint, and its query count.

In a throwaway database: a superuser, one host, ten tenants and 10,000 VMs with two disks and
one NIC each. A uvicorn server (the production ASGI app on PostgreSQL and Redis) answers
sequential requests from one keep-alive httpx client: ``GET /api/vms/`` (default page of 50)
and ``GET /api/auth/whoami/`` alternate, 200 of each after a warm-up, so both see the same
machine state. The ratio vm-list/trivial is the cost of the list itself on top of
authentication, routing and the ASGI round trip.

Then, in-process with Django's test client (no server, one persistent database connection),
the latency of the same requests plus ``?limit=1000``, and the number of SQL queries one ``/api/vms/``
request costs for ``?limit=10`` and ``?limit=1000``; a list must cost the same number of
queries whatever its page size (the script fails otherwise).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    BenchError,
    Server,
    bench_environment,
    figure,
    header,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)

VMS = 10_000
TENANTS = 10
DISKS_PER_VM = 2
NICS_PER_VM = 1
ROUNDS = 200
WARMUP = 20
IN_PROCESS_ROUNDS = 50
PASSWORD = "bench-" + uuid.uuid4().hex
VIEWER_PASSWORD = "bench-" + uuid.uuid4().hex

STATES = ("running", "running", "running", "shutoff", "shutoff", "paused")


def populate() -> dict:
    """Users, a host, tenants, VMs with disks and NICs; returns what the measurements need."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from hosts.models import Host
    from panel.models import Membership, Tenant
    from vms.models import Disk, Nic, VirtualMachine

    user_model = get_user_model()
    admin = user_model.objects.create_user(
        "bench-admin", password=PASSWORD, is_superuser=True, is_staff=True
    )
    host = Host.objects.create(
        name="bench-host", uri="test:///bench/api-node.xml", simulated=True, status="online"
    )
    tenants = [Tenant.get_default()]
    tenants += Tenant.objects.bulk_create(
        [Tenant(name=f"bench-tenant-{n:02d}") for n in range(TENANTS - 1)]
    )
    viewer = user_model.objects.create_user("bench-viewer", password=VIEWER_PASSWORD)
    Membership.objects.create(user=viewer, tenant=tenants[1], role="viewer")

    now = timezone.now()
    vms = [
        VirtualMachine(
            host=host,
            tenant=tenants[i % len(tenants)],
            name=f"vm-{i:05d}",
            uuid=uuid.UUID(int=i + 1, version=4),
            description=f"benchmark VM {i}",
            tags=["bench", f"group-{i % 20}"],
            state=STATES[i % len(STATES)],
            desired_state=STATES[i % len(STATES)],
            vcpus=1 + i % 8,
            max_vcpus=8,
            memory_mib=1024 * (1 + i % 16),
            max_memory_mib=16384,
            virt_type="kvm",
            os_type="hvm",
            arch="x86_64",
            machine="pc-q35-7.2",
            boot_devices=["hd"],
            synced_at=now,
        )
        for i in range(VMS)
    ]
    VirtualMachine.objects.bulk_create(vms, batch_size=2000)
    disks, nics = [], []
    for i, vm in enumerate(vms):
        for n in range(DISKS_PER_VM):
            disks.append(
                Disk(
                    vm=vm,
                    target="vd" + "abcdefgh"[n],
                    bus="virtio",
                    source_type="file",
                    source=f"/var/lib/libvirt/images/{vm.name}-disk{n}.qcow2",
                    format="qcow2",
                )
            )
        for _ in range(NICS_PER_VM):
            nics.append(
                Nic(
                    vm=vm,
                    mac=f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                    model="virtio",
                    source_type="network",
                    source="lan",
                )
            )
    Disk.objects.bulk_create(disks, batch_size=5000)
    Nic.objects.bulk_create(nics, batch_size=5000)
    return {"admin": admin, "viewer": viewer}


def get_token(client, username: str, password: str) -> str:
    resp = client.post("/api/auth/token/", json={"username": username, "password": password})
    if resp.status_code != 201:
        raise BenchError(f"POST /api/auth/token/ -> {resp.status_code}: {resp.text[:300]}")
    return resp.json()["token"]


def measure_http(server: Server, token: str, db: BenchDatabase) -> None:
    import httpx

    vm_list = "/api/vms/"
    trivial = "/api/auth/whoami/"
    headers = {"Authorization": f"Token {token}"}
    timings: dict[str, list[float]] = {vm_list: [], trivial: []}
    body_bytes = 0
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60.0) as client:

        def hit(path: str) -> float:
            nonlocal body_bytes
            start = time.perf_counter()
            resp = client.get(path)
            elapsed = time.perf_counter() - start
            if resp.status_code != 200:
                raise BenchError(f"GET {path} -> {resp.status_code}: {resp.text[:300]}")
            if path == vm_list:
                body_bytes = len(resp.content)
            return elapsed

        first = client.get(vm_list)
        if first.status_code != 200:
            raise BenchError(f"GET {vm_list} -> {first.status_code}: {first.text[:300]}")
        page = first.json()
        if page["count"] != VMS or len(page["results"]) != 50:
            raise BenchError(
                f"unexpected list: count={page['count']} results={len(page['results'])}"
            )
        for _ in range(WARMUP):
            hit(vm_list)
            hit(trivial)
        sessions_before, _ = db.session_stats()
        # Alternate which endpoint goes first so neither always follows the other.
        for n in range(ROUNDS):
            order = (vm_list, trivial) if n % 2 == 0 else (trivial, vm_list)
            for path in order:
                timings[path].append(hit(path))
        time.sleep(0.5)  # let the server's statistics reach PostgreSQL
        sessions_after, backends = db.session_stats()

    header(f"HTTP latency, sequential, keep-alive, {ROUNDS} requests each after {WARMUP} warm-up")
    figure("vms in database", VMS, "VMs")
    figure("vm-list page size", 50, "VMs")
    figure("vm-list response size", body_bytes / 1024, "KiB", 1)
    stats = {}
    for label, path in (("vm-list", vm_list), ("trivial", trivial)):
        s = stats[label] = summary_ms(timings[path])
        figure(f"{label} p50", s["p50"], "ms")
        figure(f"{label} p95", s["p95"], "ms")
        figure(f"{label} mean", s["mean"], "ms")
        figure(f"{label} min", s["min"], "ms")
        figure(f"{label} max", s["max"], "ms")
    figure("ratio vm-list/trivial p50", stats["vm-list"]["p50"] / stats["trivial"]["p50"], "x")
    figure("ratio vm-list/trivial p95", stats["vm-list"]["p95"] / stats["trivial"]["p95"], "x")
    opened = sessions_after - sessions_before
    figure("postgres connections opened during the measured requests", opened, "connections")
    figure("postgres connections opened per request", opened / (2 * ROUNDS), "", 2)
    figure("postgres backends connected after the run", backends, "backends")


def measure_in_process(token: str) -> None:
    """The same requests through Django's test client: no server, one persistent connection."""
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="localhost")
    cases = (
        ("vm-list", "/api/vms/", IN_PROCESS_ROUNDS),
        ("trivial", "/api/auth/whoami/", IN_PROCESS_ROUNDS),
        ("vm-list limit=1000", "/api/vms/?limit=1000", 5),
    )
    header("In-process latency (Django test client, no server, one persistent DB connection)")
    for label, path, rounds in cases:
        for _ in range(3):
            client.get(path)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            resp = client.get(path)
            samples.append(time.perf_counter() - start)
            if resp.status_code != 200:
                raise BenchError(f"GET {path} -> {resp.status_code}")
        s = summary_ms(samples)
        figure(f"in-process {label} p50", s["p50"], "ms")
        figure(f"in-process {label} p95", s["p95"], "ms")


def count_queries(token: str, viewer_token: str) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    def run(raw: str, path: str, expect: int) -> list[str]:
        client = Client(HTTP_AUTHORIZATION=f"Token {raw}", HTTP_HOST="localhost")
        client.get(path)  # warm: the token's last_used write happens at most once a minute
        with CaptureQueriesContext(connection) as ctx:
            resp = client.get(path)
        if resp.status_code != 200:
            raise BenchError(f"GET {path} -> {resp.status_code}")
        got = len(resp.json()["results"])
        if got != expect:
            raise BenchError(f"GET {path}: {got} results, expected {expect}")
        return [q["sql"] for q in ctx.captured_queries]

    per_tenant = VMS // TENANTS
    cases = [
        ("queries per request, superuser, limit=10", token, "/api/vms/?limit=10", 10),
        ("queries per request, superuser, default page (50)", token, "/api/vms/", 50),
        ("queries per request, superuser, limit=1000", token, "/api/vms/?limit=1000", 1000),
        ("queries per request, tenant viewer, limit=10", viewer_token, "/api/vms/?limit=10", 10),
        (
            "queries per request, tenant viewer, limit=1000",
            viewer_token,
            "/api/vms/?limit=1000",
            min(1000, per_tenant),
        ),
        ("queries per request, superuser, whoami", token, "/api/auth/whoami/", None),
    ]
    header("SQL queries per request (in-process, Django test client)")
    counts = {}
    for label, raw, path, expect in cases:
        if expect is None:
            client = Client(HTTP_AUTHORIZATION=f"Token {raw}", HTTP_HOST="localhost")
            with CaptureQueriesContext(connection) as ctx:
                client.get(path)
            sqls = [q["sql"] for q in ctx.captured_queries]
        else:
            sqls = run(raw, path, expect)
        counts[label] = sqls
        figure(label, len(sqls), "queries")
    for sql in counts["queries per request, superuser, limit=10"]:
        note("limit=10 query: " + (sql if len(sql) <= 160 else sql[:157] + "..."))

    small = len(counts["queries per request, superuser, limit=10"])
    large = len(counts["queries per request, superuser, limit=1000"])
    if small != large:
        raise BenchError(f"/api/vms/ is not constant in queries: {small} for 10, {large} for 1000")
    small = len(counts["queries per request, tenant viewer, limit=10"])
    large = len(counts["queries per request, tenant viewer, limit=1000"])
    if small != large:
        raise BenchError(f"/api/vms/ (tenant) not constant: {small} for 10, {large} for 1000")


def main() -> None:
    with BenchDatabase() as db, bench_environment(db) as data_dir:
        header("GET /api/vms/ benchmark")
        note(f"database {db.name} (created for this run, dropped at the end)")
        start = time.perf_counter()
        setup_django_and_migrate()
        figure("migrate", time.perf_counter() - start, "s")

        start = time.perf_counter()
        populate()
        figure(
            f"populate ({VMS} VMs, {VMS * DISKS_PER_VM} disks, {VMS * NICS_PER_VM} NICs)",
            time.perf_counter() - start,
            "s",
        )
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        connection.close()

        import httpx

        server = Server(data_dir / "uvicorn.log")
        try:
            server.start()
            with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
                token = get_token(client, "bench-admin", PASSWORD)
                viewer_token = get_token(client, "bench-viewer", VIEWER_PASSWORD)
            measure_http(server, token, db)
        finally:
            server.stop()
        measure_in_process(token)
        count_queries(token, viewer_token)


if __name__ == "__main__":
    run_main(main)
