"""The database checkpoint of the metric rings (see ``metrics.store``).

One row per object and rollup tier, holding the whole fixed-size ring as one blob: the table
has at most (VMs + hosts + pools) x 3 rows and never grows with time.
"""

from __future__ import annotations

from django.db import models


class MetricRing(models.Model):
    kind = models.CharField(max_length=8, help_text="vm, host or pool")
    object_id = models.PositiveBigIntegerField()
    tier = models.CharField(max_length=4, help_text="m1, h1 or d1")
    data = models.BinaryField()
    updated = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "object_id", "tier"], name="metricring_unique_object_tier"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.object_id}:{self.tier}"
