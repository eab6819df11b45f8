"""Host actions: small objects with ``check``, ``apply`` and ``revert`` that the executor runs.

One module per family (``sysfs`` now; tuning adds sysctl and IRQ affinity, fabric adds links,
bridges and LVM). See ``docs/host-actions.md`` for how to add one.
"""

from hosts.actions.base import Action, ActionResult, ValueAction, action_from_dict, register
from hosts.actions.sysfs import SYSFS_PATHS, Hugepages, SysfsValue
from hosts.actions.tuning import HugetlbfsMounted, IrqAffinity, KernelCmdline

__all__ = [
    "SYSFS_PATHS",
    "Action",
    "ActionResult",
    "Hugepages",
    "HugetlbfsMounted",
    "IrqAffinity",
    "KernelCmdline",
    "SysfsValue",
    "ValueAction",
    "action_from_dict",
    "register",
]
