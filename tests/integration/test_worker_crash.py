"""Kill a Celery worker (SIGKILL) in the middle of a create and of a delete.

Recovery, run by the next worker that starts, must leave no orphan domain or volume, a failed
task with a message, and no lock; a redelivered message for the task afterwards does nothing.
Workers are real `celery worker` processes on Redis, against this test's PostgreSQL database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt
import pytest
import redis
from django.conf import settings

from paddock.celery import app as celery_app
from panel import taskrunner
from panel.models import Task
from vms.models import VirtualMachine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker():
    url = os.environ.get("REDIS_URL")
    db = settings.DATABASES["default"]
    if not url or settings.EMBEDDED or "postgresql" not in db["ENGINE"]:
        pytest.fail("The crash test needs REDIS_URL and PostgreSQL (make test sets both).")
    # A Redis database of its own: workers of other Paddock runs on this Redis never take
    # its messages, nor it theirs.
    url = url.rsplit("/", 1)[0] + "/" + os.environ.get("PADDOCK_CRASH_TEST_REDIS_DB", "13")
    redis.Redis.from_url(url).flushdb()
    saved = {k: celery_app.conf[k] for k in ("task_always_eager", "broker_url")}
    celery_app.conf.update(task_always_eager=False, broker_url=url)
    _reset_producers()
    yield url
    celery_app.conf.update(**saved)
    _reset_producers()


def _reset_producers() -> None:
    """Producers made on the previous broker (e.g. by a broadcast) must not be reused."""
    celery_app.close()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


class Worker:
    def __init__(self, tmp: Path, broker_url: str, name: str, failpoint: str = ""):
        db = settings.DATABASES["default"]
        self.marker = tmp / f"{name}.marker"
        self.log = tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(
            PADDOCK_DEMO="1",
            PADDOCK_DATA_DIR=str(tmp),
            PADDOCK_TEST_NODE_DIRS=tempfile.gettempdir(),
            DATABASE_URL=(
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
            ),
            REDIS_URL=broker_url,
            PADDOCK_TASK_LEASE_SECONDS="3",
            PADDOCK_FAILPOINTS=failpoint,
            PADDOCK_FAILPOINT_MARKER=str(self.marker),
        )
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", "--", "--pool", "solo",
             "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        self._wait_log("ready.", timeout)

    def _wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"worker not {text!r}:\n{self.log.read_text()[-3000:]}")

    def wait_failpoint(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.marker.exists():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        assert self.marker.exists(), self.log.read_text()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def workers(tmp_path, broker, lab):
    started: list[Worker] = []

    def start(name: str, failpoint: str = "") -> Worker:
        worker = Worker(tmp_path, broker, name, failpoint)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.kill()


def _wait_task(task_id: int, states: set[str], timeout: float = 90) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = Task.objects.get(pk=task_id)
        if task.state in states:
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} stayed {task.state}: {task.error}")


def _volumes(lab) -> list[str]:
    pool = lab["conn"].storagePoolLookupByName(lab["pool"].name)
    pool.refresh(0)
    return sorted(pool.listVolumes())


def _create_body(lab, name):
    return {
        "name": name,
        "tenant": lab["tenant"].pk,
        "host": lab["host"].pk,
        "vcpus": 1,
        "memory_mib": 64,
        "disks": [{"size_gib": 1, "pool": lab["pool"].pk}],
        "start": True,
    }


def test_worker_killed_mid_create_is_rolled_back(api, lab, workers):
    client = api.as_user(lab["admin"])
    crashing = workers("crash-create", failpoint="vm.create.volumes_made")
    name = f"{lab['prefix']}crash"
    response = client.post("/api/vms/", _create_body(lab, name), format="json")
    assert response.status_code == 202, response.content
    task_id = response.json()["task"]["id"]

    crashing.wait_failpoint()
    assert len(_volumes(lab)) == 1, "the volume exists when the worker dies"
    crashing.kill()
    assert Task.objects.get(pk=task_id).state == "running"
    time.sleep(4)  # the dead worker's lease runs out

    workers("recovery")  # a starting worker recovers what dead workers left
    task = _wait_task(task_id, {"failed"})
    assert "stopped before it finished" in task.error and "Rolled back" in task.error
    assert _volumes(lab) == []
    with pytest.raises(libvirt.libvirtError):
        lab["conn"].lookupByName(name)
    assert not VirtualMachine.objects.filter(name=name).exists()
    assert not VirtualMachine.objects.filter(lock__isnull=False).exists()

    # The message for the task comes again: nothing happens.
    log_lines = task.log_entries.count()
    taskrunner.dispatch(task_id, taskrunner.queue_for(lab["host"].pk))
    time.sleep(3)
    task.refresh_from_db()
    assert task.state == "failed" and task.log_entries.count() == log_lines
    assert _volumes(lab) == []


def test_worker_killed_mid_delete_is_finished_by_recovery(api, lab, workers):
    client = api.as_user(lab["admin"])
    name = f"{lab['prefix']}victim"
    healthy = workers("healthy")
    body = client.post("/api/vms/", _create_body(lab, name), format="json").json()
    _wait_task(body["task"]["id"], {"succeeded"})
    vm_id = body["vm"]["id"]
    assert len(_volumes(lab)) == 1
    healthy.stop()

    crashing = workers("crash-delete", failpoint="vm.delete.undefined")
    response = client.delete(f"/api/vms/{vm_id}/?delete_volumes=true")
    assert response.status_code == 202
    task_id = response.json()["task"]["id"]
    crashing.wait_failpoint()
    crashing.kill()
    with pytest.raises(libvirt.libvirtError):
        lab["conn"].lookupByName(name)  # undefined before the crash
    assert len(_volumes(lab)) == 1  # but its volume was not deleted yet
    time.sleep(4)

    workers("recovery")
    task = _wait_task(task_id, {"succeeded", "failed"})
    assert task.state == "succeeded", task.error  # finished, not left for the user to redo
    assert "already undefined" in task.log_entries.last().message
    assert _volumes(lab) == []
    assert not VirtualMachine.objects.filter(pk=vm_id).exists()
    assert not VirtualMachine.objects.filter(lock__isnull=False).exists()

    taskrunner.dispatch(task_id, taskrunner.queue_for(lab["host"].pk))
    time.sleep(3)
    assert Task.objects.get(pk=task_id).state == "succeeded"


def test_worker_catches_up_on_a_host_it_missed(api, lab, workers, make_node):
    """A host added while no worker listened (its broadcast missed) is served after a sweep."""
    from hosts.models import Host
    from panel.tasks import sync_host_queues

    workers("late")
    # Added behind the workers' backs: no broadcast reaches them.
    host = Host.objects.create(name="missed", uri=make_node(domains=3))
    task = Task.objects.create(kind="host.sync", host=host, target="host missed")
    taskrunner.dispatch(task.pk, taskrunner.queue_for(host.pk))
    time.sleep(3)
    assert Task.objects.get(pk=task.pk).state == "queued"
    sync_host_queues()  # what the periodic sweep does
    assert _wait_task(task.pk, {"succeeded", "failed"}, timeout=60).state == "succeeded"
