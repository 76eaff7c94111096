"""What a .qmail file does, as far as the valid-recipient list cares."""

from __future__ import annotations

import os
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmailkit.fsutil import NotRegular
from qmailkit.qmail.dotqmail import (
    Kind,
    _argv,
    classify,
    classify_text,
    is_default,
    list_home,
    read_file,
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("./Maildir/\n", Kind.DELIVER),
        ("", Kind.DELIVER),
        ("# only a comment\n", Kind.DELIVER),
        ("&bob@example.com\n", Kind.DELIVER),
        ("bob@example.com\n", Kind.DELIVER),
        ("|bouncesaying 'Gone.'\n", Kind.BOUNCE),
        ('# retired\n| /usr/bin/bouncesaying "Gone, sorry"\n./Maildir/\n', Kind.BOUNCE),
        ("|bouncesaying 'Not you.' [ \"$SENDER\" = x ]\n./Maildir/\n", Kind.DELIVER),
        ("|exit 100\n", Kind.BOUNCE),
        ("|exit 111\n", Kind.DELIVER),
        ("| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n", Kind.VPOP_LIST),
        ("|/home/vpopmail/bin/vdelivermail '' delete\n", Kind.VPOP_LIST),
        (
            "| /home/vpopmail/bin/vdelivermail '' /home/vpopmail/domains/x/postmaster\n",
            Kind.VPOP_CATCHALL,
        ),
        ("| vdelivermail '' catchall@example.com\n", Kind.VPOP_CATCHALL),
        ("| fastforward -d /etc/aliases.cdb\n", Kind.FASTFORWARD),
    ],
)
def test_classify(text, kind):
    assert classify_text(text, "/h/.qmail-x").kind is kind


def test_fastforward_options_and_passthrough():
    plain = classify_text("| fastforward -d /etc/aliases.cdb\n", "f")
    assert (plain.cdb, plain.passthrough) == ("/etc/aliases.cdb", False)
    alone = classify_text("|fastforward -pd aliases.cdb\n", "f")
    assert (alone.cdb, alone.passthrough, alone.fallback) == ("aliases.cdb", True, Kind.BOUNCE)
    then = classify_text("|fastforward -p -d aliases.cdb\n./Maildir/\n", "f")
    assert (then.passthrough, then.fallback) == (True, Kind.DELIVER)


def test_classify_reads_the_file_and_names_it_on_error(tmp_path):
    path = tmp_path / ".qmail-x"
    path.write_text("|bouncesaying gone\n")
    assert classify(str(path)).kind is Kind.BOUNCE
    with pytest.raises(Exception, match="cannot read .qmail file"):
        classify(str(tmp_path / "missing"))


def test_list_home_names(tmp_path):
    for name in (
        ".qmail",
        ".qmail-a",
        ".qmail-b:c",
        ".qmail-Big",
        ".qmail-",
        ".qmailx",
        "x",
        ".qmail-d.e",
    ):
        (tmp_path / name).write_text("")
    files = list_home(str(tmp_path))
    assert set(files.present) == {
        ".qmail",
        ".qmail-a",
        ".qmail-b:c",
        ".qmail-Big",
        ".qmail-",
        ".qmailx",
        ".qmail-d.e",
    }
    assert files.names == {"a": ".qmail-a", "b:c": ".qmail-b:c"}  # spelt as qmail-local does
    assert files.with_dash("").names == {}
    assert files.skipped == []


def test_list_home_skips_what_qmail_local_cannot_read_or_reach(tmp_path):
    os.mkfifo(tmp_path / ".qmail-fifo")
    (tmp_path / ".qmail-dir").mkdir()
    os.symlink("nowhere", tmp_path / ".qmail-dangling")
    os.symlink("/dev/null", tmp_path / ".qmail-dev")
    os.symlink(".qmail-real", tmp_path / ".qmail-link")
    (tmp_path / ".qmail-real").write_text("./Maildir/\n")
    (tmp_path / ".qmail-x\npostmaster").write_text("./Maildir/\n")
    files = list_home(str(tmp_path))
    assert files.names == {"link": ".qmail-link", "real": ".qmail-real"}
    assert files.skipped == [
        (
            f"{tmp_path}/'.qmail-x\\npostmaster': skipped: no address reaches a .qmail name "
            "holding a newline"
        ),
        (
            f"{tmp_path}/.qmail-dangling: skipped: it is a symbolic link to nothing, not a regular "
            "file, so qmail-local ignores it"
        ),
        (
            f"{tmp_path}/.qmail-dev: skipped: it is a character device, not a regular file, so "
            "qmail-local ignores it"
        ),
        (
            f"{tmp_path}/.qmail-dir: skipped: it is a directory, not a regular file, so "
            "qmail-local ignores it"
        ),
        (
            f"{tmp_path}/.qmail-fifo: skipped: it is a FIFO, not a regular file, so qmail-local "
            "ignores it"
        ),
    ]


def test_read_file_never_blocks_on_a_fifo(tmp_path):
    fifo = tmp_path / ".qmail-fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegular) as caught:
        read_file(str(fifo))
    assert (
        str(caught.value) == f"{fifo}: is a FIFO, not a regular file (replace it with a "
        "regular file)"
    )
    assert caught.value.exit_code == 111


def test_is_default():
    assert is_default("default") and is_default("list-default")
    assert not is_default("xdefault") and not is_default("default-x")


_WORDS = st.text(alphabet=st.sampled_from(list("ab -'\"\\x\t")), max_size=30)


@settings(max_examples=2000)
@given(_WORDS)
def test_argv_splits_like_shlex(command):
    try:
        want = shlex.split(command)
    except ValueError:
        return  # unbalanced quotes: shlex gives up, we only need a best effort
    assert _argv(command) == want


def test_the_c_reader_takes_only_the_usual_file(tmp_path):
    """read_regular (the hot loop's reads) declines all but a regular file within the
    limit; read_file then says what is wrong, or reads the first 64 KiB."""
    from qmailkit.qmail._vpasswd import read_regular

    (tmp_path / "f").write_bytes(b"./Maildir/\n")
    (tmp_path / "big").write_bytes(b"x" * 70000)
    os.mkfifo(tmp_path / "fifo")
    assert read_regular(str(tmp_path / "f"), 100) == b"./Maildir/\n"
    assert read_regular(str(tmp_path / "f"), 5) is None
    for odd in ("fifo", "missing", "."):
        assert read_regular(str(tmp_path / odd), 100) is None
    assert read_file(str(tmp_path / "big")) == b"x" * 65536
    with pytest.raises(Exception, match="cannot read .qmail file: No such file"):
        read_file(str(tmp_path / "missing"))
