"""Bounds every input passes before it reaches a query: ids that fit 64 bits, text without NUL,
JSON that is not nested deeper than any real request.

The database answers an id beyond 64 bits with an overflow and a string with NUL (PostgreSQL)
with an error; both are client mistakes, so they are refused here as 400 (or as a 404 for a
path id) by the shared filter, serializer field, path converter and parser that use these.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.urls import register_converter

# The largest id a row can have (SQLite INTEGER and PostgreSQL bigint are 64-bit signed).
MAX_ID = 2**63 - 1
# A path id: 18 ASCII digits always fits MAX_ID, so a longer one cannot exist (404).
ID_PATH_REGEX = "[0-9]{1,18}"
# A name in a path (a snapshot's): no slash, no control character.
NAME_PATH_REGEX = "[^/\\x00-\\x1f]+"
# The deepest JSON Paddock reads is three levels ({"disks": [{...}]}); 32 leaves room.
MAX_JSON_DEPTH = 32


def parse_id(value) -> int | None:
    """``value`` as an id when it is one (ASCII digits, within 64 bits), else None."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if number <= MAX_ID else None


def reject_nul(value: str, field: str) -> str:
    if "\x00" in value:
        raise ValidationError({field: "Null characters are not allowed."})
    return value


class IdFormField(forms.IntegerField):
    """An integer that can be a row id: 0 .. 2**63-1."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


def id_validators() -> list:
    return [MinValueValidator(0), MaxValueValidator(MAX_ID)]


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply arrays and objects nest in ``text`` (strings skipped), without parsing it;
    counting stops once ``limit`` is passed."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


class IdPathConverter:
    """``<id:pk>``: an id in a URL path; a longer number cannot exist and is a 404."""

    regex = ID_PATH_REGEX

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(value)


class NamePathConverter:
    """``<name:name>``: a path segment without control characters (PostgreSQL refuses NUL)."""

    regex = NAME_PATH_REGEX

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value) -> str:
        return str(value)


register_converter(IdPathConverter, "id")
register_converter(NamePathConverter, "name")
