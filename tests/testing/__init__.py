"""Tests of mailserver.testing: the public test support."""
