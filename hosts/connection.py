"""The one door to a hypervisor: URI validation, libvirt connections, SSH host-key pinning.

Everything above this module talks in inventory terms; only this module (and the sync and task
code that receives a connection from it) knows libvirt. Connections are cached per process and
URI: libvirt's test driver keeps its simulated state per connection, so one process must keep
using one connection per test-driver host for that host's state to stay consistent.
"""

from __future__ import annotations

import logging
import re
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
            return HostURI(raw=uri, kind="test", path="/default")
        if not _TEST_PATH_RE.match(parts.path) or ".." in parts.path.split("/"):
            raise InvalidURI(
                "A test-driver URI needs an absolute node file path: test:///path.xml."
            )
        return HostURI(raw=uri, kind="test", path=parts.path)
    if scheme == "qemu":
        if parts.netloc:
            raise InvalidURI("A remote host needs the ssh transport: qemu+ssh://user@host/system.")
        if parts.path not in ("/system", "/session"):
            raise InvalidURI("A local QEMU URI is qemu:///system or qemu:///session.")
        return HostURI(raw=uri, kind="local", path=parts.path)
    if scheme == "qemu+ssh":
        if parts.path != "/system":
            raise InvalidURI("A remote QEMU URI must end in /system.")
        address = parts.hostname or ""
        if not address or not (_HOSTNAME_RE.match(address) or _IPV4_RE.match(address)):
            raise InvalidURI("The URI needs a valid host name or IPv4 address.")
        user = parts.username or "root"
        if not _USER_RE.match(user) or parts.password:
            raise InvalidURI("The SSH user name is not valid (and passwords are not accepted).")
        return HostURI(raw=uri, kind="ssh", path="/system", user=user, address=address, port=port)
    raise InvalidURI(
        f"Unsupported scheme {scheme!r}: use test:///path.xml, qemu:///system or "
        "qemu+ssh://user@host[:port]/system."
    )


# --- SSH host keys --------------------------------------------------------------------------

_KEYTYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")


def ssh_dir() -> Path:
    path = Path(settings.PADDOCK["SSH_KEY"]).parent
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _known_hosts_host(address: str, port: int | None) -> str:
    return address if not port or port == 22 else f"[{address}]:{port}"


def scan_host_key(address: str, port: int | None, timeout: int = 5) -> str:
    """The host's SSH public key (``type base64``), as offered now: the key to pin."""
    cmd = ["ssh-keyscan", "-T", str(timeout), "-t", ",".join(_KEYTYPES)]
    if port:
        cmd += ["-p", str(port)]
    cmd.append(address)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostConnectError(f"Could not read the SSH host key of {address}: {exc}") from None
    keys = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#") and fields[1] in _KEYTYPES:
            keys[fields[1]] = f"{fields[1]} {fields[2]}"
    for keytype in _KEYTYPES:
        if keytype in keys:
            return keys[keytype]
    raise HostConnectError(f"{address} offered no SSH host key (is sshd listening there?).")


def known_hosts_file(host_name: str, address: str, port: int | None, key: str) -> Path:
    """Write the pinned key where libvirt's libssh transport verifies it on every connection."""
    path = ssh_dir() / f"known_hosts.{host_name}"
    path.write_text(f"{_known_hosts_host(address, port)} {key}\n")
    path.chmod(0o600)
    return path


def effective_uri(host) -> str:
    """The URI libvirt is given: remote hosts go through libssh with the pinned known_hosts."""
    parsed = parse_uri(host.uri)
    if parsed.kind != "ssh":
        return parsed.raw
    if not host.ssh_host_key:
        raise HostConnectError("The host has no pinned SSH host key.")
    known_hosts = known_hosts_file(host.name, parsed.address, parsed.port, host.ssh_host_key)
    netloc = f"{parsed.user}@{parsed.address}" + (f":{parsed.port}" if parsed.port else "")
    query = urlencode(
        {
            "keyfile": settings.PADDOCK["SSH_KEY"],
            "known_hosts": str(known_hosts),
            # "normal" refuses a changed key and, with nobody to ask, an unknown one.
            "known_hosts_verify": "normal",
            "sshauth": "privkey",
            "no_tty": "1",
        }
    )
    return f"qemu+libssh://{netloc}/system?{query}"


# --- Connections ----------------------------------------------------------------------------

_cache: dict[str, libvirt.virConnect] = {}
_cache_lock = threading.Lock()


def _open(uri: str) -> libvirt.virConnect:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HostConnectError(exc.get_error_message() or str(exc)) from None
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


def libvirt_error_message(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)
