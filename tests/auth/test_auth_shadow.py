"""qmailkit.qmail.shadow: passwd and shadow files as system account sources."""

from __future__ import annotations

import os

import pytest

from qmailkit.errors import InputError, QmailkitError
from qmailkit.qmail import shadow


def test_read_passwd_and_window(tmp_path):
    path = tmp_path / "passwd"
    path.write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "\n"
        "+nisuser::::::\n"
        "joe:x:1000:1000:Joe Q:/home/joe:/bin/sh\n"
        "joe:x:2000:2000:second joe:/home/joe2:/bin/sh\n"
        "low:x:499:499::/home/low:/bin/sh\n"
        "edge:x:500:500::/home/edge:/bin/sh\n"
        "top:x:65000:65000::/home/top:/bin/sh\n"
        "over:x:65001:65001::/home/over:/bin/sh\n"
    )
    entries = shadow.read_passwd(path)
    assert [(e.name, e.uid, e.line) for e in entries] == [
        ("root", 0, 1),
        ("joe", 1000, 4),
        ("joe", 2000, 5),
        ("low", 499, 6),
        ("edge", 500, 7),
        ("top", 65000, 8),
        ("over", 65001, 9),
    ]
    window = shadow.uids_in_window(entries)
    assert sorted(window) == ["edge", "joe", "top"]
    assert window["joe"].uid == 1000  # the first entry wins, as with getpwnam
    assert "root" not in shadow.uids_in_window(entries, 0, 100000)


def test_read_shadow(tmp_path):
    path = tmp_path / "shadow"
    path.write_text("joe:$1$a$b:19000:0:99999:7::20000:\nann:!$1$a$b:19000\nbob:*:::::::\n")
    joe, ann, bob = shadow.read_shadow(path)
    assert (joe.hash, joe.last_change, joe.max_days, joe.expire) == ("$1$a$b", 19000, 99999, 20000)
    assert joe.expires_at == 20000 * 86400 and not joe.locked
    assert ann.locked and ann.expire is None and ann.expires_at is None
    assert bob.locked and bob.last_change is None


@pytest.mark.parametrize(
    ("reader", "text", "line", "message"),
    [
        (shadow.read_passwd, "root:x:0:0:root:/root\n", 1, "6 fields, expected 7"),
        (shadow.read_passwd, "ok:x:1:1:::\njoe:x:abc:1:::\n", 2, "uid 'abc' is not a number"),
        (shadow.read_passwd, ":x:1:1:::\n", 1, "empty user name"),
        (shadow.read_shadow, "joe\n", 1, "1 fields, expected 9"),
        (shadow.read_shadow, "joe:h:1:2:3:4:5:6:7:8\n", 1, "10 fields, expected 9"),
        (shadow.read_shadow, "joe:h:x:::::\n", 1, "last change 'x' is not a number"),
        (shadow.read_shadow, "joe:h::::::soon:\n", 1, "expiry date 'soon' is not a number"),
    ],
)
def test_malformed_lines(tmp_path, reader, text, line, message):
    path = tmp_path / "file"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        reader(path)
    assert (exc.value.path, exc.value.line) == (str(path), line)
    assert message in exc.value.message


def test_unreadable_file(tmp_path):
    with pytest.raises(QmailkitError) as exc:
        shadow.read_shadow(tmp_path / "none")
    assert str(exc.value) == f"{tmp_path}/none: cannot read shadow file: No such file or directory"


@pytest.mark.parametrize("plant", ["fifo", "zero"])
def test_a_fifo_or_device_is_refused_without_hanging(tmp_path, plant):
    # A16/A7: a FIFO as --shadow or --passwd hung mkauth and mkvalidrcptto for good
    from qmailkit.fsutil import NotRegular

    path = tmp_path / "shadow"
    if plant == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    kind = "a FIFO" if plant == "fifo" else "a character device"
    for read in (shadow.read_shadow, shadow.read_passwd):
        with pytest.raises(NotRegular) as exc:
            read(path)
        assert str(exc.value) == (
            f"{path}: is {kind}, not a regular file (replace it with a regular file)"
        )
