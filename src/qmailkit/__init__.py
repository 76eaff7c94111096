"""qmailkit: tools for running a qmail mail server under daemontools, runit or s6."""

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"
