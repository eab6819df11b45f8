"""Start the panel the way `make demo` does and read the API from outside the process."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from hosts.testnode import write_node

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    # The shipped fixtures (the demo's sim-01) and the tests' own node files.
    nodes = f"{Path(__file__).resolve().parents[2] / 'hosts' / 'fixtures'},{tempfile.gettempdir()}"
    env.update(PADDOCK_DEMO="1", PYTHONUNBUFFERED="1", PADDOCK_TEST_NODE_DIRS=nodes, **extra)
    return env


class Panel:
    def __init__(self, env: dict, port: int, log: Path, cwd: Path = ROOT):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/api/health/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"demo not serving after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def token(self) -> str:
        response = httpx.post(
            f"{self.base}/api/auth/token/", json={"username": "admin", "password": "admin"}
        )
        assert response.status_code == 201, response.text
        return response.json()["token"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Ctrl-C, as a user would; the whole process group (production shape has children).
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def test_embedded_demo_serves_the_simulated_hosts_vms(tmp_path):
    port = _free_port()
    panel = Panel(_clean_env(PADDOCK_DATA_DIR=str(tmp_path)), port, tmp_path / "demo.log")
    try:
        panel.wait_ready()
        headers = {"Authorization": f"Token {panel.token()}"}
        body = httpx.get(f"{panel.base}/api/vms/?host=1&limit=100", headers=headers).json()
        assert body["count"] == 36
        states = {vm["state"] for vm in body["results"]}
        assert {"running", "shutoff", "paused"} <= states
        hosts = httpx.get(f"{panel.base}/api/hosts/", headers=headers).json()["results"]
        sim = next(h for h in hosts if h["name"] == "sim-01")
        assert sim["status"] == "online" and sim["simulated"] is True
        # Queued work runs on the in-process worker: a re-sync finishes.
        task = httpx.post(f"{panel.base}/api/hosts/{sim['id']}/sync/", headers=headers).json()
        _wait_task(panel.base, headers, task["task"]["id"])
        # Pages are served too, with their static files.
        assert httpx.get(f"{panel.base}/", follow_redirects=False).status_code == 302
        assert httpx.get(f"{panel.base}/api/docs/", headers=headers).status_code in (200, 302, 403)
    finally:
        panel.stop()
    assert panel.proc.returncode is not None


def _wait_task(base: str, headers: dict, task_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = httpx.get(f"{base}/api/tasks/{task_id}/", headers=headers).json()
        if task["state"] in ("succeeded", "failed", "cancelled"):
            assert task["state"] == "succeeded", task
            return task
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} did not finish: {task}")


@pytest.fixture
def scratch_database():
    """A throw-away PostgreSQL database for a panel started in a separate process."""
    base = os.environ.get("DATABASE_URL", "postgres://paddock:paddock@127.0.0.1:5432/paddock")
    if not base.startswith("postgres"):
        pytest.fail(
            "The production-shape smoke test needs DATABASE_URL on PostgreSQL (make test sets it)."
        )
    name = f"paddock_smoke_{uuid.uuid4().hex[:8]}"
    admin_url = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_production_shape_runs_tasks_on_a_celery_worker_over_redis(tmp_path, scratch_database):
    # A Redis database of its own, emptied first: workers of other Paddock runs on this Redis
    # must not take its messages.
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    redis_url = base.rsplit("/", 1)[0] + "/" + os.environ.get("PADDOCK_SMOKE_REDIS_DB", "12")
    redis.Redis.from_url(redis_url).flushdb()
    port = _free_port()
    env = _clean_env(
        PADDOCK_DATA_DIR=str(tmp_path),
        DATABASE_URL=scratch_database,
        REDIS_URL=redis_url,
        PADDOCK_RECONCILE_SECONDS="5",
    )
    panel = Panel(env, port, tmp_path / "demo.log")
    try:
        panel.wait_ready()
        headers = {"Authorization": f"Token {panel.token()}"}
        # Its own seed: domains of the demo node share UUIDs with the default one.
        uri = write_node(tmp_path / "extra-node.xml", domains=12, seed=12)
        response = httpx.post(
            f"{panel.base}/api/hosts/", json={"name": "extra", "uri": uri}, headers=headers
        )
        assert response.status_code == 201, response.text
        host_id = response.json()["id"]
        _wait_task(panel.base, headers, response.json()["task"]["id"])
        body = httpx.get(f"{panel.base}/api/vms/?host={host_id}", headers=headers).json()
        assert body["count"] == 12
        log = panel.log.read_text()
        for name in ("web", "worker", "beat", "watcher"):
            assert f"started {name}" in log
    finally:
        panel.stop()


def test_production_shape_starts_from_a_fresh_clone(tmp_path, scratch_database):
    """`make demo` with DATABASE_URL and REDIS_URL in a checkout that has no data folder yet:
    the folder is made owner-only before beat (which writes its schedule there) starts, all
    four processes keep running, and a task runs on the worker."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert not (clone / "var").exists()
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    redis_url = base.rsplit("/", 1)[0] + "/" + os.environ.get("PADDOCK_SMOKE_REDIS_DB", "12")
    redis.Redis.from_url(redis_url).flushdb()
    env = _clean_env(DATABASE_URL=scratch_database, REDIS_URL=redis_url)
    env.pop("PADDOCK_DATA_DIR", None)
    env["PADDOCK_TEST_NODE_DIRS"] = f"{clone / 'hosts' / 'fixtures'},{tempfile.gettempdir()}"
    # This checkout's interpreter runs the clone's code (manage.py puts its folder first).
    panel = Panel(env, _free_port(), tmp_path / "demo.log", cwd=clone)
    try:
        panel.wait_ready()
        data = clone / "var"
        deadline = time.monotonic() + 60
        while not list(data.glob("celerybeat-schedule*")) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert list(data.glob("celerybeat-schedule*")), panel.log.read_text()[-3000:]
        headers = {"Authorization": f"Token {panel.token()}"}
        hosts = httpx.get(f"{panel.base}/api/hosts/", headers=headers).json()["results"]
        sim = next(h for h in hosts if h["name"] == "sim-01")
        task = httpx.post(f"{panel.base}/api/hosts/{sim['id']}/sync/", headers=headers).json()
        _wait_task(panel.base, headers, task["task"]["id"])
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.iterdir():
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        assert panel.proc.poll() is None, panel.log.read_text()[-3000:]
        log = panel.log.read_text()
        for name in ("web", "worker", "beat", "watcher"):
            assert f"started {name}" in log
        assert " exited with " not in log, log[-3000:]  # nothing had to be started again
    finally:
        panel.stop()
