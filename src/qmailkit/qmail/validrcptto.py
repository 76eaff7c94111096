"""The validrcptto.cdb lookup, exactly as qmail-smtpd with jms1's patch does it.

This is the one implementation of the order; ``rcpt check``, the tests and the
updater all call ``lookup``.  For a RCPT TO address qmail-smtpd:

1. lower-cases it (ASCII only, ``case_lowerb``);
2. tries the whole address as a key;
3. if it has an ``@`` (the last one splits local part and domain): cuts the
   local part back to its last delimiter (qmail's break character, ``-``) and
   tries ``PREFIX-default@domain``, from the longest prefix to the shortest;
4. tries ``@domain``.

The first key present decides: a value whose first byte is ``-`` rejects, any
other value (or none) accepts.  No key present rejects.  (Not modelled here:
RELAYCLIENT or AUTH skip the check, and an unset VALIDRCPTTO_CDB accepts all.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_STR_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

ENCODING = "utf-8"
ERRORS = "surrogateescape"


def fold(address: str) -> str:
    """Lower-case ASCII letters only, as qmail-smtpd does before the lookup."""
    return address.translate(_STR_LOWER)


def to_key(address: str) -> bytes:
    """The cdb key bytes of an (already folded) address."""
    return address.encode(ENCODING, ERRORS)


@dataclass(frozen=True, slots=True)
class Decision:
    accept: bool
    key: bytes | None  # the key that decided; None when no key was found
    value: bytes | None  # its value
    tried: list[bytes] = field(default_factory=list)  # every key tried, in order

    @property
    def reason(self) -> str:
        if self.key is None:
            return "no key matched"
        shown = self.key.decode(ENCODING, ERRORS)
        if not self.accept:
            return f"key {shown!r} has a value starting with '-'"
        return f"key {shown!r}"


def candidates(address: bytes | str, delimiter: bytes = b"-") -> list[bytes]:
    """The keys qmail-smtpd tries for ``address``, in order."""
    if isinstance(address, str):
        address = to_key(address)
    addr = address.translate(_ASCII_LOWER)
    keys = [addr]
    at = addr.rfind(b"@")
    if at < 0:
        return keys
    user, domain = addr[:at], addr[at:]
    while True:
        cut = user.rfind(delimiter)
        if cut < 0:
            break
        keys.append(user[: cut + 1] + b"default" + domain)
        user = user[:cut]
    keys.append(domain)
    return keys


def lookup(
    address: bytes | str,
    get: Callable[[bytes], bytes | None],
    delimiter: bytes = b"-",
) -> Decision:
    """Decide ``address`` the way qmail-smtpd does; ``get(key)`` returns the value or None."""
    tried: list[bytes] = []
    for key in candidates(address, delimiter):
        tried.append(key)
        value = get(key)
        if value is not None:
            return Decision(not value.startswith(b"-"), key, value, tried)
    return Decision(False, None, None, tried)
