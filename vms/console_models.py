"""Console tickets: a short-lived, single-use permission to open one console of one VM.

Only the SHA-256 of a ticket is stored. A ticket is redeemed by a compare-and-swap
(``UPDATE … WHERE used_at IS NULL AND expires > now``), so of two simultaneous uses exactly one
gets through, on SQLite and PostgreSQL alike. The row then records the console session it
opened (``alive_at`` is renewed while the session runs, ``closed_at`` set when it ends), which
is how Paddock knows who is connected to a VM's console across web processes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ConsoleKind(models.TextChoices):
    VNC = "vnc", "VNC display"
    SERIAL = "serial", "Serial console"


class ConsoleTicket(models.Model):
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_tickets"
    )
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.CASCADE, related_name="console_tickets"
    )
    kind = models.CharField(max_length=8, choices=ConsoleKind.choices)
    created = models.DateTimeField()
    expires = models.DateTimeField(db_index=True)
    # Set once, by the one use that redeems the ticket.
    used_at = models.DateTimeField(null=True, blank=True)
    # The console session the ticket opened: renewed while it runs, closed when it ends.
    alive_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["vm", "kind", "closed_at"], name="consoleticket_session")]

    def __str__(self) -> str:
        return f"{self.kind} console of VM {self.vm_id} for user {self.user_id}"
