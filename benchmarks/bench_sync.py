"""Time and SQL queries of syncing a host of 1,000 domains from libvirt into the inventory.

A libvirt test-driver node file with 1,000 domains (with their storage pools, volumes and
networks, see ``hosts/testnode.py``) is written to a temporary directory, and a host row pointing
at it is synced with ``hosts.sync.sync_host`` in a throwaway database:

(a) the first sync, where every pool, volume, network and domain is new;
(b) a second sync of the same host where nothing changed.

The test driver keeps its state per connection and loads the node file when the connection is
opened, so each round uses a fresh host with its own copy of the node file (a fresh connection
and fresh simulated state). Opening the connection (libvirt parsing the node file) is timed on
its own, before the sync; the syncs reuse that connection, as a worker does. Three rounds; the
median is reported.

A sync after the node's domains changed is not measured: the test driver reads its node file
only when a connection is opened, and the sync must keep using the connection it has.
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    BenchError,
    bench_environment,
    figure,
    header,
    note,
    run_main,
    setup_django_and_migrate,
)

DOMAINS = 1_000
ROUNDS = 3
PHASES = {15: "host facts", 40: "pools and volumes", 55: "networks", 95: "domains", 100: "finish"}


def _mark(marks: list[tuple[int, float]], percent: int) -> None:
    marks.append((percent, time.perf_counter()))


def one_round(n: int, node_xml: str, workdir: Path) -> dict:
    """Write a fresh node file, add a host for it, open the connection, sync twice."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from hosts.driver.connection import get_connection
    from hosts.models import Host
    from hosts.sync import sync_host
    from hosts.testnode import node_uri
    from vms.models import Disk, Nic, VirtualMachine
    from vms.sync import read_domains

    # Each round starts from an empty inventory: the node file is the same, and a VM is its UUID
    # across hosts, so a second host with the same domains would hold moves, not new VMs.
    VirtualMachine.objects.all().delete()
    Host.objects.all().delete()
    path = workdir / f"node-{n}.xml"
    path.write_text(node_xml, encoding="utf-8")
    host = Host.objects.create(name=f"bench-sync-{n}", uri=node_uri(path), simulated=True)

    start = time.perf_counter()
    conn = get_connection(host)
    result = {"connect": time.perf_counter() - start}

    for label in ("first", "second"):
        marks: list[tuple[int, float]] = []
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            summary = sync_host(host, progress=partial(_mark, marks))
            end = time.perf_counter()
            result[label] = end - start
        # sync_host reports progress after each phase: 15 facts, 40 pools, 55 networks, 95 domains.
        previous = start
        for percent, at in [*marks, (100, end)]:
            result[f"{label}_phase_{PHASES.get(percent, percent)}"] = at - previous
            previous = at
        result[f"{label}_queries"] = len(ctx.captured_queries)
        result[f"{label}_summary"] = summary

    first, second = result["first_summary"], result["second_summary"]
    if first["domains"] != DOMAINS or first["created"] != DOMAINS:
        raise BenchError(f"first sync: expected {DOMAINS} new domains, got {first}")
    if second["created"] or second["gone"] or second["domains"] != DOMAINS:
        raise BenchError(f"second sync changed the inventory: {second}")
    vms = VirtualMachine.objects.filter(host=host).count()
    if vms != DOMAINS:
        raise BenchError(f"{vms} VM rows for the host, expected {DOMAINS}")
    result["disks"] = Disk.objects.filter(vm__host=host).count()
    result["nics"] = Nic.objects.filter(vm__host=host).count()

    # The libvirt side alone: list, XML of every domain, parse (no database).
    start = time.perf_counter()
    read_domains(conn)
    result["read_domains"] = time.perf_counter() - start
    return result


def main() -> None:
    from_scratch = time.perf_counter()
    with BenchDatabase() as db, bench_environment(db) as data_dir:
        header(f"Host sync benchmark ({DOMAINS} test-driver domains)")
        note(f"database {db.name} (created for this run, dropped at the end)")
        setup_django_and_migrate()
        figure("create and migrate database", time.perf_counter() - from_scratch, "s")

        from hosts.driver.connection import close_all
        from hosts.testnode import build_node_xml

        start = time.perf_counter()
        node_xml = build_node_xml(domains=DOMAINS)
        figure("build node file", time.perf_counter() - start, "s")
        figure("node file size", len(node_xml.encode()) / 1024 / 1024, "MiB")

        rounds = []
        try:
            for n in range(1, ROUNDS + 1):
                r = one_round(n, node_xml, data_dir)
                rounds.append(r)
                header(f"round {n} (fresh host and node file)")
                figure("open connection (test driver loads the node file)", r["connect"], "s", 3)
                figure("first sync", r["first"], "s", 3)
                figure("first sync rate", DOMAINS / r["first"], "domains/s", 0)
                figure("first sync queries", r["first_queries"], "queries")
                figure("second sync (nothing changed)", r["second"], "s", 3)
                figure("second sync rate", DOMAINS / r["second"], "domains/s", 0)
                figure("second sync queries", r["second_queries"], "queries")
                figure("libvirt read and parse of all domains (no database)", r["read_domains"],
                       "s", 3)  # fmt: skip
        finally:
            close_all()

        s = rounds[0]["first_summary"]
        header(f"summary, median of {ROUNDS} rounds")
        figure("domains", DOMAINS, "domains")
        figure("pools", s["pools"], "pools")
        figure("volumes", s["volumes"], "volumes")
        figure("networks", s["networks"], "networks")
        figure("disks", rounds[0]["disks"], "disks")
        figure("nics", rounds[0]["nics"], "nics")
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]
               if isinstance(rounds[0][key], float | int)}  # fmt: skip
        figure("open connection", med["connect"], "s", 3)
        figure("first sync", med["first"], "s", 3)
        figure("first sync rate", DOMAINS / med["first"], "domains/s", 0)
        figure("first sync queries", med["first_queries"], "queries", 0)
        figure("second sync", med["second"], "s", 3)
        figure("second sync rate", DOMAINS / med["second"], "domains/s", 0)
        figure("second sync queries", med["second_queries"], "queries", 0)
        figure("libvirt read and parse of all domains", med["read_domains"], "s", 3)
        for label in ("first", "second"):
            for phase in PHASES.values():
                key = f"{label}_phase_{phase}"
                if key in med:
                    figure(f"{label} sync phase: {phase}", med[key], "s", 3)
        note("a sync after the node's domains changed is not measured (see the module docstring)")


if __name__ == "__main__":
    run_main(main)
