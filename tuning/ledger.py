"""The per-host allocation ledger: what a host promised to which VM.

Dedicated pCPUs are rows unique per host (``DedicatedCpu``); hugepages are counters per NUMA
node and size (``HugepagePool.allocated``, CHECKed against ``capacity``) with one
``HugepageAllocation`` per VM and pool. Both are written in the caller's transaction: a
promise the database refuses (a pCPU taken meanwhile, a node out of pages) raises
:class:`LedgerConflict` and rolls the whole request back. A VM's promises are replaced as a
whole when it is tuned again, and released when it is deleted or gone, or when the task that
asked for them failed.
"""

from __future__ import annotations

import threading
import time

from django.contrib.postgres.aggregates import StringAgg
from django.db import IntegrityError, connection, transaction
from django.db.models import CharField, F
from django.db.models.functions import Cast

from .compiler import hugepage_capacity
from .models import DedicatedCpu, HugepageAllocation, HugepagePool
from .topology import HostTopology, LedgerView


class LedgerConflict(Exception):
    """The host cannot promise this any more (another VM got there first)."""


def view(host, *, exclude_vm=None) -> LedgerView:
    """What ``host`` promised to VMs other than ``exclude_vm`` (two queries)."""
    cpus = DedicatedCpu.objects.filter(host=host)
    pages = HugepageAllocation.objects.filter(pool__host=host)
    if exclude_vm is not None:
        cpus = cpus.exclude(vm=exclude_vm)
        pages = pages.exclude(vm=exclude_vm)
    ledger = LedgerView(dedicated=dict(cpus.values_list("cpu", "vm_id")))
    for node, size, count in pages.values_list("pool__node", "pool__size_kib", "pages"):
        entry = ledger.hugepages.setdefault((node, size), {"capacity": 0, "allocated": 0})
        entry["allocated"] += count
    return ledger


def views(host_ids: list[int]) -> dict[int, LedgerView]:
    """The ledgers of many hosts in two queries (:func:`summaries`, each parsed)."""
    promised = summaries(host_ids)
    return {pk: view_of(promised.get(pk, EMPTY)) for pk in host_ids}


def summaries(host_ids: list[int] | None) -> dict[int, tuple]:
    """What many hosts promised, one small tuple per host that has promised anything:
    ``(cpus, vms, pages)`` — the dedicated pCPUs and their VMs as comma-separated text in pCPU
    order, and ``((node, size_kib, allocated), ...)``. Equal tuples are equal ledgers, so a fit
    report compares hosts by them and builds a :class:`LedgerView` (:func:`view_of`) only for
    the distinct ones. Two queries; on PostgreSQL one row per host. ``host_ids`` None: every
    host's."""
    held = DedicatedCpu.objects.order_by()
    if host_ids is not None:
        held = held.filter(host_id__in=host_ids)
    cpus: dict[int, tuple[str, str]] = {}
    if connection.vendor == "postgresql":
        rows = held.values("host_id").annotate(
            cpus=StringAgg(Cast("cpu", CharField()), ",", order_by="cpu"),
            vms=StringAgg(Cast("vm_id", CharField()), ",", order_by="cpu"),
        )
        for host_id, text, vms in rows.values_list("host_id", "cpus", "vms"):
            cpus[host_id] = (text, vms)
    else:
        pairs: dict[int, list] = {}
        for host_id, cpu, vm_id in held.values_list("host_id", "cpu", "vm_id").order_by("cpu"):
            pairs.setdefault(host_id, []).append((cpu, vm_id))
        for host_id, held_by in pairs.items():
            cpus[host_id] = (",".join(str(c) for c, _ in held_by),
                             ",".join(str(v) for _, v in held_by))  # fmt: skip
    pages: dict[int, list] = {}
    rows = HugepagePool.objects.filter(allocated__gt=0).order_by("host_id", "node", "size_kib")
    if host_ids is not None:
        rows = rows.filter(host_id__in=host_ids)
    for host_id, node, size, allocated in rows.values_list(
        "host_id", "node", "size_kib", "allocated"
    ):
        pages.setdefault(host_id, []).append((node, size, allocated))
    out = {}
    for host_id in cpus.keys() | pages.keys():
        text, vms = cpus.get(host_id, ("", ""))
        out[host_id] = (text, vms, tuple(pages.get(host_id, ())))
    return out


#: the ledger of a host that promised nothing
EMPTY = ("", "", ())

SUMMARY_SECONDS = 30.0
_summary_cache: dict = {}
_summary_lock = threading.Lock()


