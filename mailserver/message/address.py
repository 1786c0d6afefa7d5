"""RFC 5321 mailboxes and paths, IDNA domains and subaddresses.

Every error is a :class:`ValueError` with a short human message: SMTP callers turn it into a
501 (syntax) or 553 (mailbox name not allowed) reply.

The local part of a parsed :class:`~mailserver.types.Address` is kept in its canonical SMTP
form: a dot-string as given, or, when the text needs quoting, a quoted-string with only ``"``
and ``\\`` escaped. A quoted local part whose content is a valid dot-string is unquoted
(RFC 5321 §4.1.2: the quoted form SHOULD NOT be used when the dot-string form would do), so
``"user"@example.org`` and ``user@example.org`` parse to the same address, and
``parse_address(str(address)) == address``.
"""

from __future__ import annotations

import encodings.idna
import functools
import ipaddress
import re

from mailserver.types import Address

__all__ = [
    "MAX_DOMAIN",
    "MAX_LABEL",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "domain_to_ascii",
    "domain_to_unicode",
    "normalize_domain",
    "parse_address",
    "parse_path",
    "quote_local",
    "split_subaddress",
    "unquote_local",
]

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1: octets of the local part
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2: octets of the domain
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3: octets of a path, punctuation included
MAX_LABEL = 63  # RFC 1035 §2.3.4: octets of one label

# RFC 5322 §3.2.3 atext, extended by RFC 6531 §3.3 with UTF8-non-ascii.
_UTF8_NON_ASCII = r"\u0080-\ud7ff\ue000-\U0010ffff"  # no surrogates: they have no UTF-8 form
_ATEXT = rf"A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_UTF8_NON_ASCII}"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# RFC 5321 §4.1.2 QcontentSMTP: qtextSMTP (%d32-33 / %d35-91 / %d93-126, plus UTF-8 per
# RFC 6531) or quoted-pairSMTP (backslash, then %d32-126).
_QUOTED_STRING = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8_NON_ASCII}]|\\[\x20-\x7e])*"')
_QUOTED_PAIR = re.compile(r"\\([\x20-\x7e])")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
# Characters the IDNA codec treats as label separators (RFC 3490 §3.1).
_IDNA_DOTS = re.compile("[\u3002\uff0e\uff61]")


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def quote_local(text: str) -> str:
    """Return the canonical SMTP form of a local part given as plain text.

    A valid dot-string is returned as is; anything else becomes a quoted-string with ``"``
    and ``\\`` escaped. Raises :class:`ValueError` for characters no quoted-string may hold
    (controls, DEL, surrogates).
    """
    if _DOT_STRING.fullmatch(text):
        return text
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if not _QUOTED_STRING.fullmatch(quoted):
        raise ValueError("local part contains characters that cannot be quoted")
    return quoted


