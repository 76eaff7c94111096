"""The validrcptto.cdb lookup order, checked against cdbs read by tinycdb."""

from __future__ import annotations

import subprocess

import pytest

from qmailkit import cdb
from qmailkit.qmail.validrcptto import candidates, fold, lookup

TABLE = {
    b"bob@example.com": b"",
    b"list-default@example.com": b"",
    b"list-owner-default@example.com": b"-",
    b"spam@example.com": b"-no",
    b"@catch.example": b"",
    b"x-default@catch.example": b"-",
}


def test_candidates_in_qmail_smtpd_order():
    assert candidates("User-One-Two-Three@Example.COM") == [
        b"user-one-two-three@example.com",
        b"user-one-two-default@example.com",
        b"user-one-default@example.com",
        b"user-default@example.com",
        b"@example.com",
    ]
    assert candidates("plain") == [b"plain"]
    # The last @ splits local part and domain.
    assert candidates('"a@b"-c@d') == [b'"a@b"-c@d', b'"a@b"-default@d', b"@d"]


@pytest.mark.parametrize(
    ("address", "accept", "key"),
    [
        ("bob@example.com", True, b"bob@example.com"),
        ("BOB@Example.Com", True, b"bob@example.com"),
        ("bob-ext@example.com", False, None),
        ("list-subscribe@example.com", True, b"list-default@example.com"),
        ("list-return-12-x=y@example.com", True, b"list-default@example.com"),
        ("list-owner-x@example.com", False, b"list-owner-default@example.com"),
        ("spam@example.com", False, b"spam@example.com"),
        ("anyone@catch.example", True, b"@catch.example"),
        ("x-y@catch.example", False, b"x-default@catch.example"),
        ("nobody@other.example", False, None),
        ("nodomain", False, None),
    ],
)
def test_lookup(address, accept, key):
    decision = lookup(address, TABLE.get)
    assert (decision.accept, decision.key) == (accept, key)
    if key is not None:
        assert decision.value == TABLE[key]
        assert decision.tried[-1] == key


def test_lookup_only_lowercases_ascii():
    assert fold("ÄBC@X") == "Äbc@x"
    assert lookup("ÄB@x", {"Äb@x".encode(): b""}.get).accept


def test_lookup_on_a_cdb_agrees_with_tinycdb(tmp_path):
    path = tmp_path / "validrcptto.cdb"
    cdb.write(path, TABLE.items())
    with cdb.Reader(path) as reader:
        for address in ("list-owner-x@example.com", "anyone@catch.example", "bob@example.com"):
            decision = lookup(address, reader.get)
            found = subprocess.run(
                ["cdb", "-q", "--", str(path), decision.key.decode()],
                capture_output=True,
                check=True,
            ).stdout
            assert found == decision.value
