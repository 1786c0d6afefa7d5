"""Tests of the filter checks (mailserver.filter)."""
