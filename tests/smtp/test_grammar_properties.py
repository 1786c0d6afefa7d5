"""Properties of the SMTP command grammar (``mailserver.smtp.grammar``) on generated input.

Every parser either returns its value or raises :class:`GrammarError` carrying a reply to
send, whatever the line; well-formed MAIL and RCPT lines parse to exactly the sender,
recipient and parameters they were built from; xtext encoding round-trips.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.smtp import grammar
from mailserver.smtp.codes import Reply
from mailserver.smtp.grammar import GrammarError
from tests.strategies import smtp as sst


def _reply_or_value(function, *args, **kwargs) -> object:
    try:
        return function(*args, **kwargs)
    except GrammarError as error:
        assert isinstance(error.reply, Reply)
        assert 400 <= error.reply.code < 600
        assert all("\r" not in line and "\n" not in line for line in error.reply.lines())
        return error


@settings(max_examples=200, deadline=None)
@given(sst.command_lines(), st.sampled_from([frozenset(), sst.ALL_EXTENSIONS]))
def test_every_line_parses_or_gets_a_reply(line, extensions):
    """Any line (valid, near the grammar, or random bytes) gives a Command or a GrammarError
    with a 4xx/5xx reply of single lines, and so does its argument for HELO, MAIL and RCPT:
    never another exception."""
    command = _reply_or_value(grammar.parse_command, line)
    if isinstance(command, GrammarError):
        return
    assert command.verb.isalpha() and command.verb == command.verb.upper()
    assert command.argument == command.argument.strip(" \t")
    _reply_or_value(grammar.parse_helo, command.argument)
    _reply_or_value(grammar.parse_mail, command.argument, extensions=extensions, max_size=1000)
    _reply_or_value(grammar.parse_rcpt, command.argument, extensions=extensions, smtputf8=True)


@settings(max_examples=150, deadline=None)
@given(sst.mail_commands())
def test_mail_lines_parse_to_their_model(drawn):
    """A MAIL line built from a sender and parameters parses back to that sender and those
    parameters (keywords in any case, parameters in any order, xtext decoded)."""
    line, sender, params = drawn
    command = grammar.parse_command(line)
    assert command.verb == "MAIL"
    assert grammar.parse_mail(command.argument, extensions=sst.ALL_EXTENSIONS) == (
        sender,
        params,
    )


@settings(max_examples=150, deadline=None)
@given(sst.rcpt_commands())
def test_rcpt_lines_parse_to_their_model(drawn):
    """A RCPT line built from a recipient and DSN parameters parses back to them."""
    line, recipient, params = drawn
    command = grammar.parse_command(line)
    got = grammar.parse_rcpt(command.argument, extensions=sst.ALL_EXTENSIONS, smtputf8=True)
    assert got == (recipient, params)


@settings(max_examples=200, deadline=None)
@given(sst.mail_commands())
def test_parameters_are_refused_unless_advertised(drawn):
    """Without the extensions advertised, a MAIL line with parameters gets 555 5.5.4 (or a
    SMTPUTF8 address without SMTPUTF8: 553 5.6.7), never a silently ignored parameter."""
    line, _, params = drawn
    argument = grammar.parse_command(line).argument
    try:
        grammar.parse_mail(argument)
    except GrammarError as error:
        assert error.reply.code in (553, 555)
    else:
        assert params == grammar.MailParams()


@settings(max_examples=150, deadline=None)
@given(sst.xtext_values)
def test_xtext_round_trip(text):
    """xtext_decode(xtext_encode(s)) == s, and the encoding is plain xtext (RFC 3461 §4)."""
    encoded = grammar.xtext_encode(text)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    assert grammar.xtext_decode(encoded) == text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_xtext_decode_raises_only_value_error(text):
    """xtext_decode returns text or raises ValueError for any string."""
    try:
        assert isinstance(grammar.xtext_decode(text), str)
    except ValueError:
        pass


@settings(max_examples=150, deadline=None)
@given(sst.paths())
def test_helo_accepts_every_domain_and_literal(drawn):
    """EHLO with a domain or address literal returns its normal form, itself a fixed point."""
    _, address = drawn
    if address is None:
        return
    name = grammar.parse_helo(address.domain)
    assert grammar.parse_helo(name) == name