def _stamp() -> tuple:
    """What changes whenever a promise does: the dedicated pCPU rows' count and highest id
    (rows are only inserted and deleted, ids never reused) and a digest of every hugepage
    counter. One query."""
    cpus, pools = DedicatedCpu._meta.db_table, HugepagePool._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {cpus}), (SELECT coalesce(max(id), 0) FROM {cpus}), "
            f"(SELECT md5(coalesce(string_agg(id::text || ':' || allocated::text, ',' "
            f"ORDER BY id), '')) FROM {pools} WHERE allocated > 0)"
        )
        return tuple(cursor.fetchone())


def all_summaries() -> dict[int, tuple]:
    """:func:`summaries` of every host, kept in this process while the ledger's stamp stays
    the same (at most ``SUMMARY_SECONDS``): a fit report then makes one small query for the
    ledger, not two over every promise. PostgreSQL only; elsewhere read each time."""
    if connection.vendor != "postgresql":
        return summaries(None)
    stamp, now = _stamp(), time.monotonic()
    hit = _summary_cache.get("entry")
    if hit is not None and hit[0] == stamp and now - hit[1] < SUMMARY_SECONDS:
        return hit[2]
    data = summaries(None)
    with _summary_lock:
        _summary_cache["entry"] = (stamp, now, data)
    return data


def view_of(summary: tuple) -> LedgerView:
    """The :class:`LedgerView` of a :func:`summaries` tuple."""
    text, vms, pages = summary
    view = LedgerView()
    if text:
        view.dedicated = {
            int(c): int(v) for c, v in zip(text.split(","), vms.split(","), strict=True)
        }
    for node, size, allocated in pages:
        view.hugepages[(node, size)] = {"capacity": 0, "allocated": allocated}
    return view


def release(vm) -> None:
    """Give back everything promised to ``vm``."""
    with transaction.atomic():
        for alloc in HugepageAllocation.objects.select_for_update().filter(vm=vm):
            HugepagePool.objects.filter(pk=alloc.pool_id).update(
                allocated=F("allocated") - alloc.pages
            )
            alloc.delete()
        DedicatedCpu.objects.filter(vm=vm).delete()


def release_task(task) -> None:
    """Give back what a failed task asked for (its rows only)."""
    with transaction.atomic():
        for alloc in HugepageAllocation.objects.select_for_update().filter(task=task):
            HugepagePool.objects.filter(pk=alloc.pool_id).update(
                allocated=F("allocated") - alloc.pages
            )
            alloc.delete()
        DedicatedCpu.objects.filter(task=task).delete()


def reserve(vm, host, topology: HostTopology, allocations: dict, *, task=None) -> None:
    """Promise ``allocations`` (a ``TuningPlan.allocations``) on ``host`` to ``vm``, replacing
    what it held there. Must run inside the caller's transaction; raises
    :class:`LedgerConflict` when the database refuses (pCPU taken, node out of pages)."""
    nodes = {n.id: n for n in topology.nodes}
    try:
        with transaction.atomic():
            release(vm)
            DedicatedCpu.objects.bulk_create(
                [
                    DedicatedCpu(
                        host=host, cpu=a["cpu"], node=a.get("node") or 0, vm=vm,
                        use=a.get("use") or DedicatedCpu.Use.VCPU, serves=a.get("serves"),
                        task=task,
                    )
                    for a in allocations.get("cpus") or []
                ]
            )  # fmt: skip
            for a in allocations.get("hugepages") or []:
                node = nodes.get(a["node"])
                capacity = hugepage_capacity(node, a["size_kib"]) if node is not None else 0
                pool, _ = HugepagePool.objects.get_or_create(
                    host=host, node=a["node"], size_kib=a["size_kib"],
                    defaults={"capacity": capacity},
                )  # fmt: skip
                if pool.capacity != capacity and capacity >= pool.allocated:
                    HugepagePool.objects.filter(pk=pool.pk).update(capacity=capacity)
                HugepagePool.objects.filter(pk=pool.pk).update(
                    allocated=F("allocated") + a["pages"]
                )
                HugepageAllocation.objects.create(pool=pool, vm=vm, pages=a["pages"], task=task)
    except IntegrityError as exc:
        raise LedgerConflict(
            f"Host {host.name} can no longer promise this (another VM took pCPUs or hugepages "
            f"meanwhile): {exc}"
        ) from None


def held_by(host) -> dict:
    """Who holds what on ``host``, for the host's Tuning view: ``{"cpus": {cpu: (vm_id, use)},
    "pages": {(node, size): {"capacity", "allocated"}}}``."""
    cpus = {
        cpu: (vm_id, use)
        for cpu, vm_id, use in DedicatedCpu.objects.filter(host=host).values_list(
            "cpu", "vm_id", "use"
        )
    }
    pages = {
        (p.node, p.size_kib): {"capacity": p.capacity, "allocated": p.allocated}
        for p in HugepagePool.objects.filter(host=host)
    }
    return {"cpus": cpus, "pages": pages}
