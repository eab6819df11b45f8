"""Forms of the host pages: add a host, edit Paddock's own fields of it."""

from __future__ import annotations

from django import forms

from panel.forms import TagsField

URI_HELP = (
    "One of: <code>qemu:///system</code> for this machine; "
    "<code>qemu+ssh://user@host[:port]/system</code> for a remote host over SSH; "
    "<code>test:///path/to/node.xml</code> for a simulated host (libvirt test driver)."
)


class HostAddForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Short name, e.g. pve-01.")
    uri = forms.CharField(label="libvirt URI", max_length=500, help_text=URI_HELP)
    ssh_host_key = forms.CharField(
        label="SSH host key",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text=(
            "Optional, for qemu+ssh hosts: the key to pin, as 'ssh-ed25519 AAAA…'. "
            "Left empty, the key the host offers on the first connection is pinned."
        ),
    )
    description = forms.CharField(max_length=200, required=False)
    tags = TagsField()


class HostEditForm(forms.Form):
    description = forms.CharField(max_length=200, required=False)
    tags = TagsField()
