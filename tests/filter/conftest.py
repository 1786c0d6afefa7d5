"""Fixtures for the filter tests: a private clamd (tests/peers/clamd.py)."""

from tests.peers.clamd import clamd_peer  # noqa: F401  (re-exported fixture)
