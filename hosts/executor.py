"""The host-action executor: the one way Paddock changes a host outside libvirt.

Every command runs as an argv list, never a shell string, through one of three transports:

- ``qemu+ssh://`` hosts: OpenSSH with the host's pinned key and nothing else
  (:func:`hosts.driver.connection.ssh_options`: ``StrictHostKeyChecking=yes``, ``BatchMode``, a
  connect timeout). sshd hands a command to the remote user's login shell as one string, so the
  argv is quoted with :func:`shlex.join`, which that shell splits back into exactly the same
  words; the words were validated before (no NUL, no newline, allow-listed program).
- ``qemu:///system`` (and ``qemu:///session``): the command runs on this machine, with a fixed
  ``PATH`` and the C locale.
- test-driver hosts (``test:///…``) are simulated: they have no kernel to tune. Their "host" is
  a folder under the data dir (``simhosts/<host id>/``) holding the files the actions read and
  write (seeded with the values a fresh host would have); only reading and writing files
  (``cat``, ``tee``) runs there, and anything else is refused with a message saying so.

Commands are bounded in time (``PADDOCK["HOST_ACTION_TIMEOUT"]`` seconds, 30 unless set, or what
the caller asks), on an SSH host by the host's own ``timeout`` as well, and every one — its argv, exit code and the first KiB or two of its output — goes to
the task log when the executor runs inside a task, and to this module's logger otherwise.

Actions (``hosts.actions``) are small objects with ``check``, ``apply`` and ``revert`` built on
:meth:`Executor.read_file`, :meth:`Executor.write_file` and :meth:`Executor.run`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from hosts.driver.connection import (
    HostConnectError,
    InvalidURI,
    ensure_client_key,
    known_hosts_file,
    parse_uri,
    ssh_options,
)

if TYPE_CHECKING:
    from hosts.models import Host


class Action(Protocol):
    """What the executor asks of an action (``hosts.actions`` defines them; the executor does
    not import them: actions stand on the executor, not the other way round)."""

    def check(self, ex: Executor) -> Any: ...

    def apply(self, ex: Executor) -> ActionResult: ...

    def revert(self, ex: Executor, result: ActionResult) -> ActionResult: ...

    def describe(self) -> str: ...


class ActionResult(Protocol):
    action: Action


logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# What a command may print that is kept (the rest is cut) and what of it reaches the log.
MAX_OUTPUT = 64 * 1024
MAX_LOGGED = 2000
MAX_ARG = 4096
MAX_ARGS = 64
REMOTE_KILL_AFTER = 5  # seconds between the host's TERM and KILL to a command past its time
LOCAL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

_PROGRAM_RE = re.compile(r"^[a-z][a-z0-9_.+-]{0,63}$")


class ExecutorError(Exception):
    """A host action could not be carried out; the message says what and where."""


class ActionRefused(ExecutorError, ValueError):
    """A name, path, value or argv was refused before anything ran."""


class CommandFailed(ExecutorError):
    """A command ran and failed (non-zero exit or timeout); ``result`` holds what it said."""

    def __init__(self, message: str, result: CommandResult):
        super().__init__(message)
        self.result = result


class ActionFailed(ExecutorError):
    """An action ran but the host did not end up as asked (and was put back as it was)."""


class HostUnreachable(ExecutorError):
    """The transport did not get the command to the host (SSH refused the key, no answer…)."""


ArgvCheck = Callable[[tuple[str, ...]], None]

# The programs host actions may run, each with the check its whole argv must pass (raising
# ActionRefused). Action modules register theirs (``register_program``) next to the action
# that needs them; ``cat`` and ``tee`` are here, as the way to read and write files.
PROGRAMS: dict[str, ArgvCheck] = {}
# Files ``cat`` may read and ``tee`` may write: full-match patterns that action modules add
# with ``allow_files`` (``hosts.actions.sysfs`` adds its allow-list).
READABLE_FILES: list[re.Pattern] = []
WRITABLE_FILES: list[re.Pattern] = []


def register_program(name: str, check: ArgvCheck) -> None:
    """Let actions run ``name`` (a bare program name, found on the host's ``PATH``) when
    ``check(argv)`` accepts the whole argv."""
    if not _PROGRAM_RE.match(name):
        raise ValueError(f"not a program name: {name!r}")
    PROGRAMS[name] = check


def allow_files(patterns: Iterable[str], *, writable: bool) -> None:
    """Let ``cat`` read (and with ``writable``, ``tee`` write) the paths matching ``patterns``."""
    for pattern in patterns:
        compiled = re.compile(pattern)
        for rules in (READABLE_FILES, WRITABLE_FILES) if writable else (READABLE_FILES,):
            if compiled not in rules:
                rules.append(compiled)


def _file_argv(rules: list[re.Pattern], what: str) -> ArgvCheck:
    def check(argv: tuple[str, ...]) -> None:
        if len(argv) != 3 or argv[1] != "--":
            raise ActionRefused(f"{argv[0]} takes exactly: {argv[0]} -- <path>.")
        path = argv[2]
        if not path.startswith("/") or os.path.normpath(path) != path:
            raise ActionRefused(f"{path[:200]!r} is not a normalized absolute path.")
        if not any(rule.fullmatch(path) for rule in rules):
            raise ActionRefused(f"{path[:200]!r} is not a file host actions may {what}.")

    return check


register_program("cat", _file_argv(READABLE_FILES, "read"))
register_program("tee", _file_argv(WRITABLE_FILES, "write"))


class TaskLog(Protocol):
    """What the executor needs of a task: ``panel.taskrunner.TaskContext`` is one."""

    def log(self, message: str, level: str = "info") -> None: ...


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int | None  # None: the command was stopped at its timeout
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def validate_argv(argv: Any) -> tuple[str, ...]:
    """The argv as a tuple of words, or :class:`ActionRefused`: a list of strings (a single
    string would be a shell command line), no NUL or newline anywhere, bounded sizes, and a
    registered program named without a path whose own check accepts the rest."""
    if isinstance(argv, str | bytes) or not isinstance(argv, list | tuple):
        raise ActionRefused("A command is a list of arguments, never a shell string.")
    if not argv or len(argv) > MAX_ARGS:
        raise ActionRefused(f"A command has 1 to {MAX_ARGS} arguments.")
    words = []
    for word in argv:
        if not isinstance(word, str):
            raise ActionRefused(f"Command arguments are strings, not {type(word).__name__}.")
        if "\x00" in word or "\n" in word or "\r" in word:
            raise ActionRefused("A command argument may not hold NUL or line breaks.")
        if len(word) > MAX_ARG:
            raise ActionRefused(f"A command argument is at most {MAX_ARG} characters.")
        words.append(word)
    program = words[0]
    if not _PROGRAM_RE.match(program) or program not in PROGRAMS:
        raise ActionRefused(
            f"{program!r} is not a program host actions may run (allowed: "
            + ", ".join(sorted(PROGRAMS))
            + ")."
        )
    PROGRAMS[program](tuple(words))
    return tuple(words)


def _bounded(data: bytes) -> str:
    return data[:MAX_OUTPUT].decode("utf-8", errors="replace")


def _clip(text: str, limit: int = MAX_LOGGED) -> str:
    text = text.rstrip("\n")
    if len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def _run_process(
    argv: list[str], stdin: str | None, timeout: float, env: dict | None, shown: tuple[str, ...]
) -> CommandResult:
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            input=(stdin or "").encode(),
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return CommandResult(
            argv=shown,
            exit_code=None,
            stdout=_bounded(exc.stdout or b""),
            stderr=_bounded(exc.stderr or b""),
            duration=time.monotonic() - started,
            timed_out=True,
        )
    except OSError as exc:
        return CommandResult(
            argv=shown, exit_code=127, stderr=str(exc), duration=time.monotonic() - started
        )
    return CommandResult(
        argv=shown,
        exit_code=proc.returncode,
        stdout=_bounded(proc.stdout),
        stderr=_bounded(proc.stderr),
        duration=time.monotonic() - started,
    )


# --- transports ------------------------------------------------------------------------------


class Transport:
    """Runs one validated argv on a host."""

    label = ""

    def run(self, argv: tuple[str, ...], stdin: str | None, timeout: float) -> CommandResult:
        raise NotImplementedError


class LocalTransport(Transport):
    """This machine (``qemu:///system``): the worker runs on the hypervisor itself."""

    label = "local"

    def run(self, argv: tuple[str, ...], stdin: str | None, timeout: float) -> CommandResult:
        return _run_process(list(argv), stdin, timeout, LOCAL_ENV, argv)


@dataclass
class SshTransport(Transport):
    """A ``qemu+ssh://`` host, through OpenSSH trusting only the pinned host key."""

    user: str
    address: str
    port: int | None
    known_hosts: Path

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"ssh {self.user}@{self.address}" + (f":{self.port}" if self.port else "")

    def command(self, argv: tuple[str, ...], timeout: float) -> list[str]:
        """The local ssh argv that runs ``argv`` on the host. The host bounds the command too
        (coreutils ``timeout``): stopping the local ssh client would leave it running there."""
        remote = ("timeout", f"--kill-after={REMOTE_KILL_AFTER}", f"{timeout:g}", *argv)
        return [
            *ssh_options(self.known_hosts),
            "-T",
            "-p",
            str(self.port or 22),
            "-l",
            self.user,
            "--",
            self.address,
            shlex.join(remote),
        ]

    def run(self, argv: tuple[str, ...], stdin: str | None, timeout: float) -> CommandResult:
        if not Path(settings.PADDOCK["SSH_KEY"]).exists():
            ensure_client_key()
        # Locally, room for the connection and the host's own kill on top of the command's time.
        connect = float(settings.PADDOCK.get("CONNECT_TIMEOUT", 15))
        local_limit = timeout + connect + REMOTE_KILL_AFTER + 2
        result = _run_process(self.command(argv, timeout), stdin, local_limit, None, argv)
        if result.exit_code == 255:
            # ssh's own failure (refused key, no route, authentication): the command never ran.
            reason = " ".join(result.stderr.replace("\r", "").strip().splitlines()[-2:])
            raise HostUnreachable(f"{self.label}: {reason or 'ssh failed (exit 255)'}")
        if result.exit_code in (124, 137):
            # The host's timeout stopped it (124; 137 when it had to kill).
            result = replace(result, exit_code=None, timed_out=True)
        return result


@dataclass
class SimulatedTransport(Transport):
    """A test-driver host: its files live under ``root``; only ``cat`` and ``tee`` run."""

    root: Path
    seed: dict[str, str] = field(default_factory=dict)
    label = "simulated"

    def path(self, path: str) -> Path:
        if not path.startswith("/") or os.path.normpath(path) != path:
            raise ActionRefused(f"{path!r} is not a normalized absolute path.")
        local = self.root / path.lstrip("/")
        root = os.path.realpath(self.root)
        if os.path.commonpath([os.path.realpath(local), root]) != root:
            raise ActionRefused(f"{path!r} leaves the simulated host.")
        if not local.exists() and path in self.seed:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(self.seed[path] + "\n")
        return local

    def run(self, argv: tuple[str, ...], stdin: str | None, timeout: float) -> CommandResult:
        started = time.monotonic()
        if len(argv) != 3 or argv[0] not in ("cat", "tee") or argv[1] != "--":
            raise ExecutorError(
                f"The simulated host only reads and writes its files; it cannot run "
                f"{shlex.join(argv)}."
            )
        local = self.path(argv[2])
        if not local.is_file():
            return CommandResult(
                argv, 1, stderr=f"{argv[0]}: {argv[2]}: No such file or directory\n"
            )
        if argv[0] == "cat":
            return CommandResult(argv, 0, local.read_text(), duration=time.monotonic() - started)
        value = (stdin or "").strip()
        old = local.read_text()
        # sysfs choice files read back as "always [madvise] never": writing a word selects it.
        words = old.split()
        if any(w.startswith("[") for w in words) and value in [w.strip("[]") for w in words]:
            new = " ".join(f"[{w}]" if w == value else w for w in (w.strip("[]") for w in words))
        else:
            new = value
        local.write_text(new + "\n")
        return CommandResult(argv, 0, stdin or "", duration=time.monotonic() - started)


def _simulated_seed(host: Host) -> dict[str, str]:
    """What a freshly booted simulated host reads: no hugepages reserved, THP on madvise, KSM
    off, the kernel's default halt polling; one node folder per NUMA cell of its topology."""
    seed = {
        "/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never",
        "/sys/kernel/mm/transparent_hugepage/defrag": "always defer defer+madvise [madvise] never",
        "/sys/kernel/mm/ksm/run": "0",
        "/sys/module/kvm/parameters/halt_poll_ns": "200000",
        # systemd's dev-hugepages.mount, a kernel without boot-time tuning, two movable IRQs
        "/proc/mounts": "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0",
        "/proc/cmdline": "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro quiet",
        "/proc/interrupts": "           CPU0\n 24:          0   PCI-MSI  eth0\n 25:          0   PCI-MSI  nvme0q0",
        "/proc/irq/24/smp_affinity_list": "0-31",
        "/proc/irq/25/smp_affinity_list": "0-31",
    }
    sizes = {2048, 1048576}
    cells = host.numa_cells or [{"id": 0}]
    for cell in cells:
        for page in cell.get("hugepages") or []:
            sizes.add(int(page.get("size_kib") or 0))
    sizes.discard(4)
    for size in sorted(s for s in sizes if s > 0):
        base = f"/sys/kernel/mm/hugepages/hugepages-{size}kB"
        seed[f"{base}/nr_hugepages"] = "0"
        seed[f"{base}/free_hugepages"] = "0"
        for cell in cells:
            node = f"/sys/devices/system/node/node{int(cell.get('id', 0))}"
            seed[f"{node}/hugepages/hugepages-{size}kB/nr_hugepages"] = "0"
            seed[f"{node}/hugepages/hugepages-{size}kB/free_hugepages"] = "0"
    return seed


def transport_for(host: Host) -> Transport:
    """The transport for ``host``'s URI (see the module docstring)."""
    try:
        parsed = parse_uri(host.uri)
    except InvalidURI as exc:
        raise ActionRefused(f"Host {host.name}: {exc}") from None
    if parsed.kind == "local":
        return LocalTransport()
    if parsed.kind == "ssh":
        if not host.ssh_host_key:
            raise HostUnreachable(f"Host {host.name} has no pinned SSH host key.")
        try:
            known = known_hosts_file(host.name, parsed.address, parsed.port, host.ssh_host_key)
        except HostConnectError as exc:
            raise HostUnreachable(f"Host {host.name}: {exc}") from None
        return SshTransport(parsed.user, parsed.address, parsed.port, known)
    if host.pk is None:
        raise ActionRefused("A simulated host needs to be saved before actions run on it.")
    root = Path(settings.DATA_DIR) / "simhosts" / str(int(host.pk))
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SimulatedTransport(root, _simulated_seed(host))


# --- the executor ----------------------------------------------------------------------------


class Executor:
    """Runs commands and actions on one host, logging each command."""

    def __init__(
        self,
        transport: Transport,
        *,
        name: str = "",
        log: TaskLog | None = None,
        timeout: float | None = None,
    ):
        self.transport = transport
        self.name = name or transport.label
        self.task_log = log
        self.timeout = float(
            timeout or settings.PADDOCK.get("HOST_ACTION_TIMEOUT", DEFAULT_TIMEOUT)
        )

    @property
    def simulated(self) -> bool:
        return isinstance(self.transport, SimulatedTransport)

    # -- logging ----------------------------------------------------------------------------

    def log(self, message: str, level: str = "info") -> None:
        """To the task log inside a task, to the logger otherwise."""
        if self.task_log is not None:
            self.task_log.log(message, level)
        else:
            logger.log(logging.WARNING if level != "info" else logging.INFO, "%s", message)

    def _log_command(self, result: CommandResult, stdin: str | None, secret: bool) -> None:
        line = f"{self.name} ({self.transport.label}): $ {shlex.join(result.argv)}"
        if stdin is not None:
            line += "  [stdin: " + ("hidden" if secret else repr(stdin.strip())) + "]"
        lines = [line]
        if result.timed_out:
            lines.append(f"stopped after {result.duration:.1f} s (timeout)")
        else:
            lines.append(f"exit {result.exit_code} in {result.duration:.2f} s")
        if result.stdout.strip() and not secret:
            lines.append("stdout: " + _clip(result.stdout))
        if result.stderr.strip():
            lines.append("stderr: " + _clip(result.stderr))
        self.log("\n".join(lines), "info" if result.ok else "warning")

    # -- commands ---------------------------------------------------------------------------

    def run(
        self,
        argv: list[str] | tuple[str, ...],
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        secret: bool = False,
    ) -> CommandResult:
        """Run ``argv`` on the host. Raises :class:`CommandFailed` on a non-zero exit or a
        timeout when ``check``; ``secret`` keeps stdin and stdout out of the log."""
        words = validate_argv(argv)
        if stdin is not None and ("\x00" in stdin or len(stdin) > MAX_OUTPUT):
            raise ActionRefused("A command's input may not hold NUL and is at most 64 KiB.")
        limit = float(timeout or self.timeout)
        try:
            result = self.transport.run(words, stdin, limit)
        except ExecutorError as exc:
            self.log(f"{self.name}: $ {shlex.join(words)}\nnot run: {exc}", "error")
            raise
        self._log_command(result, stdin, secret)
        if check and not result.ok:
            if result.timed_out:
                why = f"timed out after {limit:g} s"
            else:
                why = f"exit {result.exit_code}"
            detail = _clip(result.stderr.strip(), 400)
            raise CommandFailed(
                f"{self.name}: {shlex.join(words)} failed ({why})"
                + (f": {detail}" if detail else ""),
                result,
            )
        return result

    def read_file(self, path: str) -> str:
        """The content of a file on the host (``cat -- path``)."""
        return self.run(["cat", "--", path]).stdout

    def write_file(self, path: str, value: str, *, secret: bool = False) -> None:
        """Replace a file's content on the host with ``value`` (``tee -- path``, the value on
        stdin): the way to write sysfs and procfs files without a shell redirection."""
        self.run(
            ["tee", "--", path],
            stdin=value if value.endswith("\n") else value + "\n",
            secret=secret,
        )

    # -- actions ----------------------------------------------------------------------------

    def check(self, action: Action) -> Any:
        """The action's current value on the host."""
        return action.check(self)

    def apply(self, action: Action) -> ActionResult:
        """Make the action's value hold; nothing runs but a check when it already does."""
        return action.apply(self)

    def revert(self, result: ActionResult) -> ActionResult:
        """Undo what ``result`` (from :meth:`apply`) changed; nothing when it changed nothing."""
        return result.action.revert(self, result)

    def apply_all(self, actions: list[Action]) -> list[ActionResult]:
        """Apply in order; when one fails, revert those already applied (last first) and raise
        the failure."""
        done: list[ActionResult] = []
        for action in actions:
            try:
                done.append(self.apply(action))
            except ExecutorError:
                for result in reversed(done):
                    try:
                        self.revert(result)
                    except ExecutorError as exc:
                        self.log(f"Could not revert {result.action.describe()}: {exc}", "error")
                raise
        return done


def executor_for(
    host: Host, *, log: TaskLog | None = None, timeout: float | None = None
) -> Executor:
    """The executor for ``host``: over SSH, locally or simulated, by its URI. Pass the task's
    context as ``log`` inside a task so every command lands in the task log."""
    return Executor(transport_for(host), name=host.name, log=log, timeout=timeout)
