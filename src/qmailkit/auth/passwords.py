"""Checking a password against a crypt(3) hash, through libcrypt.

Python 3.13 dropped the crypt module, so libcrypt is called through ctypes,
loaded once, on the first check (building auth.cdb never needs it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hmac
from collections.abc import Callable

from qmailkit.auth.records import ENCODING, ERRORS, unusable_hash
from qmailkit.errors import QmailkitError


@functools.cache
def libcrypt_crypt() -> Callable[[bytes, bytes], bytes | None]:
    """libcrypt's crypt(3); QmailkitError saying what to install when there is none."""
    names = ["libcrypt.so.1"]
    found = ctypes.util.find_library("crypt")
    if found and found not in names:
        names.append(found)
    for name in names:
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        function = library.crypt
        function.restype = ctypes.c_char_p
        function.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        return function
    raise QmailkitError(
        "cannot load libcrypt (libcrypt.so.1) to check passwords",
        hint="install libcrypt1 (Debian/Ubuntu) or libxcrypt",
    )


def crypt(password: str | bytes, setting: str) -> str | None:
    """crypt(3) through libcrypt; None on failure."""
    if isinstance(password, str):
        password = password.encode(ENCODING, ERRORS)
    out = libcrypt_crypt()(password, setting.encode(ENCODING, ERRORS))
    if out is None:
        return None
    text = out.decode(ENCODING, ERRORS)
    # libxcrypt returns "*0"/"*1" instead of NULL for an unusable setting.
    return None if text.startswith("*") else text


def verify(password: str | bytes, hash_: str) -> bool:
    """True when ``password`` matches the crypt(3) ``hash_``; locked hashes never match."""
    if unusable_hash(hash_):
        return False
    out = crypt(password, hash_)
    return out is not None and hmac.compare_digest(
        out.encode(ENCODING, ERRORS), hash_.encode(ENCODING, ERRORS)
    )
