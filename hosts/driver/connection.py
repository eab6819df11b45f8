"""The one door to a hypervisor: URI validation, libvirt connections, SSH host-key pinning.

Everything above this module talks in inventory terms; only this module (and the sync and task
code that receives a connection from it) knows libvirt. Connections are cached per process and
URI: libvirt's test driver keeps its simulated state per connection, so one process must keep
using one connection per test-driver host for that host's state to stay consistent.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import libvirt
from django.conf import settings

logger = logging.getLogger(__name__)

# libvirt prints every error to stderr unless a handler is registered; errors reach us as
# exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_TEST_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")


class InvalidURI(ValueError):
    """The URI is not one Paddock can manage; the message says why."""


class HostConnectError(Exception):
    """The host did not answer or refused; the message is libvirt's."""


@dataclass(frozen=True)
class HostURI:
    """A validated libvirt URI: ``test:///path``, ``qemu:///system`` or ``qemu+ssh://u@h:p/system``."""

    raw: str
    kind: str  # "test", "local" or "ssh"
    path: str
    user: str = ""
    address: str = ""
    port: int | None = None

    @property
    def simulated(self) -> bool:
        return self.kind == "test"


def _test_node_dirs() -> list[str]:
    return [os.path.realpath(d) for d in settings.PADDOCK.get("TEST_NODE_DIRS", [])]


def _in_test_node_dirs(path: str) -> bool:
    """The node file, links resolved, lies inside one of the configured folders."""
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, d]) == d for d in _test_node_dirs())


def parse_uri(uri: str) -> HostURI:
    uri = (uri or "").strip()
    if not uri:
        raise InvalidURI("A libvirt URI is required.")
    if any(ch.isspace() for ch in uri) or any(ch in uri for ch in "<>\"'`;&|$\\"):
        raise InvalidURI("The URI contains characters that are not allowed.")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"Malformed URI: {exc}.") from None
    if parts.query or parts.fragment:
        raise InvalidURI(
            "Query parameters are not accepted; Paddock sets connection options itself."
        )
    scheme = parts.scheme
    if scheme == "test":
        if parts.netloc:
            raise InvalidURI("A test-driver URI has no host part: use test:///absolute/path.xml.")
        if parts.path == "/default":
            return HostURI(raw="test:///default", kind="test", path="/default")
        if not _TEST_PATH_RE.match(parts.path) or ".." in parts.path.split("/"):
            raise InvalidURI(
                "A test-driver URI needs an absolute node file path: test:///path.xml."
            )
        if not _in_test_node_dirs(parts.path):
            raise InvalidURI(
                "Test-driver node files are read only from the folders in "
                "PADDOCK_TEST_NODE_DIRS: " + ", ".join(_test_node_dirs()) + "."
            )
        return HostURI(raw=f"test://{parts.path}", kind="test", path=parts.path)
    if scheme == "qemu":
        if parts.netloc:
            raise InvalidURI("A remote host needs the ssh transport: qemu+ssh://user@host/system.")
        if parts.path not in ("/system", "/session"):
            raise InvalidURI("A local QEMU URI is qemu:///system or qemu:///session.")
        return HostURI(raw=f"qemu://{parts.path}", kind="local", path=parts.path)
    if scheme == "qemu+ssh":
        if parts.path != "/system":
            raise InvalidURI("A remote QEMU URI must end in /system.")
        address = parts.hostname or ""
        if not address or not (_HOSTNAME_RE.match(address) or _IPV4_RE.match(address)):
            raise InvalidURI("The URI needs a valid host name or IPv4 address.")
        user = parts.username or "root"
        if not _USER_RE.match(user) or parts.password:
            raise InvalidURI("The SSH user name is not valid (and passwords are not accepted).")
        # Scheme and host name are case-insensitive: one host has one spelling.
        address = address.lower()
        netloc = (f"{parts.username}@" if parts.username else "") + address
        netloc += f":{port}" if port else ""
        raw = f"qemu+ssh://{netloc}/system"
        return HostURI(raw=raw, kind="ssh", path="/system", user=user, address=address, port=port)
    raise InvalidURI(
        f"Unsupported scheme {scheme!r}: use test:///path.xml, qemu:///system or "
        "qemu+ssh://user@host[:port]/system."
    )


# --- SSH host keys --------------------------------------------------------------------------

_KEYTYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")
_KEY_B64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_client_key_lock = threading.Lock()
_ssh_files_lock = threading.Lock()


