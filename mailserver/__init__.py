"""mailserver: a protocol-first reference mail server on Twisted."""

__version__ = "0.1.0.dev0"
