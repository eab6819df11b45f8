"""``/metrics``: the latest point of every VM, host and pool in Prometheus text format.

Closed by default. Allowed for:

* ``Authorization: Bearer <PADDOCK_METRICS_TOKEN>``, the dedicated scrape token (compared in
  constant time); unset, no bearer token opens it;
* ``Authorization: Token <token>``, an API token of an active platform admin;
* without credentials, a client address in ``PADDOCK_METRICS_ALLOW`` (comma-separated addresses
  or networks), only when that is configured: it is empty by default. The address is the
  connection's (``REMOTE_ADDR``): behind a reverse proxy, use the scrape token.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from hosts.models import Host, StoragePool
from panel.models import ApiToken
from vms.models import VirtualMachine

from .collector import interval
from .store import HOST_METRICS, POOL_METRICS, VM_METRICS, get_store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HELP = {
    "cpu_percent": "CPU use in percent (of the VM's vCPUs; of all host CPUs for a host)",
    "vcpu_delay_percent": "Time the vCPUs waited to run on a host CPU (steal), in percent",
    "memory_used_bytes": "Memory in use, bytes",
    "memory_balloon_bytes": "Balloon size (memory the guest has), bytes",
    "memory_total_bytes": "Memory of the host, bytes",
    "iowait_percent": "Host CPU time waiting for I/O, percent",
    "load1": "Load average over 1 minute",
    "load5": "Load average over 5 minutes",
    "load15": "Load average over 15 minutes",
    "hugepages_free_bytes": "Free huge pages of all sizes and NUMA nodes, bytes",
    "vms_running": "Running domains",
    "used_percent": "Pool allocation in percent of its capacity",
    "capacity_bytes": "Pool capacity, bytes",
    "allocation_bytes": "Pool allocation, bytes",
    "available_bytes": "Pool free space, bytes",
}


def allowed_networks() -> list:
    raw = getattr(settings, "PADDOCK", {}).get("METRICS_ALLOW") or ""
    nets = []
    for item in str(raw).split(","):
        item = item.strip()
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue
    return nets


def _scrape_token_matches(given: str) -> bool:
    expected = getattr(settings, "PADDOCK", {}).get("METRICS_TOKEN") or ""
    if not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _authorized(request) -> int:
    """200 when allowed, else the status to answer (401 no credentials, 403 not allowed)."""
    header = request.META.get("HTTP_AUTHORIZATION", "").split()
    if header:
        if len(header) != 2:
            return 401
        scheme = header[0].lower()
        if scheme == "bearer":
            return 200 if _scrape_token_matches(header[1]) else 401
        if scheme != "token":
            return 401
        token = ApiToken.lookup(header[1])
        if token is None:
            return 401
        return 200 if token.user.is_superuser and token.user.is_active else 403
    nets = allowed_networks()
    if not nets:
        return 401
    try:
        addr = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return 401
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    return 200 if any(addr in net for net in nets) else 401


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(v: float) -> str:
    return repr(float(v)) if v == v else "NaN"


#: rooms above metrics add families to /metrics (tuning: drift, dedicated pCPUs, hugepages)
_EXPORTERS: list = []


def register_exporter(fn):
    """``fn(label) -> list[str]``: exposition lines (with their HELP and TYPE), ``label``
    escaping a label value."""
    if fn not in _EXPORTERS:
        _EXPORTERS.append(fn)
    return fn


def render(now: float | None = None) -> str:
    """The exposition text (points older than three intervals are left out)."""
    now = time.time() if now is None else now
    fresh = now - max(60.0, 3 * interval())
    store = get_store()
    out: list[str] = []

    def family(prefix: str, names: tuple[str, ...], latest: dict, labels: dict[int, str]):
        for name in names:
            metric = f"paddock_{prefix}_{name}"
            lines = []
            for obj_id, point in latest.items():
                value = point["values"].get(name)
                if value is None or point["ts"] < fresh or obj_id not in labels:
                    continue
                lines.append(f"{metric}{{{labels[obj_id]}}} {_value(value)}")
            if lines:
                out.append(f"# HELP {metric} {HELP.get(name, name)}")
                out.append(f"# TYPE {metric} gauge")
                out.extend(sorted(lines))

    vm_latest = store.latest("vm")
    vm_labels = {}
    if vm_latest:
        rows = VirtualMachine.objects.filter(pk__in=list(vm_latest)).values_list(
            "pk", "name", "uuid", "host__name", "tenant__name", "host__simulated"
        )
        for pk, name, uuid, host, tenant, simulated in rows.iterator(chunk_size=5000):
            vm_labels[pk] = (
                f'vm="{_label(name)}",uuid="{uuid}",host="{_label(host)}",'
                f'tenant="{_label(tenant)}",simulated="{str(simulated).lower()}"'
            )
    family("vm", VM_METRICS, vm_latest, vm_labels)

    host_latest = store.latest("host")
    host_labels = {
        pk: f'host="{_label(name)}",simulated="{str(simulated).lower()}"'
        for pk, name, simulated in Host.objects.filter(pk__in=list(host_latest)).values_list(
            "pk", "name", "simulated"
        )
    }
    family("host", HOST_METRICS, host_latest, host_labels)

    pool_latest = store.latest("pool")
    pool_labels = {
        pk: f'pool="{_label(name)}",host="{_label(host)}",simulated="{str(sim).lower()}"'
        for pk, name, host, sim in StoragePool.objects.filter(pk__in=list(pool_latest)).values_list(
            "pk", "name", "host__name", "host__simulated"
        )
    }
    family("pool", POOL_METRICS, pool_latest, pool_labels)
    for exporter in _EXPORTERS:
        out.extend(exporter(_label))
    return "\n".join(out) + "\n"


@require_GET
def prometheus(request):
    status = _authorized(request)
    if status != 200:
        response = HttpResponse(
            "Forbidden\n" if status == 403 else "Token required\n",
            status=status,
            content_type="text/plain",
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render(), content_type=CONTENT_TYPE)
