"""Interoperability with real peer MTAs (a private Postfix) run by the suite itself."""
