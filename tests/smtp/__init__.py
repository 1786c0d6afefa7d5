"""Tests for mailserver.smtp."""
