"""The host-action executor without a real host: what is refused before anything runs, how
commands are built and logged, and a simulated (test-driver) host's check/apply/revert."""

from __future__ import annotations

import logging
import shlex

import pytest
from django.db import transaction

from hosts import executor
from hosts.actions import ActionResult, Hugepages, SysfsValue, action_from_dict
from hosts.actions.sysfs import sysfs_path
from hosts.executor import (
    ActionFailed,
    ActionRefused,
    CommandFailed,
    CommandResult,
    Executor,
    ExecutorError,
    LocalTransport,
    SimulatedTransport,
    SshTransport,
    Transport,
    executor_for,
    transport_for,
    validate_argv,
)
from hosts.models import Host
from panel import taskrunner
from panel.choices import TaskState

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
NR_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"


class Recorder(Transport):
    """A host that answers from a dict of files and records every command it is given."""

    label = "recorder"

    def __init__(self, files: dict[str, str] | None = None, short: dict[str, int] | None = None):
        self.files = dict(files or {})
        self.short = short or {}  # path -> the most a write there can reach (a full kernel)
        self.commands: list[tuple[tuple[str, ...], str | None]] = []

    def run(self, argv, stdin, timeout):
        self.commands.append((argv, stdin))
        program, path = argv[0], argv[-1]
        if path not in self.files:
            return CommandResult(argv, 1, stderr=f"{program}: {path}: No such file or directory")
        if program == "cat":
            return CommandResult(argv, 0, self.files[path])
        value = stdin.strip()
        if path in self.short:
            value = str(min(int(value), self.short[path]))
        self.files[path] = value + "\n"
        return CommandResult(argv, 0, stdin)


class Log:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def log(self, message, level="info"):
        self.lines.append((message, level))


@pytest.fixture
def recorder():
    return Recorder({THP: "always [madvise] never\n", NR_2M: "0\n"})


# --- refused before anything runs -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/shadow",
        "sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/transparent_hugepage/../../../etc/shadow",
        "/sys/kernel/mm//transparent_hugepage/enabled",
        "/sys/kernel/mm/transparent_hugepage/enabled/",
        "/sys/kernel/mm/transparent_hugepage/enabled\x00",
        "/sys/kernel/mm/transparent_hugepage/enabled\n/etc/shadow",
        "/sys/kernel/mm/hugepages/hugepages-4kB/nr_hugepages",
        "/sys/devices/system/node/node01/hugepages/hugepages-2048kB/nr_hugepages",
        "/sys/devices/system/node/node-1/hugepages/hugepages-2048kB/nr_hugepages",
        "/sys/class/net/../mtu",
        "/sys/class/net/a/b/mtu",
        "/sys/class/net/averyveryverylongname/mtu",
        "/sys/power/state",
        "",
        None,
        42,
    ],
)
def test_paths_outside_the_allow_list_are_refused(path, recorder):
    with pytest.raises(ActionRefused):
        SysfsValue(path)
    assert recorder.commands == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (NR_2M, -1),
        (NR_2M, "-1"),
        (NR_2M, "2; reboot"),
        (NR_2M, "2\n3"),
        (NR_2M, "0x10"),
        (NR_2M, " 2"),
        (NR_2M, 2.5),
        (NR_2M, True),
        (NR_2M, 10_000_001),
        (THP, "sometimes"),
        (THP, "[never]"),
        (THP, "never\n"),
        (THP, 1),
        ("/sys/class/net/eth0/mtu", 67),
        ("/sys/class/net/eth0/mtu", 65536),
        ("/sys/kernel/mm/ksm/run", 3),
    ],
)
def test_bad_values_are_refused(path, value, recorder):
    with pytest.raises(ActionRefused):
        SysfsValue(path, value)
    assert recorder.commands == []


def test_read_only_files_refuse_a_value():
    path = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages"
    assert SysfsValue(path).value is None
    with pytest.raises(ActionRefused, match="read-only"):
        SysfsValue(path, 1)


def test_a_check_only_action_cannot_be_applied(recorder):
    ex = Executor(recorder)
    with pytest.raises(ActionRefused, match="read-only"):
        ex.apply(SysfsValue(THP))
    assert recorder.commands == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 1, "size_kib": 4}, "size"),
        ({"count": 1, "size_kib": "2048"}, "size"),
        ({"count": 1, "node": -1}, "node"),
        ({"count": 1, "node": "0"}, "node"),
        ({"count": 1, "node": True}, "node"),
        ({"count": -5}, "outside"),
    ],
)
def test_hugepages_parameters_are_validated(kwargs, message):
    with pytest.raises(ActionRefused, match=message):
        Hugepages(**kwargs)


