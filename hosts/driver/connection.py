"""The one door to a hypervisor: URI validation, libvirt connections, SSH host-key pinning.

Everything above this module talks in inventory terms; only ``hosts/driver/`` knows libvirt.
Connections are cached per process and URI: libvirt's test driver keeps its simulated state per
connection, so one process must keep using one connection per test-driver host for that host's
state to stay consistent.

Every call on a host has a deadline. ``get_connection(host)`` returns a :class:`Guarded`
connection: each of its methods, and those of the domains, pools, volumes and networks it
returns, runs in a call thread (``hosts.driver.deadline``) and is given up after
``PADDOCK["LIBVIRT_CALL_SECONDS"]`` (30 s; ``LIBVIRT_LONG_CALL_SECONDS`` for the calls in
:data:`LONG_CALLS`). A call that is given up raises :class:`HostCallTimeout` naming the call; the
connection is closed and dropped from the cache, so the next ``get_connection`` opens a new
one. Opening a connection has the same deadline. libvirt errors arrive as :class:`DriverError`
(a ``libvirtError``). The test driver answers in-process and never hangs: its calls run in the
caller's thread. ``.raw`` gives the libvirt object for streams, event callbacks and migration.
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

from . import deadline
from .errors import (  # noqa: F401  (clean_error_text and libvirt_error_message: the old home)
    DriverError,
    HostCallTimeout,
    HostConnectError,
    clean_error_text,
    libvirt_error_message,
)
from .events import ensure_event_loop

logger = logging.getLogger(__name__)

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_TEST_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")


class InvalidURI(ValueError):
    """The URI is not one Paddock can manage; the message says why."""


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

# Calls that may rightly last longer than a call's deadline: a full copy, a snapshot with the
# memory state, save and restore, block jobs started synchronously, migration.
LONG_CALLS = frozenset(
    {
        "createXMLFrom",
        "snapshotCreateXML",
        "revertToSnapshot",
        "save",
        "saveFlags",
        "managedSave",
        "restore",
        "restoreFlags",
        "coreDump",
        "coreDumpWithFormat",
        "wipe",
        "wipePattern",
        "migrate",
        "migrate2",
        "migrate3",
        "migrateToURI",
        "migrateToURI2",
        "migrateToURI3",
    }
)
# Methods answered by the bindings or the client library without asking the host.
_LOCAL_CALLS = frozenset(
    {"name", "UUID", "UUIDString", "ID", "key", "getName", "connect", "isAlive", "c_pointer"}
)
_OBJECT_TYPES = tuple(
    getattr(libvirt, name)
    for name in (
        "virConnect",
        "virDomain",
        "virDomainSnapshot",
        "virDomainCheckpoint",
        "virStoragePool",
        "virStorageVol",
        "virNetwork",
        "virNetworkPort",
        "virInterface",
        "virNodeDevice",
        "virNWFilter",
        "virNWFilterBinding",
        "virSecret",
    )
    if hasattr(libvirt, name)
)


def _seconds(name: str, default: float) -> float | None:
    value = float(settings.PADDOCK.get(name, default))
    return value if value > 0 else None  # 0: no deadline


def call_seconds() -> float | None:
    """The deadline of one call on a host (``PADDOCK["LIBVIRT_CALL_SECONDS"]``, 30 s; 0 for
    none)."""
    return _seconds("LIBVIRT_CALL_SECONDS", 30)


def long_call_seconds() -> float | None:
    """The deadline of a call in :data:`LONG_CALLS` (``PADDOCK["LIBVIRT_LONG_CALL_SECONDS"]``,
    6 h; 0 for none)."""
    return _seconds("LIBVIRT_LONG_CALL_SECONDS", 6 * 3600)


class _Guard:
    """The deadline state shared by a connection and every object reached through it.

    A connection whose call was given up is not closed while that call is still blocked in it:
    closing frees what the blocked call goes on using when the host finally answers (libvirt 9
    then warns "is not a virObjectLockable instance", or crashes). It is dropped from the cache
    at once, refuses new calls, and is closed when its last call returns (the host answered, or
    keepalive or SSH found the peer dead).
    """

    __slots__ = ("bounded", "closed", "conn", "gave_up", "inflight", "label", "lock", "uri")

    def __init__(self, conn: libvirt.virConnect, uri: str, label: str, bounded: bool) -> None:
        self.conn = conn
        self.uri = uri
        self.label = label
        self.bounded = bounded
        self.gave_up: HostCallTimeout | None = None
        self.inflight = 0
        self.closed = False
        self.lock = threading.Lock()

    def call(self, fn, name: str, args: tuple, kwargs: dict):
        if self.gave_up is not None:
            raise HostCallTimeout(self.gave_up.what, self.gave_up.seconds, self.label)
        args = tuple(_unwrap(a) for a in args)
        if kwargs:
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        seconds = None
        if self.bounded and name not in _LOCAL_CALLS:
            seconds = long_call_seconds() if name in LONG_CALLS else call_seconds()
        try:
            if seconds is None:
                result = fn(*args, **kwargs)
            else:
                with self.lock:
                    self.inflight += 1
                result = deadline.run(self._tracked, fn, args, kwargs, seconds=seconds, what=name)
        except deadline.CallTimeout:
            self.give_up(name, seconds)
            raise HostCallTimeout(name, seconds, self.label) from None
        except libvirt.libvirtError as exc:
            raise DriverError.from_libvirt(exc) from None
        return self.wrap(result)

    def _tracked(self, fn, args: tuple, kwargs: dict):
        try:
            return fn(*args, **kwargs)
        finally:
            with self.lock:
                self.inflight -= 1
                close = self._should_close()
            if close:
                _close_quietly(self.conn)

    def _should_close(self) -> bool:
        if self.gave_up is None or self.inflight or self.closed:
            return False
        self.closed = True
        return True

    def give_up(self, what: str, seconds: float) -> None:
        """The host did not answer: forget the connection; close it once no call is in it."""
        with self.lock:
            if self.gave_up is None:
                self.gave_up = HostCallTimeout(what, seconds, self.label)
            close = self._should_close()
        logger.warning("%s: %s", self.uri, self.gave_up)
        with _cache_lock:
            cached = _cache.get(self.uri)
            if cached is not None and cached.raw is self.conn:
                _cache.pop(self.uri, None)
        if close:
            _close_quietly(self.conn)

    def wrap(self, value):
        if isinstance(value, _OBJECT_TYPES):
            return Guarded(value, self)
        if isinstance(value, list):
            return [self.wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.wrap(v) for v in value)
        return value


class Guarded:
    """A libvirt object (connection, domain, pool, volume, network, ...) whose methods run
    under the host call deadline, raise :class:`DriverError` instead of ``libvirtError``, and
    return guarded objects in turn. Arguments that are guarded objects are passed on raw.

    ``.raw`` is the libvirt object itself, for what needs the real one: streams and their
    callbacks, event registration from an event loop, migration (no deadline fits it).
    ``newStream`` returns a raw ``virStream``.
    """

    __slots__ = ("_guard", "_obj")

    def __init__(self, obj, guard: _Guard) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_guard", guard)

    @property
    def raw(self):
        return self._obj

    def __getattr__(self, name: str):
        attr = getattr(self._obj, name)
        if name.startswith("_") or not callable(attr):
            return attr
        guard = self._guard

        def call(*args, **kwargs):
            return guard.call(attr, name, args, kwargs)

        call.__name__ = name
        return call

    def __setattr__(self, name: str, value) -> None:
        setattr(self._obj, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._obj, name)

    def __eq__(self, other) -> bool:
        return self._obj == _unwrap(other)

    def __hash__(self) -> int:
        return hash(self._obj)

    def __repr__(self) -> str:
        return f"<Guarded {self._obj!r}>"


def _unwrap(value):
    if isinstance(value, Guarded):
        return value.raw
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def call_deadline(obj) -> float | None:
    """The deadline calls reached through ``obj`` have now (None: none, e.g. the test driver or
    a raw libvirt object): for calls made on raw objects such as streams."""
    if isinstance(obj, Guarded) and obj._guard.bounded:
        return call_seconds()
    return None


def give_up(obj, what: str, seconds: float | None) -> None:
    """Treat the connection behind ``obj`` as silent after ``what`` (a call on a raw object,
    such as a stream, outlived its deadline): dropped from the cache, later calls refused."""
    if isinstance(obj, Guarded) and obj._guard.bounded:
        obj._guard.give_up(what, seconds or 0)


def raw(obj):
    """The libvirt object behind a guarded one (or ``obj`` itself)."""
    return obj.raw if isinstance(obj, Guarded) else obj


def guarded(conn, label: str = "") -> Guarded:
    """A connection whose calls raise :class:`DriverError`; one that is guarded already is
    returned as it is. A raw ``virConnect`` handed in (by a test, say) gets no deadline."""
    if conn is None or isinstance(conn, Guarded):
        return conn
    return Guarded(conn, _Guard(conn, "", label, bounded=False))


_cache: dict[str, Guarded] = {}
_cache_lock = threading.Lock()


def _close_quietly(conn: libvirt.virConnect) -> None:
    """Close a connection in a call thread: closing a remote one asks the host, which may not
    answer either."""

    def close() -> None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    try:
        deadline.run(close, seconds=1, what="close")
    except deadline.CallTimeout:
        logger.debug("closing a connection that does not answer goes on in the background")


def _open_raw(uri: str, abandoned: threading.Event) -> libvirt.virConnect | None:
    conn = libvirt.open(uri)
    if abandoned.is_set():  # the caller gave up meanwhile: nobody will close it
        _close_quietly(conn)
        return None
    return conn


def _open(uri: str, label: str = "") -> Guarded:
    bounded = not uri.startswith("test:")
    seconds = call_seconds() if bounded else None
    if bounded:
        # Keepalive needs libvirt's event loop running in this process before the open.
        ensure_event_loop()
    abandoned = threading.Event()
    try:
        conn = deadline.run(_open_raw, uri, abandoned, seconds=seconds, what="open")
    except deadline.CallTimeout:
        abandoned.set()
        raise HostCallTimeout("open", seconds, label) from None
    except libvirt.libvirtError as exc:
        raise HostConnectError(libvirt_error_message(exc)) from None
    if conn is None:  # pragma: no cover - old bindings returned None
        raise HostConnectError(f"libvirt could not open {uri}")
    wrapped = Guarded(conn, _Guard(conn, uri, label, bounded))
    if bounded:
        try:
            # Detect a dead peer within ~30 s instead of waiting on TCP.
            wrapped.setKeepAlive(5, 6)
        except HostCallTimeout:
            raise
        except DriverError:
            logger.debug("keepalive not supported for %s", uri)
    return wrapped


def get_connection(host) -> Guarded:
    """A live connection to the host, reused within this process, reopened when it died or
    did not answer a call in time. Its calls have deadlines (see :class:`Guarded`)."""
    uri = effective_uri(host)
    label = getattr(host, "name", "") or ""
    with _cache_lock:
        conn = _cache.get(uri)
        if conn is not None:
            try:
                if conn.raw.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            _cache.pop(uri, None)
    # Opened outside the lock: a host that does not answer must not hold up the others.
    conn = _open(uri, label)
    with _cache_lock:
        current = _cache.get(uri)
        if current is not None:
            extra, conn = conn, current  # another thread opened it meanwhile: use that one
        else:
            _cache[uri] = conn
            extra = None
    if extra is not None:
        _close_quietly(extra.raw)
    return conn


def open_connection(host) -> Guarded:
    """A new connection of the caller's own (not the cached one: a watcher's or a console's,
    closed by its owner with ``close_connection``), with the same deadlines and keepalive."""
    return _open(effective_uri(host), getattr(host, "name", "") or "")


def close_connection(conn) -> None:
    """Close a connection from :func:`open_connection` without waiting on a silent host."""
    _close_quietly(raw(conn))


def drop_connection(host) -> None:
    try:
        uri = effective_uri(host)
    except (InvalidURI, HostConnectError):
        return
    with _cache_lock:
        conn = _cache.pop(uri, None)
    if conn is not None:
        _close_quietly(conn.raw)


def close_all() -> None:
    with _cache_lock:
        conns = list(_cache.values())
        _cache.clear()
    for conn in conns:
        _close_quietly(conn.raw)


def answers(uri: str) -> bool:
    """Whether a libvirt daemon answers at ``uri`` (opened and closed at once, with a
    deadline)."""
    try:
        conn = _open(uri)
    except HostConnectError:
        return False
    _close_quietly(conn.raw)
    return True
