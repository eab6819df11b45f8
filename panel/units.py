"""Sizes: GiB and MiB as users give them, bytes as libvirt and QEMU take them."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError

GIB = 1024**3
MIB = 1024**2
# The largest volume Paddock creates or grows to: far beyond any real disk, far inside 64 bits.
MAX_VOLUME_GIB = 64 * 1024


def volume_bytes(size_gib, field: str = "size_gib") -> int:
    """A volume size in GiB as bytes, rounded up to whole MiB (QEMU wants sector-aligned
    images); anything that is not a number between 0 and MAX_VOLUME_GIB is a field error."""
    try:
        size = float(size_gib)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError({field: "A number of GiB."}) from None
    if not math.isfinite(size) or not 0 < size <= MAX_VOLUME_GIB:
        raise ValidationError({field: f"Between 0 and {MAX_VOLUME_GIB} GiB."})
    return -(-int(size * GIB) // MIB) * MIB
