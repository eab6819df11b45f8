"""Pages of virtual machines, one module per job, on the generic views of ``panel.generic``:

- ``lists``: the VM table (the list, and the host's and tenant's VMs tabs);
- ``pages``: a VM's page with its registered tabs, its console window, its edit form;
- ``actions``: power, clone, template, delete, hardware and snapshot actions, one class each;
- ``wizard``: the create wizard and its host-dependent choices;
- ``tree``: the VM nodes of the resource tree;
- ``host_tabs``: what ``vms`` adds to the host page (registered, so ``hosts`` does not import us).

Views are thin: they read the inventory, call the same ``vms.services`` functions as the API,
put a service's ValidationError back on the form, and turn a LockConflict into "busy with task
#N".
"""

from . import host_tabs  # noqa: F401  (registers the host page's VMs tab)
from .actions import (
    CdromView,
    DiskAddView,
    DiskGrowView,
    DiskRemoveView,
    NicAddView,
    NicRemoveView,
    SnapshotAddView,
    SnapshotDeleteView,
    SnapshotRevertView,
    VmCloneView,
    VmDeleteView,
    VmPowerView,
    VmResourcesView,
    VmTemplateView,
)
from .common import XTERM_STYLES
from .lists import VmListView, vm_table_context
from .pages import VmConsolePopoutView, VmEditView, VmView, snapshot_rows
from .tree import TreeHostVmsView, TreeTenantVmsView
from .wizard import creatable_tenants, quota_rows, vm_create, vm_create_options, wizard_options

__all__ = [
    "XTERM_STYLES",
    "CdromView",
    "DiskAddView",
    "DiskGrowView",
    "DiskRemoveView",
    "NicAddView",
    "NicRemoveView",
    "SnapshotAddView",
    "SnapshotDeleteView",
    "SnapshotRevertView",
    "TreeHostVmsView",
    "TreeTenantVmsView",
    "VmCloneView",
    "VmConsolePopoutView",
    "VmDeleteView",
    "VmEditView",
    "VmListView",
    "VmPowerView",
    "VmResourcesView",
    "VmTemplateView",
    "VmView",
    "creatable_tenants",
    "quota_rows",
    "snapshot_rows",
    "vm_create",
    "vm_create_options",
    "vm_table_context",
    "wizard_options",
]
