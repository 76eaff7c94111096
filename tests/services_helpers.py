"""Helpers for the services tests: a directory every user can reach, stand-in programs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def pubdir():
    """A temp directory (mode 0755, under /tmp) that unprivileged service users can enter.

    pytest's own tmp_path sits in a 0700 directory, which tcpserver -u nobody
    could not enter to read its rules cdb (components.md, trap 9).
    """
    d = Path(tempfile.mkdtemp(prefix="qmailkit-test-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
