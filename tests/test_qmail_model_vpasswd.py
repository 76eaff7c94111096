"""The bulk vpasswd readers of the model (C and Python) give exactly the careful reader's
names."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmailkit.errors import InputError
from qmailkit.qmail import model, vpopmail
from qmailkit.qmail.dotqmail import Kind, classify
from qmailkit.qmail.vpopmail import read_vpasswd


def names_of(tmp_path, data: bytes) -> list[bytes]:
    path = tmp_path / "vpasswd"
    path.write_bytes(data)
    builder = model._Builder(model.Options(vpopmail_sql=False))
    names, source = builder.vpopmail_users(str(tmp_path), "example.com")
    assert source == str(path)
    return names


def careful(tmp_path) -> list[bytes]:
    return [e.name.encode().lower() for e in read_vpasswd(tmp_path / "vpasswd")]


def line(name: str, extra: str = "") -> str:
    return f"{name}:$1$salt$hash:1:0:{name}:/home/vpopmail/domains/example.com/{name}:NOQUOTA{extra}"


@pytest.mark.parametrize("text", [
    "".join(line(f"User{i:05d}") + "\n" for i in range(1000)),  # > 64 KiB, capitals
    "".join(line(f"u{i}", ":clearpw") + "\r\n" for i in range(10)),  # 8 fields, CRLF
    line("a") + "\n" + line("b", ":clear") + "\n",  # 7 and 8 fields mixed
    line("a") + "\n\n" + line("b") + "\n\r\n",  # empty lines are skipped
    line("last"),  # no newline at the end
    "",
])
def test_names_are_the_careful_readers(tmp_path, text):
    data = text.encode()
    assert len(data) < 1 << 16 or text.count("\n") == 1000
    assert names_of(tmp_path, data) == careful(tmp_path)
    assert vpopmail._python_names(data, str(tmp_path / "vpasswd")) == careful(tmp_path)


def test_the_c_scanner_is_built_and_takes_the_usual_file():
    data = "".join(line(f"User{i}") + "\n" for i in range(100)).encode()
    assert vpopmail._c_names is not None
    assert vpopmail._c_names(data) == [b"user%d" % i for i in range(100)]
    # what it leaves to the Python reader: blank lines, short lines, empty names
    for odd in (b"\n" + data, data + b"\r\n", b"a:b:c:d:e:f\n", b":b:c:d:e:f:g\n"):
        assert vpopmail._c_names(odd) is None


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.sampled_from(
    [b"a", b"B", b":", b"::::::", b"\n", b"\r", b"\xc3\x89", line("Ab").encode()]),
    max_size=30).map(b"".join))
def test_c_scanner_agrees_with_the_python_reader(tmp_path, data):
    got = vpopmail._c_names(data)
    if got is None:
        return  # the Python reader decides (tested above)
    (tmp_path / "vpasswd").write_bytes(data)
    assert got == vpopmail._python_names(data, str(tmp_path / "vpasswd"))


@pytest.mark.parametrize(("text", "number", "message"), [
    (line("a") + "\nbroken\n", 2, "malformed vpasswd line: 1 fields, expected at least 7"),
    (line("a") + "\n" + line("") + "\n", 2, "malformed vpasswd line: empty user name"),
    ("a:b:c:d:e:f\n", 1, "malformed vpasswd line: 6 fields, expected at least 7"),
])
def test_a_damaged_line_is_named(tmp_path, text, number, message):
    with pytest.raises(InputError) as caught:
        names_of(tmp_path, text.encode())
    assert caught.value.line == number
    assert caught.value.message == message
    assert caught.value.path == str(tmp_path / "vpasswd")


def test_same_dotqmail_text_same_verdict_with_its_own_path(tmp_path):
    builder = model._Builder(model.Options())
    paths = []
    for i, text in enumerate(["|bouncesaying 'gone'\n", "|bouncesaying 'gone'\n",
                              "&someone@example.net\n", "|bouncesaying 'gone' prog\n"]):
        path = tmp_path / f".qmail-{i}"
        path.write_text(text)
        paths.append(str(path))
    found = [builder.delivery(p) for p in paths]
    assert found == [classify(p) for p in paths]
    assert [d.kind for d in found] == [Kind.BOUNCE, Kind.BOUNCE, Kind.DELIVER, Kind.DELIVER]
    assert [d.path for d in found] == paths
    os.unlink(paths[0])
    assert builder.delivery(paths[0]) == found[0]  # cached: the file is read once
    with pytest.raises(model.QmailkitError) as caught:
        builder.delivery(str(tmp_path / ".qmail-missing"))
    assert str(caught.value) == (f"{tmp_path}/.qmail-missing: cannot read .qmail file: "
                                 "No such file or directory")
