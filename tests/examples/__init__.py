"""Tests for examples/: every embedding example runs."""
