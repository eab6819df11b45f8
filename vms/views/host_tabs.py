"""What ``vms`` adds to the host page: the "Virtual machines" tab and the VM counts of its
summary (registered here, so ``hosts`` does not import ``vms``)."""

from __future__ import annotations

from django.db.models import Count, Sum
from django.http import HttpRequest

from hosts.models import Host
from panel.generic import ViewTab, extend_tab, register_tab

from .. import selectors
from ..choices import VMState
from .lists import vm_table_context


def _host_vms(request: HttpRequest, host) -> dict:
    return vm_table_context(request, fixed={"host": host.pk})


def _host_summary(request: HttpRequest, host) -> dict:
    vms = selectors.vms_for(request.user).prefetch_related(None).filter(host=host, gone=False)
    by_state = dict(vms.order_by().values_list("state").annotate(n=Count("pk")))
    return {
        "vm_states": [
            (value, label, by_state[value]) for value, label in VMState.choices if value in by_state
        ],
        "vm_total": sum(by_state.values()),
        "running": vms.filter(state=VMState.RUNNING).aggregate(
            vcpus=Sum("vcpus"), memory_mib=Sum("memory_mib")
        ),
    }


register_tab(
    Host,
    ViewTab(
        "vms",
        "Virtual machines",
        "vm",
        "vms/tabs/host_vms.html",
        200,
        context=_host_vms,
        badge=lambda host: host.vm_count,
        reveal=lambda host: f"host-{host.pk} host-{host.pk}-vms",
    ),
)
extend_tab(Host, "summary", _host_summary)
