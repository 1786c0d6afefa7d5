"""Tests of the content classifiers (mailserver.filter.spam) and the ``spam`` CLI noun."""
