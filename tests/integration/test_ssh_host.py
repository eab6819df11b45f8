"""Hosts over SSH: the host key is pinned at the first sync and checked on every connection.

A private sshd on 127.0.0.1 fronts this machine's own libvirtd, so ``qemu+ssh://root@127.0.0.1:
<port>/system`` is a real remote host as far as Paddock and libvirt are concerned.
"""

from __future__ import annotations

import os
import time
import uuid

import libvirt
import pytest
from lxml import etree

from hosts import services
from hosts.choices import HostStatus
from hosts.driver.connection import drop_connection, effective_uri
from hosts.kvm import kvm_usable
from panel.choices import TaskState
from tests.integration import sshd as sshd_helpers
from vms.models import VirtualMachine

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

# The fixtures live in the helper module; naming them here registers them for this module.
ssh_client_key = sshd_helpers.ssh_client_key
sshd = sshd_helpers.sshd
make_sshd = sshd_helpers.make_sshd
paddock_ssh_key = sshd_helpers.paddock_ssh_key

LOCAL_URI = "qemu:///system"
FAST = 10.0  # seconds: a refused connection must fail well within this
KEY_REFUSED = "Host key verification failed"


@pytest.fixture
def local_domain():
    """A diskless domain defined (not started) on this machine's libvirtd; undefined after."""
    conn = libvirt.open(LOCAL_URI)
    name = f"paddocktest-ssh-{uuid.uuid4().hex[:8]}"
    usable_kvm = kvm_usable()
    root = etree.Element("domain", type="kvm" if usable_kvm else "qemu")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "memory", unit="MiB").text = "64"
    etree.SubElement(root, "vcpu").text = "1"
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type", arch=os.uname().machine).text = "hvm"
    etree.SubElement(root, "devices")
    dom = conn.defineXML(etree.tostring(root, encoding="unicode"))
    try:
        yield dom
    finally:
        try:
            conn.lookupByName(name).undefine()
        except libvirt.libvirtError:
            pass
        conn.close()


def _add_host(user, run_tasks, name: str, uri: str, ssh_host_key: str = ""):
    # Adding tries the connection first; one that fails is kept offline and its sync tells.
    host, task = services.host_create(
        user=user, name=name, uri=uri, ssh_host_key=ssh_host_key, offline=True
    )
    started = time.monotonic()
    run_tasks()
    elapsed = time.monotonic() - started
    host.refresh_from_db()
    task.refresh_from_db()
    return host, task, elapsed


def _resync(user, run_tasks, host):
    task = services.host_sync(user=user, host=host)
    run_tasks()
    host.refresh_from_db()
    task.refresh_from_db()
    return task


def test_first_sync_pins_the_host_key_and_syncs_over_ssh(
    admin_user, run_tasks, sshd, paddock_ssh_key, local_domain
):
    logins = sshd.accepted_logins()
    host, task, elapsed = _add_host(admin_user, run_tasks, "ssh-pinned", sshd.uri)

    assert task.state == TaskState.SUCCEEDED, task.error
    assert host.ssh_host_key == sshd.host_key.public
    assert host.status == HostStatus.ONLINE, host.last_error
    assert host.last_error == ""
    # Replies of many KiB (the capabilities) come back without stalling.
    assert elapsed < FAST, f"took {elapsed:.1f}s"
    # The connection really went through this sshd, with Paddock's key, and trusts only the
    # pinned key.
    assert sshd.accepted_logins() > logins
    uri = effective_uri(host)
    assert uri.startswith(f"qemu+ssh://{sshd.user}@127.0.0.1:{sshd.port}/system?")
    known_hosts = paddock_ssh_key.parent / f"known_hosts.{host.name}"
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key.public}\n"
    wrapper = (paddock_ssh_key.parent / f"ssh.{host.name}").read_text()
    assert f"UserKnownHostsFile={known_hosts}" in wrapper
    assert "StrictHostKeyChecking=yes" in wrapper
    assert "GlobalKnownHostsFile=/dev/null" in wrapper

    assert host.hypervisor == "QEMU"
    assert host.cpus and host.cpus > 0
    assert host.numa_cells, "capabilities gave no NUMA cells"
    assert host.simulated is False

    vm = VirtualMachine.objects.get(host=host, name=local_domain.name())
    assert str(vm.uuid) == local_domain.UUIDString()
    assert vm.state == "shutoff"


