"""Host actions tuning needs beyond one sysfs value: a hugetlbfs mount libvirt can use, IRQ
affinity away from dedicated pCPUs, and the kernel command line (read only).

Paths are on the executor's allow-list (``allow_files``); IRQ numbers come from
``/proc/interrupts`` as the kernel lists them, never from input.
"""

from __future__ import annotations

from hosts.actions.base import Action, ActionResult, register
from hosts.actions.sysfs import HUGEPAGE_SIZES_KIB
from hosts.executor import ActionFailed, ActionRefused, CommandFailed, Executor, allow_files
from panel.xmlutil import format_cpuset, parse_cpuset

allow_files(
    [
        r"/proc/mounts",
        r"/proc/cmdline",
        r"/proc/interrupts",
        r"/proc/irq/[0-9]{1,5}/smp_affinity_list",
    ],
    writable=False,
)
allow_files([r"/proc/irq/[0-9]{1,5}/smp_affinity_list"], writable=True)

_PAGESIZE = {2048: ("2M", "2048k"), 1048576: ("1G", "1048576k", "1024M")}


def hugetlbfs_mounts(mounts: str) -> dict[int, str]:
    """Page size (KiB) -> mount point of each hugetlbfs in a ``/proc/mounts`` text (a mount
    without ``pagesize=`` serves the default size, 2 MiB on x86)."""
    out: dict[int, str] = {}
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "hugetlbfs":
            continue
        options = {}
        for option in parts[3].split(","):
            key, _, value = option.partition("=")
            options[key] = value
        size = options.get("pagesize", "2M")
        for kib, names in _PAGESIZE.items():
            if size in names:
                out.setdefault(kib, parts[1])
    return out


@register
class HugetlbfsMounted(Action):
    """A hugetlbfs of ``size_kib`` pages is mounted (check only: mounting one needs libvirtd
    restarted to see it, so Paddock says what to do rather than doing it)."""

    kind = "host.hugetlbfs"

    def __init__(self, size_kib: int = 2048):
        if isinstance(size_kib, bool) or size_kib not in HUGEPAGE_SIZES_KIB:
            raise ActionRefused(f"Hugepage size {size_kib!r} KiB is not 2048 or 1048576.")
        self.size_kib = size_kib

    def describe(self) -> str:
        return f"a hugetlbfs mount for {self.size_kib} KiB pages"

    def params(self) -> dict:
        return {"size_kib": self.size_kib}

    def check(self, ex: Executor) -> str | None:
        return hugetlbfs_mounts(ex.read_file("/proc/mounts")).get(self.size_kib)

    def apply(self, ex: Executor) -> ActionResult:
        mount = self.check(ex)
        if mount is None:
            size = _PAGESIZE[self.size_kib][0]
            raise ActionFailed(
                f"{ex.name}: no hugetlbfs for {size} pages is mounted, so libvirt cannot back "
                f"guests with them. Mount one (mount -t hugetlbfs -o pagesize={size} hugetlbfs "
                "/dev/hugepages, or let systemd's dev-hugepages.mount do it) and restart "
                "libvirtd, then apply again."
            )
        ex.log(f"{ex.name}: hugetlbfs for {self.size_kib} KiB pages is mounted at {mount}")
        return ActionResult(self, mount, mount, changed=False)

    def revert(self, ex: Executor, result: ActionResult) -> ActionResult:
        return ActionResult(self, result.after, result.after, changed=False)


@register
class KernelCmdline(Action):
    """The kernel command line (check only: Paddock never edits a bootloader)."""

    kind = "host.cmdline"

    def describe(self) -> str:
        return "the kernel command line"

    def params(self) -> dict:
        return {}

    def check(self, ex: Executor) -> str:
        return ex.read_file("/proc/cmdline").strip()

    def apply(self, ex: Executor) -> ActionResult:
        value = self.check(ex)
        return ActionResult(self, value, value, changed=False)

    def revert(self, ex: Executor, result: ActionResult) -> ActionResult:
        return ActionResult(self, result.after, result.after, changed=False)


def irq_numbers(interrupts: str) -> list[int]:
    """The numbered IRQs of a ``/proc/interrupts`` text (not NMI, LOC and the like)."""
    out = []
    for line in interrupts.splitlines()[1:]:
        head = line.split(":", 1)[0].strip()
        if head.isdigit():
            out.append(int(head))
    return out


@register
class IrqAffinity(Action):
    """Every IRQ the kernel lets move runs on ``cpus`` (the housekeeping set), away from the
    pCPUs dedicated to guests. IRQs that refuse a new affinity (per-CPU timers, managed
    interrupts) are skipped and logged; revert puts each moved IRQ back where it was."""

    kind = "tuning.irq_affinity"

    def __init__(self, cpus: list[int] | str = ()):
        ids = parse_cpuset(cpus) if isinstance(cpus, str) else list(cpus)
        if not ids or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 8192 for c in ids
        ):
            raise ActionRefused(f"IRQ affinity needs a set of CPU ids, not {cpus!r}.")
        self.cpus = sorted(set(ids))

    def describe(self) -> str:
        return f"IRQ affinity on CPUs {format_cpuset(self.cpus)}"

    def params(self) -> dict:
        return {"cpus": self.cpus}

    def _path(self, irq: int) -> str:
        return f"/proc/irq/{int(irq)}/smp_affinity_list"

    def check(self, ex: Executor) -> dict[str, str]:
        current = {}
        for irq in irq_numbers(ex.read_file("/proc/interrupts")):
            try:
                current[str(irq)] = ex.read_file(self._path(irq)).strip()
            except CommandFailed:
                continue  # an IRQ without an affinity file (gone meanwhile)
        return current

    def _write(self, ex: Executor, values: dict[str, str]) -> dict[str, str]:
        done = {}
        for irq, value in values.items():
            try:
                ex.write_file(self._path(int(irq)), value)
                done[irq] = value
            except CommandFailed as exc:
                ex.log(f"{ex.name}: IRQ {irq} keeps its affinity ({exc})", "warning")
        return done

    def apply(self, ex: Executor) -> ActionResult:
        wanted = format_cpuset(self.cpus)
        before = self.check(ex)
        moved = self._write(ex, {irq: wanted for irq, v in before.items() if v != wanted})
        ex.log(f"{ex.name}: moved {len(moved)} of {len(before)} IRQs to CPUs {wanted}")
        return ActionResult(
            self, {k: before[k] for k in moved}, dict.fromkeys(moved, wanted), changed=bool(moved)
        )

    def revert(self, ex: Executor, result: ActionResult) -> ActionResult:
        if not result.changed:
            return ActionResult(self, result.after, result.after, changed=False)
        back = self._write(ex, dict(result.before or {}))
        return ActionResult(self, result.after, back, changed=bool(back))
