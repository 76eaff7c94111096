"""auth.cdb: the SMTP AUTH database of jms1's combined qmail-smtpd patch (AUTH_CDB).

* ``records``: the record format (``Login``, ``Entry``, ``parse_value``);
* ``sources``: the logins of vpopmail and of system accounts (``Sources``, ``collect``);
* ``settings``: the settings file of ``VAR="value"`` pairs per login or domain;
* ``database``: writing auth.cdb through ``cdb.install`` (``check_target``,
  ``write_cdb``) and reading a record back (``find``);
* ``passwords``: crypt(3) through libcrypt (``crypt``, ``verify``).

The names the commands and tests use are here too.
"""

from __future__ import annotations

from qmailkit.auth.database import (
    DEFAULT_CDB,
    DEFAULT_MODE,
    DEFAULT_QMAIL_HOME,
    check_target,
    find,
    write_cdb,
)
from qmailkit.auth.passwords import crypt, verify
from qmailkit.auth.records import Entry, Login, parse_value
from qmailkit.auth.settings import Setting, parse_settings, read_settings
from qmailkit.auth.sources import Collected, Skipped, Sources, collect

__all__ = [
    "DEFAULT_CDB",
    "DEFAULT_MODE",
    "DEFAULT_QMAIL_HOME",
    "Collected",
    "Entry",
    "Login",
    "Setting",
    "Skipped",
    "Sources",
    "check_target",
    "collect",
    "crypt",
    "find",
    "parse_settings",
    "parse_value",
    "read_settings",
    "verify",
    "write_cdb",
]