def test_wrong_pinned_key_is_refused_without_logging_in(
    admin_user, run_tasks, sshd, paddock_ssh_key, tmp_path
):
    impostor = sshd_helpers.generate_key(tmp_path / "impostor", comment="not-the-host")
    logins = sshd.accepted_logins()

    host, task, elapsed = _add_host(
        admin_user, run_tasks, "ssh-wrong-key", sshd.uri, ssh_host_key=impostor.public
    )

    assert task.state == TaskState.FAILED
    assert KEY_REFUSED in task.error
    assert host.status == HostStatus.ERROR
    assert KEY_REFUSED in host.last_error
    assert "has changed" in host.last_error
    # The key the admin gave stays pinned: nothing re-scanned and trusted what sshd offered.
    assert host.ssh_host_key == impostor.public
    # ssh stopped at the key exchange: Paddock's key was never offered, nothing synced.
    assert sshd.accepted_logins() == logins
    assert host.last_synced is None
    assert not VirtualMachine.objects.filter(host=host).exists()
    assert elapsed < FAST


def test_changed_host_key_fails_the_next_sync(admin_user, run_tasks, make_sshd, paddock_ssh_key):
    server = make_sshd()
    host, task, _elapsed = _add_host(admin_user, run_tasks, "ssh-rekeyed", server.uri)
    assert task.state == TaskState.SUCCEEDED, task.error
    pinned = server.host_key.public
    assert host.ssh_host_key == pinned
    synced_at = host.last_synced

    new_key = server.replace_host_key()
    assert new_key.public != pinned
    drop_connection(host)  # the old session ended with the old sshd; the next sync reconnects
    logins = server.accepted_logins()

    task = _resync(admin_user, run_tasks, host)

    assert task.state == TaskState.FAILED
    assert KEY_REFUSED in task.error
    assert host.status == HostStatus.ERROR
    assert KEY_REFUSED in host.last_error
    assert "has changed" in host.last_error
    assert host.ssh_host_key == pinned, "a changed key must never be re-pinned silently"
    assert host.last_synced == synced_at
    assert server.accepted_logins() == logins


@pytest.mark.parametrize("pinned", [False, True], ids=["first-sync", "key-pinned"])
def test_unreachable_host_fails_fast(admin_user, run_tasks, paddock_ssh_key, tmp_path, pinned):
    port = sshd_helpers.free_port()  # nothing listens there: the connection is refused
    key = sshd_helpers.generate_key(tmp_path / "somekey").public if pinned else ""

    host, task, elapsed = _add_host(
        admin_user, run_tasks, "ssh-down", f"qemu+ssh://root@127.0.0.1:{port}/system", key
    )

    assert task.state == TaskState.FAILED
    assert task.error
    assert host.status == HostStatus.ERROR
    assert host.last_error
    assert "refused" in host.last_error.lower(), host.last_error
    assert host.ssh_host_key == key
    assert elapsed < FAST, f"took {elapsed:.1f}s"


def test_paddock_creates_its_own_client_key_on_first_use(
    admin_user, run_tasks, make_sshd, settings, tmp_path
):
    key_path = tmp_path / "fresh-data" / "ssh" / "id_ed25519"
    settings.PADDOCK = {**settings.PADDOCK, "SSH_KEY": str(key_path)}
    server = make_sshd(authorized_key="")  # lets nobody in until Paddock's key is authorized

    host, task, _elapsed = _add_host(admin_user, run_tasks, "ssh-new-key", server.uri)

    # The key now exists (private, owner-only) but the host does not know it yet.
    assert key_path.exists()
    assert key_path.stat().st_mode & 0o077 == 0
    assert task.state == TaskState.FAILED
    assert host.status == HostStatus.ERROR
    assert host.ssh_host_key == server.host_key.public

    from hosts.driver.connection import ensure_client_key

    public = ensure_client_key()
    assert public.startswith("ssh-ed25519 ")
    assert key_path.with_name("id_ed25519.pub").read_text().strip() == public
    server.authorize(public)

    task = _resync(admin_user, run_tasks, host)
    assert task.state == TaskState.SUCCEEDED, task.error
    assert host.status == HostStatus.ONLINE
    assert ensure_client_key() == public, "the key is created once, then reused"
