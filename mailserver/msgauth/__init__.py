"""Message authentication: SPF, DKIM, ARC and DMARC on the way in, DKIM signing on the way out.

Each check returns :class:`mailserver.msgauth.results.AuthResult` values; ``inbound.py`` runs them
on arriving mail and records them in one ``Authentication-Results`` header (RFC 8601).
"""