def ssh_dir() -> Path:
    """The directory of Paddock's SSH client key and the per-host known_hosts and ssh files."""
    path = Path(settings.PADDOCK["SSH_KEY"]).parent
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _known_hosts_host(address: str, port: int | None) -> str:
    return address if not port or port == 22 else f"[{address}]:{port}"


def _pinned_key(key: str) -> str:
    """``type base64`` of a stored key, refusing anything that is not exactly one public key
    (a known_hosts file built from it must hold the pinned key and nothing else)."""
    fields = (key or "").split()
    if len(fields) < 2 or fields[0] not in _KEYTYPES or not _KEY_B64_RE.match(fields[1]):
        raise HostConnectError("The pinned SSH host key is not a valid public key.")
    return f"{fields[0]} {fields[1]}"


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_client_key() -> str:
    """Create Paddock's own SSH client key (ed25519, no passphrase) if it does not exist yet,
    and return its public half (``type base64 comment``) for the hosts' authorized_keys.

    Safe against concurrent callers in several processes: the private key is installed with a
    hard link, which fails when another process got there first, and the public half is always
    derived from whichever private key is in place.
    """
    path = Path(settings.PADDOCK["SSH_KEY"])
    pub = path.with_name(path.name + ".pub")
    with _client_key_lock:
        if path.exists() and pub.exists():
            return pub.read_text().strip()
        ssh_dir()
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
            for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
                stale.unlink(missing_ok=True)
            try:
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "paddock", "-f", str(tmp)],
                    capture_output=True, text=True, timeout=30, check=True, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass  # another process created it first: use that one
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", "") or exc
                raise HostConnectError(
                    f"Could not create Paddock's SSH key {path}: {detail}"
                ) from None
            finally:
                for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
                    stale.unlink(missing_ok=True)
        try:
            proc = subprocess.run(
                ["ssh-keygen", "-y", "-f", str(path)],
                capture_output=True, text=True, timeout=30, check=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise HostConnectError(f"Could not read Paddock's SSH key {path}: {detail}") from None
        public = proc.stdout.strip()
        if len(public.split()) == 2:
            public += " paddock"
        _atomic_write(pub, public + "\n", 0o644)
        return public


def scan_host_key(address: str, port: int | None, timeout: int = 5) -> str:
    """The host's SSH public key (``type base64``), as offered now: the key to pin."""
    target = f"{address}:{port or 22}"
    try:
        # ssh-keyscan says nothing about why it got no key: a plain TCP connect does.
        socket.create_connection((address, port or 22), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or exc.__class__.__name__
        raise HostConnectError(f"Could not reach SSH on {target}: {reason}.") from None
    cmd = ["ssh-keyscan", "-T", str(timeout), "-t", ",".join(_KEYTYPES)]
    if port:
        cmd += ["-p", str(port)]
    cmd += ["--", address]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout + 5, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostConnectError(f"Could not read the SSH host key of {target}: {exc}") from None
    keys = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#") and fields[1] in _KEYTYPES:
            keys[fields[1]] = f"{fields[1]} {fields[2]}"
    for keytype in _KEYTYPES:
        if keytype in keys:
            return keys[keytype]
    raise HostConnectError(f"{target} offered no SSH host key (is sshd listening there?).")


def _write_if_changed(path: Path, content: str, mode: int) -> Path:
    """Replace ``path`` atomically, and only when its content changes, so a connection being
    opened meanwhile never reads a partial file."""
    with _ssh_files_lock:
        try:
            if path.read_text() == content:
                return path
        except OSError:
            pass
        _atomic_write(path, content, mode)
    return path


def known_hosts_file(host_name: str, address: str, port: int | None, key: str) -> Path:
    """The host's own known_hosts file: its pinned key and nothing else."""
    content = f"{_known_hosts_host(address, port)} {_pinned_key(key)}\n"
    return _write_if_changed(ssh_dir() / f"known_hosts.{host_name}", content, 0o600)


def ssh_options(known_hosts: Path) -> list[str]:
    """``ssh`` and the options every SSH connection to a host uses: the pinned key only (no
    user or system known_hosts, no ssh_config), Paddock's own key only, never a prompt, a
    bounded connect time and dead-peer detection."""
    timeout = int(settings.PADDOCK.get("CONNECT_TIMEOUT", 15))
    options = {
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "BatchMode": "yes",
        "PreferredAuthentications": "publickey",
        "IdentitiesOnly": "yes",
        "IdentityFile": str(settings.PADDOCK["SSH_KEY"]),
        "IdentityAgent": "none",
        "ConnectTimeout": str(timeout),
        "ServerAliveInterval": "5",
        "ServerAliveCountMax": "3",
        "LogLevel": "ERROR",
    }
    argv = [shutil.which("ssh") or "ssh", "-F", "/dev/null"]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return argv


def ssh_wrapper(host_name: str, known_hosts: Path) -> Path:
    """An executable that runs ``ssh`` with :func:`ssh_options` for this host and passes its
    arguments on: libvirt's ``command=`` URI parameter names a program, not a command line.

    When a connection fails libvirt reports what ssh wrote to stderr, but only up to 1 KiB:
    past that (ssh's changed-key banner with a long known_hosts path) it says "Value too large
    for defined data type" instead. So only ssh's last two lines, the reason, are passed on.
    """
    script = (
        "#!/bin/sh\n"
        "{ " + shlex.join(ssh_options(known_hosts)) + ' "$@" 2>&1 1>&3 3>&- '
        "| tr -d '\\r' | tail -n 2 | cut -c 1-400 >&2; } 3>&1\n"
    )
    return _write_if_changed(ssh_dir() / f"ssh.{host_name}", script, 0o700)


def effective_uri(host) -> str:
    """The URI libvirt is given. A remote host goes through OpenSSH (``qemu+ssh``), run by a
    per-host wrapper that trusts only the key pinned for that host: on every connection ssh
    refuses a changed key ("Host key for ... has changed and you have requested strict
    checking. Host key verification failed.") and, with ``StrictHostKeyChecking=yes``, an
    unknown one.

    Not libvirt's libssh transport (``qemu+libssh``, ``known_hosts_verify=normal``), although it
    checks the key too: with libvirt 9.0 and libssh 0.10 a reply larger than about 4 KiB (the
    capabilities, most domain XML) stalls until the next keepalive tick, or forever without an
    event loop; and it also reads ~/.ssh/config and the system-wide known_hosts file.
    """
    parsed = parse_uri(host.uri)
    if parsed.kind != "ssh":
        return parsed.raw
    if not host.ssh_host_key:
        raise HostConnectError("The host has no pinned SSH host key.")
    known_hosts = known_hosts_file(host.name, parsed.address, parsed.port, host.ssh_host_key)
    if not Path(settings.PADDOCK["SSH_KEY"]).exists():
        ensure_client_key()  # a first start: the key to put in the hosts' authorized_keys
    wrapper = ssh_wrapper(host.name, known_hosts)
    netloc = f"{parsed.user}@{parsed.address}" + (f":{parsed.port}" if parsed.port else "")
    query = urlencode({"command": str(wrapper), "no_tty": "1"})
    return f"qemu+ssh://{netloc}/system?{query}"


# --- Connections ----------------------------------------------------------------------------

_cache: dict[str, libvirt.virConnect] = {}
_cache_lock = threading.Lock()


def _open(uri: str) -> libvirt.virConnect:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HostConnectError(libvirt_error_message(exc)) from None
    if conn is None:  # pragma: no cover - old bindings returned None
        raise HostConnectError(f"libvirt could not open {uri}")
    if not uri.startswith("test:"):
        try:
            # Detect a dead peer within ~30 s instead of waiting on TCP.
            conn.setKeepAlive(5, 6)
        except libvirt.libvirtError:
            logger.debug("keepalive not supported for %s", uri)
    return conn


def get_connection(host) -> libvirt.virConnect:
    """A live connection to the host, reused within this process, reopened when it died."""
    uri = effective_uri(host)
    with _cache_lock:
        conn = _cache.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            _cache.pop(uri, None)
        conn = _open(uri)
        _cache[uri] = conn
        return conn


def drop_connection(host) -> None:
    try:
        uri = effective_uri(host)
    except (InvalidURI, HostConnectError):
        return
    with _cache_lock:
        conn = _cache.pop(uri, None)
    if conn is not None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def close_all() -> None:
    with _cache_lock:
        conns = list(_cache.values())
        _cache.clear()
    for conn in conns:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def clean_error_text(message: str) -> str:
    """libvirt's message without the quoted input that XML parse errors carry.

    libxml2 reports a parse error as ``file:line: reason``, then the offending line of the input
    and a caret under it; that line is a file's contents (``/etc/shadow``'s first line, say) and
    must never reach a stored error.
    """
    lines = message.splitlines()
    kept = []
    for i, line in enumerate(lines):
        if line.strip() == "^" or (i + 1 < len(lines) and lines[i + 1].strip() == "^"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def libvirt_error_message(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return clean_error_text(exc.get_error_message() or str(exc))
    return str(exc)