def test_allowed_paths_are_accepted():
    for path in (
        THP,
        NR_2M,
        "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
        "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages",
        "/sys/class/net/br0/mtu",
        "/sys/class/net/eth0.42/mtu",
        "/sys/class/net/enp3s0f0/device/sriov_numvfs",
        "/sys/module/kvm/parameters/halt_poll_ns",
    ):
        assert sysfs_path(path).matches(path)
    assert Hugepages(3, node=1).path == (
        "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"
    )
    assert SysfsValue(NR_2M, "7").value == 7


@pytest.mark.parametrize(
    "argv",
    [
        "cat /etc/shadow",
        b"cat",
        [],
        ["sh", "-c", "echo hi"],
        ["bash", "-c", "id"],
        ["/bin/cat", "--", THP],
        ["cat", "--", THP, None],
        ["cat", "--", "a\x00b"],
        ["cat", "--", "a\nb"],
        ["cat", "x" * 5000],
        ["cat"] * 65,
    ],
)
def test_argv_is_refused_before_it_runs(argv, recorder):
    with pytest.raises(ActionRefused):
        validate_argv(argv)
    with pytest.raises(ActionRefused):
        Executor(recorder).run(argv)
    assert recorder.commands == []


@pytest.mark.parametrize(
    "argv",
    [
        ["cat", "/etc/shadow"],
        ["cat", "--", "/etc/shadow"],
        ["cat", "--", THP, "/etc/shadow"],
        ["cat", "--", "/sys/kernel/mm/transparent_hugepage/../../../../etc/shadow"],
        ["tee", "--", "/etc/cron.d/job"],
        ["tee", "-a", "--", NR_2M],
        ["tee", "--", "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"],
    ],
)
def test_files_are_read_and_written_only_from_the_allow_list(argv, recorder):
    """The executor's own door checks paths too, not only the actions built on it."""
    with pytest.raises(ActionRefused):
        Executor(recorder).run(argv, stdin="1\n")
    assert recorder.commands == []


def test_write_file_refuses_a_path_outside_the_allow_list(recorder):
    with pytest.raises(ActionRefused, match="not a file host actions may write"):
        Executor(recorder).write_file("/etc/shadow", "root::0:0:::::")
    assert recorder.commands == []


def test_unknown_action_data_is_refused():
    with pytest.raises(ActionRefused):
        action_from_dict({"kind": "shell", "command": "reboot"})
    with pytest.raises(ActionRefused):
        action_from_dict({"kind": "sysfs.value", "path": "/etc/shadow", "value": 1})
    with pytest.raises(ActionRefused):
        action_from_dict({"kind": "sysfs.value", "path": THP, "unexpected": 1})


# --- how commands are built --------------------------------------------------------------------


def test_ssh_command_pins_the_key_and_passes_argv_quoted(settings, tmp_path):
    known = tmp_path / "known_hosts.h1"
    transport = SshTransport("root", "10.0.0.5", 2222, known)
    argv = ("tee", "--", "/sys/class/net/it's/mtu")
    cmd = transport.command(argv, 30)

    assert f"UserKnownHostsFile={known}" in cmd
    assert "StrictHostKeyChecking=yes" in cmd
    assert "BatchMode=yes" in cmd
    assert "GlobalKnownHostsFile=/dev/null" in cmd
    assert f"ConnectTimeout={settings.PADDOCK.get('CONNECT_TIMEOUT', 15)}" in cmd
    assert cmd[cmd.index("-p") + 1] == "2222"
    assert cmd[cmd.index("-l") + 1] == "root"
    # The host's login shell receives one string that splits back into exactly the argv,
    # bounded on the host by coreutils' timeout.
    remote = ("timeout", "--kill-after=5", "30", *argv)
    assert cmd[-2:] == ["10.0.0.5", shlex.join(remote)]
    assert tuple(shlex.split(cmd[-1])) == remote


