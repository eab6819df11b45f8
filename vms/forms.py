"""Forms of the VM pages."""

from __future__ import annotations

from django import forms

from panel.forms import TagsField


class VmEditForm(forms.Form):
    description = forms.CharField(max_length=200, required=False)
    tags = TagsField()
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label=None)

    def __init__(self, *args, tenants=None, **kwargs):
        super().__init__(*args, **kwargs)
        if tenants is None:
            # Only platform admins move VMs between tenants.
            del self.fields["tenant"]
        else:
            self.fields["tenant"].queryset = tenants
            self.fields["tenant"].required = True
