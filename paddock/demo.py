"""Seed the demo: an admin, two tenants with users in each role, the simulated host, and the
local QEMU host where one answers. Idempotent: running it again adds nothing twice."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from hosts import services as host_services
from hosts.driver.connection import answers
from hosts.models import ISO_Q, Host, Volume
from panel import taskrunner
from panel.choices import Role
from panel.models import Membership, Tenant
from vms.models import VirtualMachine

User = get_user_model()

DEMO_NODE = Path(settings.BASE_DIR) / "hosts" / "fixtures" / "demo-node.xml"

# Demo only: well-known passwords, printed at start-up.
DEMO_USERS = [
    # (username, password, tenant, role)
    ("alice", "alice", "acme", Role.ADMIN),
    ("oscar", "oscar", "acme", Role.OPERATOR),
    ("mia", "mia", "acme", Role.MEMBER),
    ("victor", "victor", "acme", Role.VIEWER),
    ("gina", "gina", "globex", Role.ADMIN),
]
# Name prefixes of the simulated host's VMs that move to a tenant.
TENANT_VMS = {"acme": ("web-", "db-", "cache-", "mail-"), "globex": ("k8s-node-", "ci-runner-")}


def local_qemu_answers() -> bool:
    return answers("qemu:///system")


def seed(stdout=None) -> None:
    def say(msg: str) -> None:
        if stdout is not None:
            stdout.write(msg)

    admin = User.objects.filter(username="admin").first()
    if admin is None:
        admin = User.objects.create_superuser("admin", password="admin")
        say("Created platform admin 'admin'")
    Tenant.get_default()
    tenants = {name: Tenant.objects.get_or_create(name=name)[0] for name in ("acme", "globex")}
    for username, password, tenant, role in DEMO_USERS:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username, password=password)
        Membership.objects.get_or_create(user=user, tenant=tenants[tenant], defaults={"role": role})

    new_hosts = []
    if not Host.objects.filter(name="sim-01").exists():
        _host, task = host_services.host_create(
            user=admin,
            name="sim-01",
            uri=f"test://{DEMO_NODE}",
            description="Simulated host (libvirt test driver)",
            tags=["demo"],
        )
        new_hosts.append(task.pk)
    if not Host.objects.filter(uri="qemu:///system").exists() and local_qemu_answers():
        _host, task = host_services.host_create(
            user=admin, name="local", uri="qemu:///system", description="This machine"
        )
        new_hosts.append(task.pk)
    # Run the first syncs now, so the panel opens with its inventory.
    for task_id in new_hosts:
        taskrunner.execute(task_id)
    sim = Host.objects.filter(name="sim-01").first()
    if sim is not None and new_hosts:
        default = Tenant.get_default()
        with transaction.atomic():
            for tenant_name, prefixes in TENANT_VMS.items():
                for prefix in prefixes:
                    VirtualMachine.objects.filter(
                        host=sim, tenant=default, name__startswith=prefix
                    ).update(tenant=tenants[tenant_name])
            for tenant in tenants.values():
                Volume.objects.filter(disks__vm__tenant=tenant, pool__host=sim).update(
                    tenant=tenant
                )
            # The shipped installer ISOs and base images are the platform's catalog: offered
            # read-only to every tenant; every other volume is its VM's tenant's alone.
            base = Q(name__endswith="-base.qcow2") | Q(name__endswith="-base.raw")
            Volume.objects.filter(base | ISO_Q, pool__host=sim).update(published=True, tenant=None)
