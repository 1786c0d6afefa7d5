"""The public pytest fixtures of mailserver.testing_pytest, for these tests (a conftest below
the top level cannot set ``pytest_plugins``, so the fixtures are imported)."""

from mailserver.testing_pytest import mail_system, make_mail_system

__all__ = ["mail_system", "make_mail_system"]
