"""A private sshd on loopback for integration tests, and the pytest fixtures around it.

The daemon is the system's own ``sshd`` binary with a config, host key, authorized_keys and pid
file of its own in a temporary directory; it listens on 127.0.0.1 on a free port and lets in
only the test's client key. It is stopped by its process id, never by name.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
LISTEN = "127.0.0.1"
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: str  # "type base64", the form Paddock pins and authorized_keys accepts

    @property
    def public_path(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")


def generate_key(path: Path, comment: str = "paddock-test") -> KeyPair:
    """A fresh ed25519 key pair without a passphrase at ``path`` (and ``path.pub``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    fields = path.with_name(path.name + ".pub").read_text().split()
    return KeyPair(private=path, public=f"{fields[0]} {fields[1]}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN, 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing paren.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class PrivateSshd:
    """One sshd process: start, stop, and restart on the same port with a new host key."""

    def __init__(self, workdir: Path, authorized_key: str, port: int | None = None):
        if not SSHD.exists():
            pytest.fail(
                f"{SSHD} is missing: the SSH integration tests need openssh-server "
                "(the setup script installs it).",
                pytrace=False,
            )
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.authorized_keys = workdir / "authorized_keys"
        self.authorized_keys.write_text(authorized_key.strip() + "\n")
        self.config = workdir / "sshd_config"
        self.pid_file = workdir / "sshd.pid"
        self.log_path = workdir / "sshd.log"
        self.host_key: KeyPair | None = None
        self._generation = 0
        self.proc: subprocess.Popen | None = None
        self._new_host_key()

    # -- what tests read -------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The Paddock (``qemu+ssh``) URI of this sshd's machine, i.e. this host's libvirtd."""
        return f"qemu+ssh://{self.user}@{LISTEN}:{self.port}/system"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def accepted_logins(self) -> int:
        """How many times a client authenticated (sshd logs "Accepted publickey for ...")."""
        return self.log().count("Accepted publickey for ")

    def authorize(self, public_key: str) -> None:
        with self.authorized_keys.open("a") as fh:
            fh.write(public_key.strip() + "\n")

    # -- lifecycle ---------------------------------------------------------------------------

    def _new_host_key(self) -> None:
        self._generation += 1
        self.host_key = generate_key(
            self.workdir / f"ssh_host_ed25519_key.{self._generation}", comment="paddock-test-host"
        )

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {LISTEN}",
            f'HostKey "{self.host_key.private}"',
            f'PidFile "{self.pid_file}"',
            f'AuthorizedKeysFile "{self.authorized_keys}"',
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "LogLevel INFO",
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        if os.geteuid() == 0:
            # Privilege separation directory; a system sshd that never ran leaves none.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            self._write_config()
            check = subprocess.run(
                [str(SSHD), "-t", "-f", str(self.config)],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if check.returncode != 0:
                pytest.fail(f"sshd rejected its test config: {check.stderr.strip()}", pytrace=False)
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(SSHD), "-D", "-e", "-f", str(self.config)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                )  # fmt: skip
            if self._wait_listening(offset):
                return
            self.stop()
        pytest.fail(
            f"sshd did not start on {LISTEN}:{self.port}:\n{self.log()[-2000:]}", pytrace=False
        )

    def _wait_listening(self, offset: int) -> bool:
        marker = f"Server listening on {LISTEN} port {self.port}."
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                if marker in fh.read().decode(errors="replace"):
                    return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop this sshd (by its process id) and the sessions it is serving."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # The sessions first: a stopped listener would leave them running.
            for child in _children(proc.pid):
                try:
                    os.kill(child, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        else:
            proc.wait()

    def replace_host_key(self) -> KeyPair:
        """Restart on the same port with a newly generated host key (a reinstalled host)."""
        old_pid = self.proc.pid if self.proc else None
        self.stop()
        if old_pid is not None:
            _wait_gone(old_pid, 5)
        self._new_host_key()
        self.start()
        return self.host_key


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory) -> KeyPair:
    """The client key the test sshd lets in; Paddock's SSH key in these tests."""
    return generate_key(tmp_path_factory.mktemp("ssh-client") / "id_ed25519")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, ssh_client_key) -> PrivateSshd:
    """One sshd for the session, accepting ``ssh_client_key``."""
    server = PrivateSshd(tmp_path_factory.mktemp("sshd"), ssh_client_key.public)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_sshd(tmp_path, ssh_client_key):
    """Start an sshd of the test's own (one it may restart or re-key); stopped at teardown."""
    servers: list[PrivateSshd] = []

    def make(authorized_key: str | None = None) -> PrivateSshd:
        key = ssh_client_key.public if authorized_key is None else authorized_key
        server = PrivateSshd(tmp_path / f"sshd-{len(servers) + 1}", key)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def paddock_ssh_key(settings, tmp_path, ssh_client_key) -> Path:
    """Point Paddock's data dir and SSH key into the test's tmp dir (a copy of the client key),
    so the per-host known_hosts files land there too."""
    data_dir = tmp_path / "data"
    key = data_dir / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, mode=0o700)
    shutil.copyfile(ssh_client_key.private, key)
    key.chmod(0o600)
    shutil.copyfile(ssh_client_key.public_path, key.with_name(key.name + ".pub"))
    settings.DATA_DIR = data_dir
    settings.PADDOCK = {**settings.PADDOCK, "SSH_KEY": str(key)}
    return key
