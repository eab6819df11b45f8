"""Tuning: policies turned into plans against a host's real topology (placement, pinning, NUMA)."""
