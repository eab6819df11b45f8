"""Whether QEMU, as the user libvirt runs it as, can really open /dev/kvm on this machine.

libvirt lists the ``kvm`` domain type whenever the device exists, even when QEMU's user may not
open it (a machine without udev leaves ``/dev/kvm`` as ``crw------- root root``); every KVM
start then fails with "Could not access KVM kernel module: Permission denied". Root's
``os.access`` says yes there, so the question is asked for QEMU's user, from the device's owner,
group and mode.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from pathlib import Path

KVM_DEVICE = "/dev/kvm"
QEMU_CONF = "/etc/libvirt/qemu.conf"
DEFAULT_QEMU_USER = "libvirt-qemu"  # Debian's and Ubuntu's build default

_USER_RE = re.compile(r'^\s*user\s*=\s*"([^"]+)"', re.MULTILINE)


def qemu_user(conf: str = QEMU_CONF) -> str:
    """The user libvirt's QEMU driver runs guests as (``user = "…"`` in qemu.conf)."""
    try:
        text = Path(conf).read_text()
    except OSError:
        return DEFAULT_QEMU_USER
    match = _USER_RE.search(text)
    name = match.group(1) if match else DEFAULT_QEMU_USER
    return name.lstrip("+")


def _groups_of(user: str) -> tuple[int, set[int]] | None:
    try:
        if user.isdigit():
            entry = pwd.getpwuid(int(user))
        else:
            entry = pwd.getpwnam(user)
    except KeyError:
        return None
    gids = {entry.pw_gid}
    gids |= {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
    return entry.pw_uid, gids


def kvm_problem(device: str = KVM_DEVICE, user: str | None = None) -> str:
    """Why QEMU cannot use KVM here, or "" when it can."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return f"{device} does not exist: the kvm kernel module is not loaded or not available."
    except OSError as exc:
        return f"{device} cannot be read: {exc.strerror}."
    if not stat.S_ISCHR(st.st_mode):
        return f"{device} is not a character device."
    user = user or qemu_user()
    ids = _groups_of(user)
    if ids is None:
        return f"QEMU's user {user!r} does not exist on this machine."
    uid, gids = ids
    rw_owner, rw_group, rw_other = (
        stat.S_IRUSR | stat.S_IWUSR,
        stat.S_IRGRP | stat.S_IWGRP,
        stat.S_IROTH | stat.S_IWOTH,
    )
    mode = st.st_mode
    if uid == 0:
        return ""
    if st.st_uid == uid and mode & rw_owner == rw_owner:
        return ""
    if st.st_gid in gids and mode & rw_group == rw_group:
        return ""
    if mode & rw_other == rw_other:
        return ""
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return (
        f"QEMU runs as {user!r}, which may not open {device} (mode {stat.filemode(mode)}, "
        f"group {group}): guests run without KVM (TCG). Give {device} group kvm and mode 0660, "
        "as udev does, and add the user to group kvm."
    )


def kvm_usable(device: str = KVM_DEVICE, user: str | None = None) -> bool:
    return not kvm_problem(device, user)
