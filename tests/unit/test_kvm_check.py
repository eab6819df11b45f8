"""QEMU's access to /dev/kvm is judged for QEMU's user, not root (who may open anything)."""

from __future__ import annotations

import grp
import os
import stat

import pytest

from hosts.kvm import kvm_problem, qemu_user


@pytest.fixture
def device(tmp_path):
    """A character device node with /dev/kvm's numbers, owned by root."""
    path = tmp_path / "kvm"
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(10, 232))
    os.chown(path, 0, 0)
    return path


@pytest.fixture
def kvm_user(tmp_path):
    """A user in group kvm, as the set-up script makes libvirt-qemu."""
    user = "libvirt-qemu"
    if "kvm" not in [g.gr_name for g in grp.getgrall() if user in g.gr_mem]:
        pytest.fail("scripts/setup-system.sh puts libvirt-qemu in group kvm; run it first")
    return user


def test_root_only_device_is_refused_for_qemu_user(device, kvm_user):
    """crw------- root root: libvirt lists kvm, but QEMU cannot open it."""
    os.chmod(device, 0o600)
    problem = kvm_problem(str(device), kvm_user)
    assert "may not open" in problem and "TCG" in problem and "0660" in problem


def test_device_of_group_kvm_mode_0660_is_usable(device, kvm_user):
    os.chown(device, 0, grp.getgrnam("kvm").gr_gid)
    os.chmod(device, 0o660)
    assert kvm_problem(str(device), kvm_user) == ""


def test_group_without_write_is_refused(device, kvm_user):
    os.chown(device, 0, grp.getgrnam("kvm").gr_gid)
    os.chmod(device, 0o640)
    assert kvm_problem(str(device), kvm_user)


def test_missing_device_and_unknown_user_are_explained(tmp_path, device):
    assert "does not exist" in kvm_problem(str(tmp_path / "none"), "root")
    assert "does not exist on this machine" in kvm_problem(str(device), "no-such-user-xyz")


def test_qemu_user_is_read_from_qemu_conf(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text('# user = "nobody"\nuser = "+64055"\ngroup = "kvm"\n')
    assert qemu_user(str(conf)) == "64055"
    assert qemu_user(str(tmp_path / "missing.conf")) == "libvirt-qemu"
