"""SMTP: the ESMTP server and client protocols, DATA/BDAT readers and reply codes.

**Public API** (the names in ``__all__``; every submodule's path is private and may change):
:class:`SMTPFactory`, an ESMTP listener built from a ``twisted.cred`` Portal, an
:class:`SMTPPolicy` and TLS options (any ``twisted.internet.ssl`` server context factory, or
None for no STARTTLS). A session asks the portal for an
:class:`~mailserver.interfaces.IDeliveryTarget` avatar: anonymously when it connects (port 25;
the avatar decides which recipients are accepted), or with the client's credentials after AUTH
(``SMTPPolicy(auth=True, require_auth=True)`` for submission). Recipients, the message and the
commit go to that avatar's delivery transaction; its :class:`~mailserver.errors.MailError`
failures become the replies. For TLS from the first byte (port 465) wrap the factory in
``twisted.protocols.tls.TLSMemoryBIOFactory`` and set ``implicit_tls=True``::

    portal = Portal(MyRealm(), [AllowAnonymousAccess()])
    factory = SMTPFactory(portal, SMTPPolicy(hostname="mx.example.org"), tls, reactor=reactor)
    reactor.listenTCP(2525, factory, interface="127.0.0.1")
"""

from mailserver.smtp.factory import SMTPFactory, SMTPPolicy

__all__ = ["SMTPFactory", "SMTPPolicy"]
