"""The metrics collector: one bulk stats call per host per interval, rates derived from counters.

For a real host each round is (through ``hosts.driver.stats``, the libvirt side)

* one ``getAllDomainStats(STATE|CPU_TOTAL|BALLOON|VCPU|INTERFACE|BLOCK, NOWAIT)`` for every
  domain at once (never a call per domain),
* ``getCPUStats``, ``getMemoryStats`` and ``getFreePages`` for the host, ``/proc/loadavg``
  (``os.getloadavg``) only when the host is this machine,
* one ``info()`` per active storage pool;

the raw counters are kept in this process until the next round, and rates come from the
difference (``metrics.values``).

A test-driver host reports only domain state, so its metrics come from the simulator
(``metrics.simulator``), marked ``simulated``.

Points go to the metric store (``metrics.store``) and to the channel layer, group
``metrics.vm.<id>`` / ``metrics.host.<id>`` / ``metrics.pool.<id>``, as
``{"type": "paddock.event", "event": {"type": "metrics", "object", "id", "ts", "values"}}``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.db.models import BooleanField, ExpressionWrapper, Q

from hosts.choices import HostStatus
from hosts.driver import stats
from hosts.driver.connection import HostConnectError, get_connection, parse_uri
from hosts.models import Host, StoragePool
from hosts.shards import ALL, Shard
from vms.choices import VMState
from vms.models import VirtualMachine

from .simulator import simulate_host
from .store import get_store
from .values import Round, derive_host_cpu, derive_vm, live_columns, pool_values, vm_counters

logger = logging.getLogger(__name__)

DEFAULT_HUGEPAGE_KIB = (2048, 1048576)


# --- one round on one host --------------------------------------------------------------------


@dataclass
class _Previous:
    mono: float
    vms: dict[str, dict] = field(default_factory=dict)  # uuid -> counters
    cpu: dict | None = None


_previous: dict[int, _Previous] = {}
_previous_lock = threading.Lock()


def _hugepage_sizes(host) -> list[int]:
    sizes = sorted(
        {
            int(hp.get("size_kib"))
            for cell in host.numa_cells or []
            for hp in cell.get("hugepages", [])
            if hp.get("size_kib") and int(hp.get("size_kib")) > 4
        }
    )
    return sizes or list(DEFAULT_HUGEPAGE_KIB)


def _collect_real(host, conn, now: float) -> Round:
    mono = time.monotonic()
    rnd = Round(host_id=host.pk, ts=now, simulated=False)
    records = stats.domain_stats(conn)
    rnd.bulk_calls = 1
    inventory = {}
    agents = set()  # VMs whose definition has a guest agent channel
    for pk, u, vcpus, agent in (
        VirtualMachine.objects.filter(host=host, gone=False)
        .annotate(
            agent=ExpressionWrapper(
                Q(definition__contains=stats.AGENT_CHANNEL), output_field=BooleanField()
            )
        )
        .values_list("pk", "uuid", "vcpus", "agent")
    ):
        inventory[str(u).replace("-", "")] = (pk, vcpus)
        if agent:
            agents.add(str(u))
    with _previous_lock:
        prev = _previous.get(host.pk)
    dt = (mono - prev.mono) if prev else 0.0
    counters: dict[str, dict] = {}
    running = 0
    for uuid, record in records:
        cur = vm_counters(record)
        counters[uuid] = cur
        if cur["state"] != stats.RUNNING:
            continue
        running += 1
        known = inventory.get(uuid)
        if known is None:
            continue  # not imported yet: the next sync brings it
        rnd.vms[known[0]] = derive_vm(prev.vms.get(uuid) if prev else None, cur, dt, known[1])

    # The guest agents' addresses of the running VMs that have one.
    running_agents = [u for u in agents if inventory[u.replace("-", "")][0] in rnd.vms]
    rnd.extra["ip_addresses"] = {
        inventory[key][0]: addresses
        for key, addresses in stats.guest_addresses(conn, running_agents).items()
    }

    # The host itself.
    cpu = stats.host_cpu(conn)
    busy, iowait = derive_host_cpu(prev.cpu if prev else None, cpu)
    mem = stats.host_memory(conn)
    total = mem.get("total")
    used = None
    if total is not None:
        used = (total - mem.get("free", 0) - mem.get("buffers", 0) - mem.get("cached", 0)) * 1024
    load = (None, None, None)
    if parse_uri(host.uri).kind == "local":
        try:
            load = os.getloadavg()
        except OSError:
            pass
    cells = len(host.numa_cells or []) or stats.numa_nodes(conn)
    hugepages_free = None
    per_node: dict[str, dict[str, int]] = {}
    free = stats.free_pages(conn, _hugepage_sizes(host), cells, host.name)
    if free is not None:
        hugepages_free = 0
        for cell, sizes in free.items():
            per_node[str(cell)] = {str(size): count for size, count in sizes.items()}
            hugepages_free += sum(size * 1024 * count for size, count in sizes.items())
    rnd.host = {
        "cpu_percent": busy,
        "iowait_percent": iowait,
        "memory_used_bytes": used,
        "memory_total_bytes": None if total is None else total * 1024,
        "load1": load[0],
        "load5": load[1],
        "load15": load[2],
        "hugepages_free_bytes": hugepages_free,
        "vms_running": running,
    }
    rnd.extra["hugepages_free"] = per_node

    # Pools: one info() each.
    pool_ids = dict(StoragePool.objects.filter(host=host, gone=False).values_list("name", "pk"))
    for name, (capacity, allocation, available) in stats.active_pools(conn, pool_ids).items():
        rnd.pools[pool_ids[name]] = pool_values(capacity, allocation, available)

    with _previous_lock:
        _previous[host.pk] = _Previous(mono=mono, vms=counters, cpu=cpu)
    return rnd


# --- collect, store, publish ------------------------------------------------------------------


def collect_host(host, *, conn=None, now: float | None = None, store=None, publish: bool = True):
    """One round on ``host``: collect (or simulate), store the points, push them to the
    subscribed browsers. Returns the :class:`Round`. Raises ``HostConnectError`` when a real
    host does not answer."""
    now = time.time() if now is None else now
    if host.simulated or parse_uri(host.uri).simulated:
        rnd = simulate_host(host, now)
    else:
        if conn is None:
            conn = get_connection(host)
        rnd = _collect_real(host, conn, now)
    write_live_columns(rnd)
    store = store or get_store()
    store.ingest("vm", now, rnd.vms)
    store.ingest("host", now, {host.pk: rnd.host})
    store.ingest("pool", now, rnd.pools)
    if publish:
        _publish(rnd)
    return rnd


# What a round writes to the rows of its host's running VMs (the grid sorts by them).
LIVE_FIELDS = ["cpu_percent", "memory_percent", "ip_addresses", "sampled_at"]


def write_live_columns(rnd: Round) -> int:
    """The round's last figures of each running VM on its row, in one UPDATE for the host
    (``bulk_update``: a ``CASE`` on the primary key per column), however many VMs it has. A
    VM stopped since the round read it is left alone: stopping clears them (``vms.sync``)."""
    if not rnd.vms:
        return 0
    sampled = datetime.fromtimestamp(rnd.ts, tz=UTC)
    addresses = rnd.extra.get("ip_addresses", {})
    rows = []
    for pk, values in rnd.vms.items():
        cpu, memory = live_columns(values)
        rows.append(
            VirtualMachine(
                pk=pk,
                cpu_percent=cpu,
                memory_percent=memory,
                ip_addresses=addresses.get(pk, []),
                sampled_at=sampled,
            )
        )
    running = VirtualMachine.objects.filter(state=VMState.RUNNING, gone=False)
    return running.bulk_update(rows, LIVE_FIELDS)


def _publish(rnd: Round) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    ts = int(rnd.ts)
    messages = [("host", rnd.host_id, rnd.host)]
    messages += [("vm", pk, values) for pk, values in rnd.vms.items()]
    messages += [("pool", pk, values) for pk, values in rnd.pools.items()]

    async def send_all():
        for kind, pk, values in messages:
            event = {
                "type": "metrics",
                "object": kind,
                "id": pk,
                "ts": ts,
                "simulated": rnd.simulated,
                "values": {
                    k: (round(v, 3) if isinstance(v, float) else v) for k, v in values.items()
                },
            }
            await layer.group_send(
                f"metrics.{kind}.{pk}", {"type": "paddock.event", "event": event}
            )

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("could not publish metrics of host %s", rnd.host_id, exc_info=True)


def collect_all(now: float | None = None, shard: Shard = ALL) -> int:
    """One round on every online host (of ``shard``, the watcher process's share); returns
    the hosts collected. Hosts the reconcile loop marked offline are left to it: waiting here
    for their connect timeout would delay every other host's round."""
    count = 0
    online = Host.objects.filter(status=HostStatus.ONLINE)
    for host in shard.hosts(online).order_by("pk"):
        try:
            collect_host(host, now=now)
            count += 1
        except HostConnectError as exc:
            logger.info("metrics of host %s skipped: %s", host.name, exc)
        except Exception:
            logger.exception("metrics of host %s failed", host.name)
    return count


def prune_orphans(store=None) -> int:
    """Drop the rings of VMs, hosts and pools that no longer exist in the inventory."""
    store = store or get_store()
    dropped = 0
    for kind, model in (("vm", VirtualMachine), ("host", Host), ("pool", StoragePool)):
        ids = set(store.backend.get_latest(kind))
        if not ids:
            continue
        existing = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        orphans = ids - existing
        if orphans:
            store.forget(kind, orphans)
            dropped += len(orphans)
    return dropped


def interval() -> float:
    value = getattr(settings, "PADDOCK", {}).get("METRICS_INTERVAL")
    if value is None:
        value = os.environ.get("PADDOCK_METRICS_INTERVAL", "10")
    return max(1.0, float(value))


def run_forever(interval: float, stop: threading.Event | None = None, shard: Shard = ALL) -> None:
    """Collect every online host (of ``shard``) every ``interval`` seconds until ``stop`` is
    set; checkpoint the rollups when due and drop the rings of deleted objects once an hour."""
    stop = stop or threading.Event()
    last_prune = time.monotonic()
    while not stop.is_set():
        close_old_connections()
        started = time.monotonic()
        try:
            collect_all(shard=shard)
            get_store().checkpoint()
            if started - last_prune > 3600:
                prune_orphans()
                last_prune = started
        except Exception:
            logger.exception("metrics round failed")
        stop.wait(max(0.5, interval - (time.monotonic() - started)))
    try:
        get_store().checkpoint(force=True)
    except Exception:
        logger.exception("final metrics checkpoint failed")
