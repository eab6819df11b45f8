"""Faults on the production shape: one trial of each through scripts/chaos.py (``make chaos``
runs ten), and a worker killed before a delete undefines the domain.

The chaos run starts its own PostgreSQL cluster and redis-server on free ports (never the ones
the suite uses), the four processes against them and the real libvirtd, and exits non-zero on
any task lost, duplicated side effect, orphan, stuck lock or recovery of a minute or more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
import redis

from panel import taskrunner
from tests.integration.test_worker_crash import (  # noqa: F401 (fixtures)
    _create_body,
    _volumes,
    _wait_task,
    broker,
    workers,
)
from vms.models import VirtualMachine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
FAULTS = ("kill -9 web", "kill -9 worker", "kill -9 beat", "kill -9 watcher")
ROW = re.compile(r"^\| (?P<fault>[^|]+?) \| (?P<counts>[\d |.]+)\|$")


@pytest.mark.timeout(1200)
def test_one_trial_of_each_fault_loses_nothing_and_recovers_within_a_minute(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["CHAOS_TRIALS"] = "1"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1150,
    )  # fmt: skip
    out = result.stdout + result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        match = ROW.match(line)
        if match:
            cells = [c.strip() for c in match["counts"].split("|") if c.strip()]
            rows[match["fault"]] = cells
    assert set(rows) == {*FAULTS, "redis restarted empty", "postgres restarted"}, out[-4000:]
    for fault, (trials, lost, duplicated, orphans, stuck, recovery, _exits) in rows.items():
        # A process that exited on its own was started again (the last column) and counts
        # only through what it did to the tasks.
        assert trials == "1", fault
        assert (lost, duplicated, orphans, stuck) == ("0", "0", "0", "0"), (fault, out[-4000:])
        assert float(recovery) < 60, (fault, out[-4000:])
    assert result.returncode == 0, out[-4000:]
    assert "PASS" in result.stdout
    # It cleaned up after itself (libvirtd may take a moment to drop a destroyed domain).
    conn = libvirt.open("qemu:///system")
    try:
        deadline = time.monotonic() + 15
        while True:
            left = [
                d.name() for d in conn.listAllDomains(0) if d.name().startswith("paddockchaos-")
            ]
            pools = [
                p.name()
                for p in conn.listAllStoragePools(0)
                if p.name().startswith("paddockchaos-")
            ]
            if (not left and not pools) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        conn.close()
    assert left == [] and pools == []


@pytest.mark.django_db(transaction=True)
def test_worker_killed_before_undefining_a_delete_is_finished_by_recovery(api, lab, workers):  # noqa: F811
    client = api.as_user(lab["admin"])
    name = f"{lab['prefix']}undone"
    healthy = workers("healthy")
    body = client.post("/api/vms/", _create_body(lab, name), format="json").json()
    _wait_task(body["task"]["id"], {"succeeded"})
    vm_id = body["vm"]["id"]
    healthy.stop()

    crashing = workers("crash-delete", failpoint="vm.delete.listed")
    response = client.delete(f"/api/vms/{vm_id}/?delete_volumes=true")
    assert response.status_code == 202
    task_id = response.json()["task"]["id"]
    crashing.wait_failpoint()
    crashing.kill()
    lab["conn"].lookupByName(name)  # still defined (and running) when the worker died
    killed = time.monotonic()
    time.sleep(4)  # the dead worker's lease (3 s here) runs out; no beat runs in this test

    workers("recovery")  # a starting worker recovers what dead workers left
    task = _wait_task(task_id, {"succeeded", "failed"})
    assert task.state == "succeeded", task.error
    assert time.monotonic() - killed < 60
    assert "undefined the domain" in task.log_entries.last().message
    with pytest.raises(libvirt.libvirtError):
        lab["conn"].lookupByName(name)
    assert _volumes(lab) == []
    assert not VirtualMachine.objects.filter(pk=vm_id).exists()
    assert not VirtualMachine.objects.filter(lock__isnull=False).exists()
    # The VM's name is free again: a new create is accepted.
    again = client.post("/api/vms/", _create_body(lab, name), format="json")
    assert again.status_code == 202, again.content
    assert _wait_task(again.json()["task"]["id"], {"succeeded", "failed"}).state == "succeeded"


def test_a_redis_broker_emptied_is_noticed_once():
    base = os.environ.get("REDIS_URL")
    if not base:
        pytest.fail("needs REDIS_URL (make test sets it)")
    url = base.rsplit("/", 1)[0] + "/" + os.environ.get("PADDOCK_CRASH_TEST_REDIS_DB", "13")
    client = redis.Redis.from_url(url)
    client.flushdb()  # what a restart without persistence leaves
    assert taskrunner.broker_was_emptied(url) is True
    assert taskrunner.broker_was_emptied(url) is False  # the mark is back
    client.flushdb()
    assert taskrunner.broker_was_emptied(url) is True
