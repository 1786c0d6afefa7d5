"""Tests for mailserver.msgauth."""
