"""The scale inventory the benchmarks share: 2,000 hosts, 50,000 VMs, 200,000 tasks, 600,000
task log lines, seeded into the bench database with bulk inserts (PostgreSQL ``COPY`` for the
tasks and their log lines).

``seed_scale()`` needs Django set up and migrated (``_common.setup_django_and_migrate``). The
hosts are test-driver hosts (``test:///paddockbench/...``) marked online; no libvirt connection
is opened. Each VM has two disks and one NIC; VMs are spread over the hosts and ten tenants;
tasks are spread over the VMs, mostly finished, with three log lines each.

Run as ``python benchmarks/_scale.py --seed`` it seeds a throwaway database and prints how long
each part took and how large the database is (``make bench`` runs every ``*.py`` here, and
without ``--seed`` this one only prints one line).
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    bench_environment,
    figure,
    header,
    run_main,
    setup_django_and_migrate,
)

HOSTS = 2_000
VMS = 50_000
TASKS = 200_000
LOG_LINES = 600_000
TENANTS = 10
ADMIN = "bench-admin"
ADMIN_PASSWORD = "bench-admin-password-1"
MEMBER = "bench-member"
MEMBER_PASSWORD = "bench-member-password-1"
STATES = ("running", "running", "running", "shutoff", "paused")
TASK_KINDS = ("vm.power", "vm.create", "vm.snapshot", "vm.delete", "host.sync")


def _copy(cursor, table: str, columns: list[str], rows) -> int:
    """COPY ``rows`` (tuples of str/None) into ``table``; the fastest bulk insert PostgreSQL has."""
    count = 0
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def seed_scale(
    hosts: int = HOSTS,
    vms: int = VMS,
    tasks: int = TASKS,
    log_lines: int = LOG_LINES,
    tenants: int = TENANTS,
) -> dict:
    """Seed the inventory; returns the users, their passwords and sample ids."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from hosts.models import Host, Network, StoragePool
    from panel.models import Membership, Task, TaskLogEntry, Tenant
    from vms.models import Disk, Nic, VirtualMachine

    timings: dict[str, float] = {}
    started = time.perf_counter()
    user_model = get_user_model()
    admin = user_model.objects.create_user(
        ADMIN, password=ADMIN_PASSWORD, is_superuser=True, is_staff=True
    )
    tenant_rows = [Tenant.get_default()]
    tenant_rows += Tenant.objects.bulk_create(
        [Tenant(name=f"bench-tenant-{n:02d}") for n in range(tenants - 1)]
    )
    member = user_model.objects.create_user(MEMBER, password=MEMBER_PASSWORD)
    Membership.objects.create(user=member, tenant=tenant_rows[1], role="member")

    now = timezone.now()
    host_rows = Host.objects.bulk_create(
        [
            Host(
                name=f"kvm-{n:04d}",
                uri=f"test:///paddockbench/node-{n:04d}.xml",
                simulated=True,
                status="online",
                hostname=f"kvm-{n:04d}.bench",
                hypervisor="QEMU",
                arch="x86_64",
                cpus=64,
                sockets=2,
                cores=16,
                threads=2,
                memory_mib=512 * 1024,
                last_seen=now,
                last_synced=now,
            )
            for n in range(hosts)
        ],
        batch_size=2000,
    )
    StoragePool.objects.bulk_create(
        [
            StoragePool(
                host=h,
                name="default",
                uuid=str(uuid.UUID(int=(1 << 64) + h.pk, version=4)),
                pool_type="dir",
                path="/var/lib/libvirt/images",
                state="active",
                capacity=4 << 40,
                allocation=1 << 40,
                available=3 << 40,
            )
            for h in host_rows
        ],
        batch_size=2000,
    )
    Network.objects.bulk_create(
        [
            Network(
                host=h,
                name="lan",
                uuid=str(uuid.UUID(int=(2 << 64) + h.pk, version=4)),
                forward_mode="bridge",
                bridge="br0",
                active=True,
            )
            for h in host_rows
        ],
        batch_size=2000,
    )
    timings["hosts"] = time.perf_counter() - started

    t0 = time.perf_counter()
    vm_rows = [
        VirtualMachine(
            host=host_rows[i % hosts],
            tenant=tenant_rows[i % tenants],
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
        for i in range(vms)
    ]
    VirtualMachine.objects.bulk_create(vm_rows, batch_size=5000)
    disks, nics = [], []
    for i, vm in enumerate(vm_rows):
        for n in range(2):
            disks.append(
                Disk(
                    vm=vm,
                    target="vd" + "ab"[n],
                    bus="virtio",
                    source_type="file",
                    source=f"/var/lib/libvirt/images/{vm.name}-disk{n}.qcow2",
                    format="qcow2",
                )
            )
        nics.append(
            Nic(
                vm=vm,
                mac=f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                model="virtio",
                source_type="network",
                source="lan",
            )
        )
    Disk.objects.bulk_create(disks, batch_size=10000)
    Nic.objects.bulk_create(nics, batch_size=10000)
    timings["vms"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    task_table = Task._meta.db_table
    log_table = TaskLogEntry._meta.db_table
    with connection.cursor() as wrapper:
        raw = wrapper.cursor
        wrapper.execute(f"SELECT COALESCE(MAX(id), 0) FROM {task_table}")
        first_id = wrapper.fetchone()[0] + 1
        columns = [
            "id",
            "kind",
            "state",
            "progress",
            "user_id",
            "tenant_id",
            "host_id",
            "vm_id",
            "target",
            "params",
            "result",
            "error",
            "created",
            "started",
            "finished",
            "lease_owner",
            "sends",
        ]

        def task_rows():
            for n in range(tasks):
                vm = vm_rows[n % vms]
                created = now - timedelta(seconds=(tasks - n) * 5)
                final = n < tasks - 20
                state = ("succeeded" if n % 17 else "failed") if final else "queued"
                yield (
                    first_id + n,
                    TASK_KINDS[n % len(TASK_KINDS)],
                    state,
                    100 if final else 0,
                    admin.pk,
                    vm.tenant_id,
                    vm.host_id,
                    vm.pk,
                    vm.name,
                    "{}",
                    "{}",
                    "" if state != "failed" else "benchmark failure",
                    created,
                    created if final else None,
                    created + timedelta(seconds=2) if final else None,
                    "",
                    1,
                )

        _copy(raw, task_table, columns, task_rows())
        timings["tasks"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        per_task = max(1, log_lines // max(tasks, 1))

        def log_rows():
            for n in range(log_lines):
                task = n // per_task
                if task >= tasks:
                    task = n % tasks
                ts = now - timedelta(seconds=(tasks - task) * 5)
                yield (first_id + task, ts, "info", f"step {n % per_task} of benchmark task")

        _copy(raw, log_table, ["task_id", "ts", "level", "message"], log_rows())
        # COPY with explicit ids leaves the sequence behind: later inserts must not collide.
        wrapper.execute(
            f"SELECT setval(pg_get_serial_sequence('{task_table}', 'id'), "
            f"(SELECT MAX(id) FROM {task_table}))"
        )
        wrapper.execute("VACUUM ANALYZE")  # as autovacuum would: index-only scans see the rows
    timings["log_lines"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return {
        "admin": admin,
        "admin_password": ADMIN_PASSWORD,
        "member": member,
        "member_password": MEMBER_PASSWORD,
        "host_id": host_rows[hosts // 2].pk,
        "vm_id": vm_rows[vms // 2].pk,
        "vm_name": vm_rows[vms // 2].name,
        "task_id": first_id + tasks // 2,
        "timings": timings,
    }


def database_size() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return cursor.fetchone()[0]


def main() -> None:
    with BenchDatabase() as db, bench_environment(db):
        setup_django_and_migrate()
        header(f"seed: {HOSTS} hosts, {VMS} VMs, {TASKS} tasks, {LOG_LINES} log lines")
        seeded = seed_scale()
        for part, seconds in seeded["timings"].items():
            figure(f"seed_{part}", seconds, "s")
        figure("database_size", database_size() / 2**20, "MiB", 1)


if __name__ == "__main__":
    if "--seed" in sys.argv:
        run_main(main)
    else:
        print("benchmarks/_scale.py: the shared scale inventory (--seed to time seeding it)")
