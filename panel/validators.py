"""Validators for names and values that may reach XML, a shell or a path."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

# Names Paddock hands to libvirt, file systems or shells: letters, digits and ._- only, starting
# with a letter or digit. That excludes XML metacharacters, quotes, spaces, slashes and `..`.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")

validate_name = RegexValidator(
    NAME_RE,
    message="Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit.",
    code="invalid_name",
)

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,49}\Z")
MAX_TAGS = 32


def validate_tags(value: object) -> None:
    if not isinstance(value, list):
        raise ValidationError("Tags must be a list of strings.", code="invalid_tags")
    if len(value) > MAX_TAGS:
        raise ValidationError(f"At most {MAX_TAGS} tags.", code="invalid_tags")
    for tag in value:
        if not isinstance(tag, str) or not TAG_RE.match(tag):
            raise ValidationError(
                f"Invalid tag {tag!r}: use up to 50 letters, digits or _.:=- characters.",
                code="invalid_tags",
            )
    if len(set(value)) != len(value):
        raise ValidationError("Tags must not repeat.", code="invalid_tags")
