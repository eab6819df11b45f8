"""The VM grid at scale: ``GET /api/vms/?ordering=`` by each sortable column over 50,000 VMs
(the shared scale inventory, ``benchmarks/_scale.py``, without its tasks), and the collector's
write of one host's live figures.

1. Each ordering of ``vms.filtersets.ORDERINGS``, ascending and descending, through the API's
   own list (DRF test client, in-process, token-less ``force_authenticate`` as the platform
   admin): the first page of 50 and a cursor page 40,000 VMs deep. Goal: p95 < 300 ms each
   (the API's page goal, docs/benchmarks.md). ``EXPLAIN`` of the first page's query is printed
   once per column (whether PostgreSQL sorts the 50,000 rows or walks an index).
2. ``metrics.collector.write_live_columns`` for a host's 25 running VMs: one UPDATE; goal
   p95 < 20 ms.

Each goal prints a ``GOAL ... PASS|FAIL`` line.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    BenchError,
    bench_environment,
    figure,
    goal,
    header,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)
from _scale import VMS, seed_scale

ROUNDS = 12
PAGE_GOAL_MS = 300.0
WRITE_GOAL_MS = 20.0
DEEP = 40_000


def fill_live_columns() -> None:
    """Live figures on every running VM, as a collector round leaves them (one UPDATE)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE vms_virtualmachine SET cpu_percent = random() * 100, "
            "memory_percent = random() * 100, sampled_at = now(), "
            "started_at = now() - random() * interval '30 days', "
            "ip_addresses = jsonb_build_array('10.' || (id % 250) || '.' || (id % 200) || '.9') "
            "WHERE state = 'running'"
        )
        cursor.execute("UPDATE vms_virtualmachine SET state = 'shutoff' WHERE id % 5 = 0")
        cursor.execute(
            "UPDATE vms_virtualmachine SET cpu_percent = NULL, memory_percent = NULL, "
            "started_at = NULL, ip_addresses = '[]' WHERE state <> 'running'"
        )
        cursor.execute("ANALYZE vms_virtualmachine")


def explain(ordering: str) -> str:
    from django.db import connection

    from vms.filtersets import VirtualMachineFilterSet
    from vms.models import VirtualMachine

    qs = VirtualMachineFilterSet(
        {"ordering": ordering}, queryset=VirtualMachine.objects.select_related("host", "tenant")
    ).qs.filter(gone=False)[:51]
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, TIMING OFF) " + sql, params)
        lines = [row[0] for row in cursor.fetchall()]
    plan = [line.strip() for line in lines if "Sort" in line or "Index" in line or "Scan" in line]
    total = next((line for line in lines if line.startswith("Execution Time")), "")
    return f"{' / '.join(plan[:3])}; {total}"


def measure_orderings(admin) -> bool:
    from rest_framework.test import APIClient

    from vms.filtersets import ORDERINGS

    client = APIClient(HTTP_HOST="127.0.0.1")
    client.force_authenticate(user=admin)
    ok = True
    for name in ORDERINGS:
        note(f"EXPLAIN ordering={name}: {explain(name)}")
        for ordering in (name, f"-{name}"):
            url = f"/api/vms/?ordering={ordering}&limit=50&count=false"
            first = client.get(url + "&cursor=")
            if first.status_code != 200:
                raise BenchError(f"{url} -> {first.status_code}: {first.content[:200]!r}")
            # Walk to a page DEEP rows in with one big page, then time the cursor page there.
            jump = client.get(f"/api/vms/?ordering={ordering}&limit=1000&count=false&cursor=")
            deep_url = jump.json()["next"]
            for _ in range(DEEP // 1000 - 1):
                deep_url = client.get(deep_url).json()["next"]
            deep_url = deep_url.replace("limit=1000", "limit=50")
            for label, target in (("first", url + "&cursor="), ("deep", deep_url)):
                samples = []
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    response = client.get(target)
                    samples.append(time.perf_counter() - started)
                    if response.status_code != 200 or len(response.json()["results"]) != 50:
                        raise BenchError(f"{target} -> {response.status_code}")
                stats = summary_ms(samples)
                figure(f"ordering_{ordering}_{label}_p50", stats["p50"], "ms", 1)
                ok &= goal(
                    f"ordering={ordering} {label} page p95", stats["p95"], "ms", PAGE_GOAL_MS
                )
    return ok


def measure_write() -> bool:
    from hosts.models import Host
    from metrics.collector import write_live_columns
    from metrics.values import Round
    from vms.models import VirtualMachine

    host = Host.objects.order_by("pk")[7]
    ids = list(
        VirtualMachine.objects.filter(host=host, state="running").values_list("pk", flat=True)
    )
    samples = []
    for i in range(ROUNDS * 4):
        rnd = Round(host_id=host.pk, ts=time.time(), simulated=True)
        rnd.vms = {
            pk: {
                "cpu_percent": random.random() * 100,
                "memory_used_bytes": random.randint(1, 2**30),
                "memory_balloon_bytes": 2**30,
            }
            for pk in ids
        }
        started = time.perf_counter()
        written = write_live_columns(rnd)
        samples.append(time.perf_counter() - started)
        if written != len(ids):
            raise BenchError(f"round {i} wrote {written} of {len(ids)} VMs")
    stats = summary_ms(samples)
    figure("live_write_vms", len(ids))
    figure("live_write_p50", stats["p50"], "ms", 2)
    return goal(f"one host's live columns ({len(ids)} VMs) p95", stats["p95"], "ms", WRITE_GOAL_MS)


def main() -> None:
    with BenchDatabase() as db, bench_environment(db):
        setup_django_and_migrate()
        header(f"seed: {VMS} VMs (no tasks)")
        seeded = seed_scale(tasks=0, log_lines=0)
        fill_live_columns()
        admin = seeded["admin"]
        header("GET /api/vms/?ordering=")
        measure_orderings(admin)
        header("collector: one host's live columns")
        measure_write()


if __name__ == "__main__":
    run_main(main)