def test_transport_follows_the_uri(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.PADDOCK = {**settings.PADDOCK, "SSH_KEY": str(tmp_path / "ssh" / "id_ed25519")}
    local = Host.objects.create(name="local", uri="qemu:///system")
    remote = Host.objects.create(
        name="remote",
        uri="qemu+ssh://root@127.0.0.1:2222/system",
        ssh_host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlT0O4C6VZz5v0Ud7tDs0cY1wHtIa8d5Jd0",
    )
    unpinned = Host.objects.create(name="unpinned", uri="qemu+ssh://root@10.1.1.1/system")
    simulated = Host.objects.create(name="sim", uri="test:///default", simulated=True)

    assert isinstance(transport_for(local), LocalTransport)
    ssh = transport_for(remote)
    assert isinstance(ssh, SshTransport)
    assert ssh.known_hosts.read_text() == f"[127.0.0.1]:2222 {remote.ssh_host_key}\n"
    with pytest.raises(ExecutorError, match="no pinned SSH host key"):
        transport_for(unpinned)
    sim = transport_for(simulated)
    assert isinstance(sim, SimulatedTransport)
    assert sim.root == tmp_path / "simhosts" / str(simulated.pk)


# --- running, logging, idempotence, revert ----------------------------------------------------


def test_apply_is_idempotent_and_revert_restores(recorder):
    log = Log()
    ex = Executor(recorder, name="h1", log=log)
    action = Hugepages(4)

    first = ex.apply(action)
    assert (first.before, first.after, first.changed) == (0, 4, True)
    assert recorder.files[NR_2M] == "4\n"
    writes = [c for c in recorder.commands if c[0][0] == "tee"]
    assert writes == [(("tee", "--", NR_2M), "4\n")]

    recorder.commands.clear()
    again = ex.apply(action)
    assert again.changed is False and again.before == 4
    assert [c[0][0] for c in recorder.commands] == ["cat"], "a value that holds is only read"

    undone = ex.revert(first)
    assert undone.changed is True and recorder.files[NR_2M] == "0\n"
    recorder.commands.clear()
    assert ex.revert(first).changed is False
    assert ex.revert(again).changed is False
    assert not [c for c in recorder.commands if c[0][0] == "tee"]


def test_result_survives_json_and_reverts_from_it(recorder):
    ex = Executor(recorder)
    result = ex.apply(SysfsValue(THP, "never"))
    assert recorder.files[THP] == "never\n"
    stored = result.to_dict()
    assert stored == {
        "action": {"kind": "sysfs.value", "path": THP, "value": "never"},
        "before": "madvise",
        "after": "never",
        "changed": True,
    }
    ex.revert(ActionResult.from_dict(stored))
    assert recorder.files[THP] == "madvise\n"
    assert action_from_dict(Hugepages(2, node=0).to_dict()) == Hugepages(2, node=0)


def test_a_write_the_host_does_not_honour_is_put_back(recorder):
    recorder.short[NR_2M] = 3  # the kernel finds only 3 free 2 MiB pages
    ex = Executor(recorder)
    with pytest.raises(ActionFailed, match="asked for 8, the host holds 3"):
        ex.apply(Hugepages(8))
    assert recorder.files[NR_2M] == "0\n"


def test_apply_all_rolls_back_on_failure(recorder):
    recorder.short[NR_2M] = 1
    ex = Executor(recorder)
    with pytest.raises(ActionFailed):
        ex.apply_all([SysfsValue(THP, "never"), Hugepages(5)])
    assert recorder.files[THP] == "madvise\n"
    assert recorder.files[NR_2M] == "0\n"


def test_every_command_and_its_output_is_logged_bounded(recorder):
    recorder.files[THP] = "x" * 10_000
    log = Log()
    ex = Executor(recorder, name="h1", log=log)
    with pytest.raises(ExecutorError, match="Unexpected content"):
        ex.check(SysfsValue(THP))
    message, level = log.lines[-1]
    assert message.startswith(f"h1 (recorder): $ cat -- {THP}\nexit 0")
    assert "more characters" in message and len(message) < 2500
    assert level == "info"


def test_failure_is_logged_and_raised(recorder):
    log = Log()
    ex = Executor(recorder, name="h1", log=log)
    path = "/sys/class/net/nosuch0/mtu"
    with pytest.raises(CommandFailed, match="exit 1") as caught:
        ex.check(SysfsValue(path))
    assert caught.value.result.exit_code == 1
    message, level = log.lines[-1]
    assert f"$ cat -- {path}\nexit 1" in message
    assert "No such file or directory" in message and level == "warning"


def test_without_a_task_commands_go_to_the_logger(recorder, caplog):
    with caplog.at_level(logging.INFO, logger="hosts.executor"):
        Executor(recorder, name="h1").check(SysfsValue(THP))
    assert f"h1 (recorder): $ cat -- {THP}" in caplog.text
    assert "stdout: always [madvise] never" in caplog.text


def test_secret_input_stays_out_of_the_log(recorder):
    log = Log()
    Executor(recorder, log=log).write_file(NR_2M, "12", secret=True)
    assert "[stdin: hidden]" in log.lines[-1][0]
    assert "12" not in log.lines[-1][0]


def test_a_command_past_its_timeout_is_stopped(monkeypatch):
    monkeypatch.setitem(executor.PROGRAMS, "sleep", lambda argv: None)
    log = Log()
    ex = Executor(LocalTransport(), name="h1", log=log, timeout=0.3)
    with pytest.raises(CommandFailed, match=r"timed out after 0.3 s") as caught:
        ex.run(["sleep", "5"])
    assert caught.value.result.timed_out
    assert caught.value.result.duration < 3
    assert "(timeout)" in log.lines[-1][0]


# --- a simulated (test-driver) host -----------------------------------------------------------


@pytest.fixture
def sim_host(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    return Host.objects.create(
        name="sim",
        uri="test:///default",
        simulated=True,
        numa_cells=[
            {"id": 0, "cpus": [0, 1], "hugepages": [{"size_kib": 2048, "total": 0, "free": 0}]},
            {"id": 1, "cpus": [2, 3], "hugepages": [{"size_kib": 2048, "total": 0, "free": 0}]},
        ],
    )


def test_simulated_host_keeps_its_values_in_its_own_folder(sim_host, tmp_path):
    ex = executor_for(sim_host)
    assert ex.simulated
    assert ex.check(SysfsValue(THP)) == "madvise"
    node1 = Hugepages(6, node=1)
    assert ex.check(node1) == 0

    result = ex.apply(node1)
    assert result.changed and ex.check(node1) == 6
    stored = tmp_path / "simhosts" / str(sim_host.pk) / node1.path.lstrip("/")
    assert stored.read_text() == "6\n"
    assert ex.apply(node1).changed is False

    thp = ex.apply(SysfsValue(THP, "never"))
    thp_file = tmp_path / "simhosts" / str(sim_host.pk) / THP.lstrip("/")
    assert thp_file.read_text() == "always madvise [never]\n"
    ex.revert(thp)
    ex.revert(result)
    assert ex.check(SysfsValue(THP)) == "madvise" and ex.check(node1) == 0


def test_simulated_host_has_no_node_it_does_not_have(sim_host):
    with pytest.raises(CommandFailed, match="No such file"):
        executor_for(sim_host).check(Hugepages(node=7))


def test_simulated_host_runs_nothing_but_file_reads_and_writes(sim_host, monkeypatch):
    monkeypatch.setitem(executor.PROGRAMS, "ip", lambda argv: None)
    ex = executor_for(sim_host)
    log = Log()
    ex.task_log = log
    with pytest.raises(ExecutorError, match="simulated host only reads and writes"):
        ex.run(["ip", "link", "show"])
    assert log.lines[-1] == (
        "sim: $ ip link show\nnot run: The simulated host only reads and writes its files; "
        "it cannot run ip link show.",
        "error",
    )
    with pytest.raises(ActionRefused, match="normalized"):
        ex.run(["cat", "--", "/sys/../../etc/passwd"])


@taskrunner.task_kind("test.executor.thp")
def _thp_task(ctx: taskrunner.TaskContext) -> dict:
    ex = executor_for(ctx.task.host, log=ctx)
    result = ex.apply(SysfsValue(THP, ctx.task.params["mode"]))
    return {"host_actions": [result.to_dict()]}


def test_inside_a_task_commands_land_in_the_task_log(sim_host):
    with transaction.atomic():
        task = taskrunner.create_task(
            kind="test.executor.thp", host=sim_host, params={"mode": "never"}, lock=[sim_host]
        )
    taskrunner.execute(task.pk)
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED, task.error
    messages = [e.message for e in task.log_entries.all()]
    assert messages[0].startswith(f"sim (simulated): $ cat -- {THP}\nexit 0")
    assert "stdout: always [madvise] never" in messages[0]
    assert any(m.startswith(f"sim (simulated): $ tee -- {THP}  [stdin: 'never']") for m in messages)
    assert messages[-1] == f"sim: {THP}: 'madvise' -> 'never'"
    assert task.result["host_actions"][0]["before"] == "madvise"
