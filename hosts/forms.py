"""Forms of the host pages: add a host, edit Paddock's own fields of it."""

from __future__ import annotations

from django import forms

from panel.forms import TagsField

from .choices import VolumeFormat

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
    # Offered once the connection failed (the view shows it then): keep the host, offline.
    offline = forms.BooleanField(
        required=False,
        label="Add it anyway, offline",
        help_text="Paddock keeps the host with the connection error and syncs it once it answers.",
    )


class HostEditForm(forms.Form):
    description = forms.CharField(max_length=200, required=False)
    tags = TagsField()


# --- volumes of a storage pool -----------------------------------------------------------------

VOLUME_NAME_HELP = "Letters, digits, '.', '_' or '-'; e.g. data-01.qcow2."


def _number(attrs: dict) -> forms.NumberInput:
    return forms.NumberInput(attrs={"inputmode": "decimal", **attrs})


class VolumeCreateForm(forms.Form):
    name = forms.CharField(
        max_length=127,
        help_text=VOLUME_NAME_HELP,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    size_gib = forms.FloatField(label="Size (GiB)", widget=_number({"min": 0.001, "step": "any"}))
    format = forms.ChoiceField(
        choices=[
            (VolumeFormat.QCOW2, "qcow2 (thin, snapshots, backing files)"),
            (VolumeFormat.RAW, "raw (fully allocated, fastest)"),
        ],
        initial=VolumeFormat.QCOW2,
    )

    def __init__(self, *args, formats: tuple[str, ...] = ("qcow2", "raw"), **kwargs):
        super().__init__(*args, **kwargs)
        if len(formats) <= 1:
            # One format only (LVM's raw block devices): nothing to choose, libvirt takes none.
            del self.fields["format"]
        else:
            field = self.fields["format"]
            field.choices = [c for c in field.choices if c[0] in formats]
            field.initial = formats[0]


class VolumeGrowForm(forms.Form):
    size_gib = forms.FloatField(
        label="New size (GiB)",
        widget=_number({"min": 0.001, "step": "any"}),
        help_text="Volumes only grow: shrinking would destroy the data past the new end.",
    )


class VolumePublishForm(forms.Form):
    published = forms.BooleanField(
        required=False,
        label="Publish as an image",
        help_text="Tenants may mount it as a CD-ROM, copy it, or use it as a linked clone's "
        "backing file; never write to it.",
    )
    tenant = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Published to"
    )

    def __init__(self, *args, tenants=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [("", "Every tenant"), *tenants]


class VolumeDeleteForm(forms.Form):
    """A confirmation without fields: the POST itself is the answer."""


class VolumeUploadForm(forms.Form):
    file = forms.FileField(
        label="File",
        help_text="An ISO image or a standalone disk image; it must fit the pool's free space.",
    )
    name = forms.CharField(
        label="Volume name",
        max_length=127,
        required=False,
        help_text="Defaults to the file's name.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    format = forms.ChoiceField(
        choices=[
            ("iso", "iso (installation media)"),
            (VolumeFormat.RAW, "raw"),
            (VolumeFormat.QCOW2, "qcow2"),
        ],
        initial="iso",
    )

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is not None and not data.get("name"):
            data["name"] = upload.name
        return data
