"""Helpers for the services tests: a directory every user can reach, stand-in programs."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def public_tempdir() -> Iterator[Path]:
    """A temp directory (mode 0755, under /tmp) that unprivileged service users can enter.

    pytest's own tmp_path sits in a 0700 directory, which tcpserver -u nobody
    could not enter to read its rules cdb (components.md, trap 9).
    """
    d = Path(tempfile.mkdtemp(prefix="qmailkit-test-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def need_root() -> None:
    """Ownership and permission tests need root; like need(), a failure under CI."""
    from support import CI

    if os.geteuid() != 0:
        if CI:
            pytest.fail("this test must run as root (scripts/test does)")
        pytest.skip("needs root")
