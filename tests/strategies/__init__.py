"""Reusable hypothesis strategies for the parsers: SMTP command lines (:mod:`.smtp`), the
IMAP grammar (:mod:`.imap`), RFC 5322 header fields and address lists (:mod:`.rfc5322`) and
MIME messages (:mod:`.mime`).

Each module offers two kinds of strategy: *models* that draw a value together with its
serialised form (so a test can check ``parse(serialise(x)) == x``), and *noise* that draws
inputs near the grammar (real keywords, delimiters, broken escapes, stray CR/LF) to check
that a parser either parses or raises its documented error. Draws are bounded in size.
"""
