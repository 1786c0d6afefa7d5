"""SMTP: the ESMTP server and client protocols, DATA/BDAT readers and reply codes."""
