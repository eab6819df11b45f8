"""The host-action executor on real hosts: this machine locally (``qemu:///system``) and the same
machine over SSH through the project's private sshd, with its host key pinned.

The one real change is reserving 2 MiB hugepages at run time (two more than the machine has),
which every test gives back: the original count is restored in a finalizer even when a test
fails half-way.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.db import transaction

from hosts import executor
from hosts.actions import ActionResult, Hugepages, SysfsValue
from hosts.executor import (
    ActionRefused,
    CommandFailed,
    HostUnreachable,
    SshTransport,
    executor_for,
)
from hosts.models import Host
from panel import taskrunner
from panel.choices import TaskState
from tests.integration import sshd as sshd_helpers
from tests.integration.hugepages import NR_2M, pages

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ssh_client_key = sshd_helpers.ssh_client_key
sshd = sshd_helpers.sshd
make_sshd = sshd_helpers.make_sshd
paddock_ssh_key = sshd_helpers.paddock_ssh_key

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
KEY_REFUSED = "Host key verification failed"


def _ssh_host(server, name="exec-ssh") -> Host:
    return Host.objects.create(name=name, uri=server.uri, ssh_host_key=server.host_key.public)


@pytest.fixture
def ssh_host(sshd, paddock_ssh_key) -> Host:
    return _ssh_host(sshd)


@pytest.fixture
def local_host(db) -> Host:
    return Host.objects.create(name="exec-local", uri="qemu:///system")


def test_check_over_ssh_reads_what_the_machine_reads(ssh_host, local_host, sshd):
    logins = sshd.accepted_logins()
    remote = executor_for(ssh_host)
    local = executor_for(local_host)
    assert isinstance(remote.transport, SshTransport)

    for action in (SysfsValue(THP), Hugepages(), Hugepages(node=0)):
        over_ssh = remote.check(action)
        assert over_ssh == local.check(action)
        raw = Path(action.path).read_text()
        assert over_ssh == action.spec.parse(raw)
    assert remote.check(SysfsValue(THP)) in ("always", "madvise", "never")
    assert sshd.accepted_logins() >= logins + 3, "the reads really went through sshd"


def test_changed_host_key_is_refused_and_nothing_runs(make_sshd, paddock_ssh_key, caplog):
    server = make_sshd()
    host = _ssh_host(server, "exec-rekeyed")
    action = SysfsValue(THP)
    assert executor_for(host).check(action) in ("always", "madvise", "never")

    server.replace_host_key()
    logins = server.accepted_logins()
    with pytest.raises(HostUnreachable, match=KEY_REFUSED) as caught:
        executor_for(host).check(action)
    assert "has changed and you have requested strict checking" in str(caught.value)
    assert server.accepted_logins() == logins, "Paddock's key was never offered"
    host.refresh_from_db()
    assert host.ssh_host_key != server.host_key.public, "the new key is not pinned silently"
    assert f"$ cat -- {THP}\nnot run: ssh " in caplog.text


def test_wrong_pinned_key_is_refused_before_login(sshd, paddock_ssh_key, tmp_path):
    impostor = sshd_helpers.generate_key(tmp_path / "impostor").public
    host = Host.objects.create(name="exec-impostor", uri=sshd.uri, ssh_host_key=impostor)
    logins = sshd.accepted_logins()
    with pytest.raises(HostUnreachable, match=KEY_REFUSED):
        executor_for(host).check(SysfsValue(THP))
    assert sshd.accepted_logins() == logins


def test_unreachable_host_fails_fast_naming_the_reason(paddock_ssh_key, tmp_path):
    port = sshd_helpers.free_port()  # nothing listens there
    key = sshd_helpers.generate_key(tmp_path / "somekey").public
    host = Host.objects.create(
        name="exec-down", uri=f"qemu+ssh://root@127.0.0.1:{port}/system", ssh_host_key=key
    )
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="Connection refused"):
        executor_for(host).check(SysfsValue(THP))
    assert time.monotonic() - started < 10


def test_bad_path_value_or_argv_is_refused_before_connecting(ssh_host, sshd):
    logins = sshd.accepted_logins()
    ex = executor_for(ssh_host)
    with pytest.raises(ActionRefused):
        SysfsValue("/etc/shadow")
    with pytest.raises(ActionRefused):
        Hugepages("1; touch /tmp/paddock-pwned")
    with pytest.raises(ActionRefused):
        ex.run("cat /etc/shadow")
    with pytest.raises(ActionRefused):
        ex.run(["sh", "-c", "touch /tmp/paddock-pwned"])
    assert sshd.accepted_logins() == logins
    assert not Path("/tmp/paddock-pwned").exists()


def test_shell_characters_reach_the_host_as_plain_words(ssh_host, tmp_path, request):
    """The argv goes to the remote login shell quoted: a path with spaces, quotes and ``;``
    is one word there, and nothing it holds is run."""
    odd = tmp_path / "it's a; $(touch pwned) file"
    odd.write_text("plain\n")
    rule = re.compile(re.escape(str(odd)))
    executor.READABLE_FILES.append(rule)
    request.addfinalizer(lambda: executor.READABLE_FILES.remove(rule))
    assert executor_for(ssh_host).read_file(str(odd)) == "plain\n"
    assert not (Path.home() / "pwned").exists() and not Path("pwned").exists()


def _processes(argv: list[str]) -> list[int]:
    wanted = ("\x00".join(argv) + "\x00").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_command_past_its_time_is_stopped_on_the_host_too(ssh_host, monkeypatch):
    """Killing the local ssh client would leave the command running on the host: the host's
    own ``timeout`` stops it."""
    monkeypatch.setitem(executor.PROGRAMS, "sleep", lambda argv: None)
    argv = ["sleep", "4711"]
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after 1 s"):
        executor_for(ssh_host, timeout=1).run(argv)
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while _processes(argv) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes(argv) == []


@taskrunner.task_kind("test.executor.hugepages")
def _reserve(ctx: taskrunner.TaskContext) -> dict:
    ex = executor_for(ctx.task.host, log=ctx)
    action = Hugepages(ctx.task.params["count"])
    first = ex.apply(action)
    again = ex.apply(action)
    return {"first": first.to_dict(), "again": again.to_dict()}


@taskrunner.task_kind("test.executor.revert")
def _give_back(ctx: taskrunner.TaskContext) -> dict:
    ex = executor_for(ctx.task.host, log=ctx)
    return ex.revert(ActionResult.from_dict(ctx.task.params["result"])).to_dict()


def _run(kind: str, host: Host, **params):
    with transaction.atomic():
        task = taskrunner.create_task(kind=kind, host=host, params=params, lock=[host])
    taskrunner.execute(task.pk)
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED, task.error
    return task


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_reserve_hugepages_in_a_task_and_give_them_back(request, where, hugepages_given_back, sshd):
    host = request.getfixturevalue("ssh_host" if where == "ssh" else "local_host")
    original = hugepages_given_back
    wanted = original + 2
    via = f"ssh {sshd.user}@127.0.0.1:{sshd.port}" if where == "ssh" else "local"

    task = _run("test.executor.hugepages", host, count=wanted)

    assert pages() == wanted, "the machine really holds the new reservation"
    first, again = task.result["first"], task.result["again"]
    assert (first["before"], first["after"], first["changed"]) == (original, wanted, True)
    assert again["changed"] is False, "applying what already holds changes nothing"
    messages = [e.message for e in task.log_entries.all()]
    path = str(NR_2M)
    tee = [m for m in messages if f"$ tee -- {path}" in m]
    assert len(tee) == 1, "the second apply wrote nothing"
    assert tee[0] == (
        f"{host.name} ({via}): $ tee -- {path}  [stdin: '{wanted}']\n"
        + tee[0].split("\n")[1]
        + f"\nstdout: {wanted}"
    )
    assert tee[0].split("\n")[1].startswith("exit 0 in ")
    reads = [m for m in messages if m.startswith(f"{host.name} ({via}): $ cat -- {path}\nexit 0")]
    assert len(reads) == 3  # before, read back, and the idempotent check
    assert f"stdout: {original}" in reads[0]
    assert f"{host.name}: hugepages-2048kB on host: {original} -> {wanted}" in messages
    assert f"{host.name}: hugepages-2048kB on host is already {wanted}: nothing to do" in messages

    undo = _run("test.executor.revert", host, result=first)
    assert pages() == original
    assert undo.result["changed"] is True
    assert any(
        f"$ tee -- {path}  [stdin: '{original}']" in e.message for e in undo.log_entries.all()
    )
