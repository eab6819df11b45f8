"""Shards of the host list: which hosts one watcher process serves (``watch_hosts --shard i/n``).

A host belongs to shard ``pk % n``: stable for as long as the host exists, decided by the
database in one query, and the same in every process that is given the same ``n``, so ``n``
watcher processes together serve every host exactly once. A host added later falls into a shard
at the next rescan; one removed leaves its shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import QuerySet
from django.db.models.functions import Mod

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 1024


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``Shard()`` is every host (one process)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"The number of shards must be between 1 and {MAX_SHARDS}.")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"The shard index must be at least 0 and less than the number of shards "
                f"({self.count}): shards of {self.count} are 0/{self.count} to "
                f"{self.count - 1}/{self.count}."
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` as a shard; :class:`ValueError` saying what is wrong otherwise."""
        match = _SHARD_RE.match(text or "")
        if not match:
            raise ValueError(f"A shard is written i/n (e.g. 0/2), not {text!r}.")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, host_id: int) -> bool:
        return host_id % self.count == self.index

    def hosts(self, queryset: QuerySet) -> QuerySet:
        """``queryset`` (of hosts) narrowed to this shard's."""
        if self.whole:
            return queryset
        return queryset.alias(_shard=Mod("pk", self.count)).filter(_shard=self.index)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard()
