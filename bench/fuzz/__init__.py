"""Fuzzing the parsers: one harness module per parser, run by ``python -m bench.fuzz``.

See ``bench/README.md`` (the fuzz job) and :mod:`bench.fuzz.harness` for the rules every
harness follows. Importing this package imports no parser.
"""

#: The harness modules, in the order the runner takes them.
HARNESSES = (
    "smtp_command",
    "smtp_data",
    "smtp_sasl",
    "imap_reader",
    "imap_command",
    "imap_sequence",
    "pop3_command",
    "headers",
    "envelope",
    "mime",
    "address",
    "utf7",
)