def unquote_local(local: str) -> str:
    """Return the plain text of a local part: a quoted-string loses its quotes and escapes,
    a dot-string is returned unchanged."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", local[1:-1])
    return local


def _parse_local(text: str) -> str:
    """Validate an RFC 5321 §4.1.2 Local-part and return its canonical form."""
    if not text:
        raise ValueError("empty local part")
    if _octets(text) > MAX_LOCAL_PART:
        raise ValueError(f"local part longer than {MAX_LOCAL_PART} octets")  # RFC 5321 §4.5.3.1.1
    if text[0] == '"':
        if not _QUOTED_STRING.fullmatch(text):
            raise ValueError("invalid quoted local part")
        return quote_local(unquote_local(text))
    if not _DOT_STRING.fullmatch(text):
        raise ValueError("invalid local part")
    return text


def _address_literal(text: str) -> str:
    """Validate an RFC 5321 §4.1.3 address literal (``[IPv4]`` or ``[IPv6:...]``) and return
    it in canonical form."""
    inner = text[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        except ValueError:
            raise ValueError("invalid IPv6 address literal") from None
    if re.fullmatch(r"[0-9.]+", inner):
        try:
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            raise ValueError("invalid IPv4 address literal") from None
    # RFC 5321 §4.1.3 General-address-literal: no standardized tag besides IPv6 exists.
    raise ValueError("unsupported address literal")


def _label_to_ascii(label: str) -> str:
    """Return the A-label (or LDH label) of one lower-case domain label, validating it."""
    if not label:
        raise ValueError("empty domain label")
    if label.isascii():
        ascii_label = label
    else:
        if _IDNA_DOTS.search(label):
            raise ValueError("domain label contains an IDNA full stop")
        try:
            ascii_label = encodings.idna.ToASCII(label).decode("ascii")
        except UnicodeError:
            raise ValueError(f"invalid internationalised domain label {label!r}") from None
    if len(ascii_label) > MAX_LABEL:
        raise ValueError(f"domain label longer than {MAX_LABEL} octets")  # RFC 1035 §2.3.4
    # RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str]
    if not _LDH_LABEL.fullmatch(ascii_label.lower()):
        raise ValueError(f"invalid domain label {label!r}")
    if ascii_label[:4].lower() == "xn--":
        try:
            encodings.idna.ToUnicode(ascii_label)
        except UnicodeError:
            raise ValueError(f"invalid IDNA A-label {label!r}") from None
    return ascii_label


def normalize_domain(domain: str) -> str:
    """Validate a domain or address literal and return its normal form.

    A domain is lower-cased and loses one trailing dot; U-labels are kept as given (RFC 6531
    §3.3) but must convert to valid A-labels (RFC 5890); the domain may not exceed
    :data:`MAX_DOMAIN` octets, in its A-label form too (the form DNS and SMTP peers see, which
    is longer than the UTF-8 of its U-labels). An address literal is returned in canonical form.
    The normal forms of the last :data:`DOMAINS_KEPT` valid domains are kept (a pure function:
    every MAIL and RCPT of a session names the same few domains).
    """
    return _normal_domain(domain)


#: How many valid domains :func:`normalize_domain` keeps the normal form of.
DOMAINS_KEPT = 1024


@functools.lru_cache(maxsize=DOMAINS_KEPT)
def _normal_domain(domain: str) -> str:
    if domain.startswith("[") and domain.endswith("]") and len(domain) > 2:
        return _address_literal(domain)
    domain = domain.lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise ValueError("empty domain")
    if _octets(domain) > MAX_DOMAIN:
        raise ValueError(f"domain longer than {MAX_DOMAIN} octets")  # RFC 5321 §4.5.3.1.2
    ascii_labels = [_label_to_ascii(label) for label in domain.split(".")]
    if len(".".join(ascii_labels)) > MAX_DOMAIN:
        raise ValueError(f"domain longer than {MAX_DOMAIN} octets as A-labels")
    return domain


def domain_to_ascii(domain: str) -> str:
    """Return the A-label form of ``domain`` (normalised as by :func:`normalize_domain`),
    using the standard library's IDNA codec. Address literals are returned unchanged.
    Raises :class:`ValueError` for an invalid domain."""
    domain = normalize_domain(domain)
    if domain.startswith("["):
        return domain
    return ".".join(_label_to_ascii(label) for label in domain.split("."))


def domain_to_unicode(domain: str) -> str:
    """Return ``domain`` (normalised) with every A-label converted to its U-label.
    Raises :class:`ValueError` for an invalid domain."""
    domain = normalize_domain(domain)
    if domain.startswith("["):
        return domain
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            labels.append(encodings.idna.ToUnicode(label))
        else:
            labels.append(label)
    return ".".join(labels)


def _split_mailbox(text: str) -> tuple[str, str]:
    """Split ``local@domain`` at the ``@`` that ends the local part (a quoted local part
    may itself contain ``@``)."""
    if text.startswith('"'):
        match = _QUOTED_STRING.match(text)
        if match is None:
            raise ValueError("unterminated or invalid quoted local part")
        at = match.end()
        if at >= len(text) or text[at] != "@":
            raise ValueError("missing '@' after quoted local part")
    else:
        at = text.rfind("@")
        if at < 0:
            raise ValueError("missing '@' in address")
    return text[:at], text[at + 1 :]


def parse_address(text: str) -> Address:
    """Parse a bare RFC 5321 §4.1.2 Mailbox (``local@domain``, no angle brackets).

    The local part is a dot-string or quoted-string, UTF-8 allowed (RFC 6531); the domain is
    a domain name or an address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``). The result
    is normalised as described in the module docstring. Raises :class:`ValueError`.
    """
    if not text:
        raise ValueError("empty address")
    local, domain = _split_mailbox(text)
    if not domain:
        raise ValueError("empty domain")
    return Address(_parse_local(local), normalize_domain(domain))


def parse_path(text: str) -> Address | None:
    """Parse an SMTP reverse-path or forward-path (RFC 5321 §4.1.2).

    ``<>`` (the null reverse-path) gives ``None``. A source route (``<@a,@b:user@c>``) is
    validated and dropped (RFC 5321 §4.1.2, Appendix C: it SHOULD be ignored). The path may
    not exceed :data:`MAX_PATH` octets. Raises :class:`ValueError`.
    """
    if _octets(text) > MAX_PATH:
        raise ValueError(f"path longer than {MAX_PATH} octets")  # RFC 5321 §4.5.3.1.3
    if len(text) < 2 or text[0] != "<" or text[-1] != ">":
        raise ValueError("path must be enclosed in angle brackets")
    inner = text[1:-1]
    if not inner:
        return None
    if inner.startswith("@"):
        # RFC 5321 §4.1.2 A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain
        colon = inner.find(":")
        if colon < 0:
            raise ValueError("source route without ':'")
        for hop in inner[:colon].split(","):
            if not hop.startswith("@") or hop.startswith("@["):
                raise ValueError("invalid source route")
            normalize_domain(hop[1:])
        inner = inner[colon + 1 :]
    return parse_address(inner)


def split_subaddress(local: str, separator: str = "+") -> tuple[str, str | None]:
    """Split a local part at the first ``separator`` into (base, tag) (RFC 5233).

    ``"user+tag"`` gives ``("user", "tag")``, ``"user+"`` gives ``("user", "")`` and a local
    part without the separator, or with an empty base (``"+x"``), gives ``(local, None)``.
    A quoted local part is split on its plain text. The base is in canonical form: re-quoted
    as needed, also when a dot-string's base is no longer one (``"a.+tag"`` gives
    ``('"a."', "tag")``, the form in which ``"a."`` is stored); a base that no quoted-string
    can hold is returned as it is.
    """
    if not separator:
        raise ValueError("empty subaddress separator")
    text = unquote_local(local)
    base, found, tag = text.partition(separator)
    if not found or not base:
        return local, None
    if text is not local or not _DOT_STRING.fullmatch(base):
        try:
            base = quote_local(base)
        except ValueError:
            pass  # not a local part at all: nothing canonical to give
    return base, tag
