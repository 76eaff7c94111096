"""``qmailkit newmrh``: control/morercpthosts → morercpthosts.cdb, checked with tinycdb."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import support
from support import need


def newmrh(home, *extra):
    return support.run("newmrh", "--qmail-home", home, *extra)


@pytest.fixture
def control(tmp_path):
    (tmp_path / "control").mkdir()
    return tmp_path / "control"


def test_newmrh_lowercases_and_skips_comments(control, tmp_path):
    (cdb_prog,) = need("cdb")
    (control / "morercpthosts").write_bytes(
        b"# more domains\nExample.COM\n\nexample.net   \t\n   \n#example.org\nmail.Example.Org"
    )
    proc = newmrh(tmp_path, "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{control}/morercpthosts.cdb: 3 domains\n"
    target = control / "morercpthosts.cdb"
    dump = subprocess.run([cdb_prog, "-d", str(target)], capture_output=True, check=True).stdout
    assert dump == b"+11,0:example.com->\n+11,0:example.net->\n+16,0:mail.example.org->\n\n"
    for name in ("example.com", "example.net", "mail.example.org"):
        subprocess.run([cdb_prog, "-q", str(target), name], check=True, capture_output=True)
    assert (
        subprocess.run(
            [cdb_prog, "-q", str(target), "Example.COM"], check=False, capture_output=True
        ).returncode
        == 100
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    # Same bytes as tinycdb makes from the same records.
    ref = tmp_path / "ref.cdb"
    subprocess.run([cdb_prog, "-c", str(ref)], input=dump, check=True)
    assert ref.read_bytes() == target.read_bytes()


def test_empty_file_gives_empty_cdb_only_with_force(control, tmp_path):
    (cdb_prog,) = need("cdb")
    (control / "morercpthosts").write_bytes(b"")
    proc = newmrh(tmp_path)
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit newmrh: fatal: {control}/morercpthosts.cdb: no domains found: an empty "
        "morercpthosts.cdb refuses mail for every domain listed only there (check the "
        "sources; --force writes it anyway)\n"
    )
    assert sorted(os.listdir(control)) == [".morercpthosts.cdb.lock", "morercpthosts"]
    assert newmrh(tmp_path, "--force").returncode == 0
    dump = subprocess.run(
        [cdb_prog, "-d", str(control / "morercpthosts.cdb")], capture_output=True, check=True
    ).stdout
    assert dump == b"\n"


def test_missing_file_is_an_error_and_writes_nothing(control, tmp_path):
    proc = newmrh(tmp_path)
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit newmrh: fatal: {control}/morercpthosts: control file is missing\n"
    )
    assert os.listdir(control) == []


def test_bad_utf8_names_the_line_and_keeps_old_cdb(control, tmp_path):
    (control / "morercpthosts").write_bytes(b"example.com\n")
    assert newmrh(tmp_path).returncode == 0
    before = (control / "morercpthosts.cdb").read_bytes()
    (control / "morercpthosts").write_bytes(b"example.com\nbad\xff.example\n")
    proc = newmrh(tmp_path)
    assert proc.returncode == 111
    assert f"{control}/morercpthosts:2: not valid UTF-8 text" in proc.stderr
    assert (control / "morercpthosts.cdb").read_bytes() == before
    assert sorted(os.listdir(control)) == [
        ".morercpthosts.cdb.lock",
        "morercpthosts",
        "morercpthosts.cdb",
    ]


def test_a_sharp_shrink_is_refused_without_force(control, tmp_path):
    (control / "morercpthosts").write_bytes(b"".join(b"d%d.example\n" % i for i in range(10)))
    assert newmrh(tmp_path).returncode == 0
    before = (control / "morercpthosts.cdb").read_bytes()
    (control / "morercpthosts").write_bytes(b"d1.example\n")
    proc = newmrh(tmp_path)
    assert proc.returncode == 111
    assert "would shrink from 10 to 1 domains (90 % fewer, limit 20 %)" in proc.stderr
    assert (control / "morercpthosts.cdb").read_bytes() == before
    assert newmrh(tmp_path, "--force").returncode == 0


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_directory_where_the_cdb_goes_is_named(control, tmp_path, force):
    # A18: a morercpthosts.cdb directory said "cannot read cdb: No such device", no file name
    (control / "morercpthosts").write_bytes(b"example.com\n")
    target = control / "morercpthosts.cdb"
    target.mkdir()
    proc = newmrh(tmp_path, *force)
    assert (proc.returncode, proc.stdout) == (111, "")
    assert proc.stderr == (
        f"qmailkit newmrh: fatal: {target}: is a directory, not a regular file "
        "(replace it with a regular file)\n"
    )
    assert os.listdir(target) == []
