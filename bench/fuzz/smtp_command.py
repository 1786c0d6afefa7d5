"""SMTP command lines (``mailserver.smtp.grammar``) as the session parses them.

The line goes through ``parse_command``; a HELO/EHLO, MAIL or RCPT argument then goes to its
parser with every extension advertised. Documented outcome: a value, or ``GrammarError``
(whose reply is then formatted, as the session sends it). Invariants: the verb is upper-case
letters; a parsed path has no CR/LF; xtext decodes its own encoding.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check
from mailserver.smtp import grammar
from mailserver.smtp.grammar import GrammarError

EXTENSIONS = frozenset({"SIZE", "8BITMIME", "BINARYMIME", "SMTPUTF8", "DSN", "AUTH"})

SEEDS = (
    b"EHLO mail.example.org",
    b"HELO [192.0.2.1]",
    b"EHLO [IPv6:2001:db8::1]",
    b"MAIL FROM:<alice@example.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=a+2Bb",
    b"MAIL FROM:<> AUTH=<>",
    b'MAIL FROM:<"a b\\"c"@example.org> SMTPUTF8',
    b"MAIL FROM:<@a.example,@b.example:bob@c.example>",
    b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.net",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<j\xc3\xb6rg@b\xc3\xbccher.example> ORCPT=utf-8;j\\x{F6}rg@x",
    b"BDAT 100 LAST",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
)


def one_input(data: bytes) -> None:
    line = data.split(b"\r\n", 1)[0]
    try:
        command = grammar.parse_command(line)
    except GrammarError as error:
        check(bool(error.reply.lines()), "a GrammarError without reply text")
        return
    check(command.verb.isalpha() and command.verb.isupper(), f"verb {command.verb!r}")
    try:
        if command.verb in ("HELO", "EHLO"):
            name = grammar.parse_helo(command.argument)
            check("\r" not in name and "\n" not in name, "line break in the HELO name")
        elif command.verb == "MAIL":
            sender, params = grammar.parse_mail(
                command.argument, extensions=EXTENSIONS, max_size=10_000
            )
            check(sender is None or "\n" not in str(sender), "line break in the sender")
            check(params.size is None or params.size <= 10_000, "SIZE over the limit accepted")
        elif command.verb == "RCPT":
            recipient, _ = grammar.parse_rcpt(command.argument, extensions=EXTENSIONS,
                                              smtputf8=True)  # fmt: skip
            check("\n" not in str(recipient), "line break in the recipient")
    except GrammarError as error:
        check(bool(error.reply.lines()), "a GrammarError without reply text")
    text = command.argument
    try:
        decoded = grammar.xtext_decode(text)
    except ValueError:
        decoded = text
    check(grammar.xtext_decode(grammar.xtext_encode(decoded)) == decoded, "xtext round trip")


TARGET = Target("smtp_command", one_input, SEEDS)
