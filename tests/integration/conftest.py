"""Fixtures shared by the integration tests on real services."""

from tests.integration.hugepages import hugepages_given_back  # noqa: F401
from tests.integration.lab import lab  # noqa: F401
from tests.integration.tinyguest import make_tiny_guest, tiny_guest_files  # noqa: F401
