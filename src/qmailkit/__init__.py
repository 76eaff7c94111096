"""qmailkit: tools for running a qmail mail server under daemontools, runit or s6."""

__version__ = "0.1.0"
