"""qmailkit.cdb: byte-identical to tinycdb/freecdb, robust against bad files, atomic."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import need
from support.cdb import freecdb_make, generated_records, tinycdb_make

from qmailkit import cdb
from qmailkit.cdb import backends
from qmailkit.cdb import format as cdb_format
from qmailkit.errors import InputError, QmailkitError

BACKENDS = ["native", "cdbx", "pure"]


def temps_in(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".qmailkit-tmp." in name]


def test_every_backend_is_available_and_the_c_writer_comes_first():
    assert backends.get().name == "native"
    assert backends.get("cdbx").name == "cdbx"
    assert backends.get("pure").name == "pure"
    with pytest.raises(ValueError, match="unknown cdb backend"):
        backends.get("nonesuch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_bulk_path_of_every_backend_writes_tinycdbs_bytes(tmp_path, backend):
    """What a backend offers is declared by its Makers; the bulk paths of one without its
    own (cdbx, pure) go record by record, and every path gives the C tool's bytes."""
    records = [(b"k%d" % i, b"v%d" % i) for i in range(500)] + [(b"k1", b"again"), (b"", b"")]
    want = tinycdb_make(tmp_path / "tinycdb.cdb", records)
    keys, values = [k for k, _ in records], [v for _, v in records]
    with cdb.make(tmp_path / "many.cdb", backend=backend) as writer:
        writer.add_many(keys, values)
    assert (tmp_path / "many.cdb").read_bytes() == want
    with cdb.make(tmp_path / "lines.cdb", backend=backend) as writer:
        writer.add_lines(b"\n".join(keys), b"\n".join(values))
        assert writer.feeds_cdbmake is (backend == "native")
        if not writer.feeds_cdbmake:
            with pytest.raises(ValueError, match="does not parse cdbmake input"):
                writer.feed_cdbmake(b"+1,1:a->b\n\n", 0)
    assert (tmp_path / "lines.cdb").read_bytes() == want
    assert writer.count == len(records)


def test_djb_hash_known_values():
    assert cdb_format.djb_hash(b"") == 5381
    # h = 5381*33 ^ ord('a')
    assert cdb_format.djb_hash(b"a") == (5381 * 33) ^ 97
    assert 0 <= cdb_format.djb_hash(bytes(range(256)) * 50) <= 0xFFFFFFFF


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed,count", [(1, 0), (2, 1), (3, 50), (4, 3000)])
def test_same_bytes_as_tinycdb_and_freecdb(tmp_path, backend, seed, count):
    records = generated_records(seed, count)
    ours = tmp_path / "ours.cdb"
    assert cdb.write(ours, records, backend=backend) == len(records)
    assert ours.read_bytes() == tinycdb_make(tmp_path / "tiny.cdb", records)
    assert ours.read_bytes() == freecdb_make(tmp_path / "free.cdb", records)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_files_of_the_c_tools(tmp_path, backend):
    records = generated_records(7, 2000)
    for made in (
        tinycdb_make(tmp_path / "t.cdb", records),
        freecdb_make(tmp_path / "f.cdb", records),
    ):
        path = tmp_path / "c.cdb"
        path.write_bytes(made)
        with cdb.Reader(path, backend=backend) as reader:
            assert list(reader.items()) == records
            assert list(reader.keys()) == [k for k, _ in records]
            assert len(reader) == len(records)
            expected: dict[bytes, list[bytes]] = {}
            for key, value in records:
                expected.setdefault(key, []).append(value)
            for key, values in expected.items():
                assert reader.get_all(key) == values
                assert reader.get(key) == values[0]
                assert key in reader
            assert reader.get(b"\xffno such key\xff") is None
            assert reader.get_all(b"\xffno such key\xff") == []
            assert b"\xffno such key\xff" not in reader


def test_c_tools_read_our_files(tmp_path):
    cdb_tool, cdbget = need("cdb", "cdbget")
    records = [(b"alpha", b"1"), (b"beta", b""), (b"alpha", b"2"), (b"", b"empty key")]
    path = tmp_path / "ours.cdb"
    cdb.write(path, records)
    dump = subprocess.run([cdb_tool, "-d", str(path)], capture_output=True, check=True).stdout
    assert dump == b"+5,1:alpha->1\n+4,0:beta->\n+5,1:alpha->2\n+0,9:->empty key\n\n"
    with open(path, "rb") as fh:
        got = subprocess.run([cdbget, "alpha"], stdin=fh, capture_output=True, check=True)
    assert got.stdout == b"1"


record = st.tuples(st.binary(max_size=24), st.binary(max_size=24))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(record, max_size=60)
    | st.lists(st.sampled_from([(b"k", b"v"), (b"", b""), (b"k", b"")]), max_size=20)
)
def test_property_backends_agree_and_find_every_record(tmp_path, records):
    a, b, c = tmp_path / "a.cdb", tmp_path / "b.cdb", tmp_path / "c.cdb"
    cdb.write(a, records, backend="cdbx")
    cdb.write(b, records, backend="pure")
    with cdb.make(c, backend="native") as writer:  # the bulk path
        writer.add_many([k for k, _ in records], [v for _, v in records])
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    for backend in BACKENDS:
        with cdb.Reader(a, backend=backend) as reader:
            assert list(reader.items()) == records
            assert len(reader) == len(records)
            for key, _ in records:
                assert reader.get_all(key) == [v for k, v in records if k == key]


def test_empty_cdb_is_2048_bytes(tmp_path):
    path = tmp_path / "empty.cdb"
    cdb.write(path, [])
    assert path.stat().st_size == 2048
    with cdb.Reader(path) as reader:
        assert len(reader) == 0 and list(reader.items()) == [] and reader.get(b"") is None


# -- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_truncation_is_a_clear_error(tmp_path, backend):
    good = tinycdb_make(tmp_path / "good.cdb", generated_records(11, 40))
    path = tmp_path / "broken.cdb"
    for size in range(0, len(good), 7):
        path.write_bytes(good[:size])
        with pytest.raises(InputError) as caught:
            cdb.Reader(path, backend=backend)
        assert str(path) in str(caught.value)
        assert "not a valid cdb" in str(caught.value)
        assert caught.value.exit_code == 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_files_never_crash_or_hang(tmp_path, backend):
    records = generated_records(12, 60)
    good = tinycdb_make(tmp_path / "good.cdb", records)
    path = tmp_path / "corrupt.cdb"
    rng = random.Random(5)
    probes = [k for k, _ in records[:10]] + [b"missing"]
    bad_values = [
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x00",
        b"\x00\x08\x00\x00",
        b"\xf0\xff\xff\x7f",
    ]
    errors = 0
    for _ in range(400):
        data = bytearray(good)
        if rng.random() < 0.5:
            pos = rng.randrange(0, len(data) - 4)
            data[pos : pos + 4] = rng.choice(bad_values)
        else:
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            with cdb.Reader(path, backend=backend) as reader:
                list(reader.items())
                for key in probes:
                    reader.get_all(key)
                len(reader)
        except InputError as err:
            assert str(path) in str(err)
            errors += 1
    assert errors > 50  # the damage was noticed, as an InputError every time


def test_missing_file_names_it(tmp_path):
    with pytest.raises(QmailkitError) as caught:
        cdb.Reader(tmp_path / "nope.cdb")
    assert "nope.cdb" in str(caught.value) and "cannot open cdb" in str(caught.value)


# -- atomic writing -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_exception_leaves_old_file_and_no_temp(tmp_path, backend):
    path = tmp_path / "db.cdb"
    cdb.write(path, [(b"old", b"1")])
    before = path.read_bytes()
    with pytest.raises(RuntimeError), cdb.make(path, backend=backend) as writer:
        writer.add(b"new", b"2")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == before
    assert temps_in(tmp_path) == []


def test_exception_creates_nothing_when_there_was_no_file(tmp_path):
    with pytest.raises(RuntimeError), cdb.make(tmp_path / "db.cdb") as writer:
        writer.add(b"k", b"v")
        raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_mode_is_exact_and_replaces(tmp_path):
    path = tmp_path / "db.cdb"
    cdb.write(path, [(b"a", b"1")], mode=0o600)
    assert path.stat().st_mode & 0o7777 == 0o600
    old_umask = os.umask(0o077)
    try:
        cdb.write(path, [(b"b", b"2")], mode=0o644)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o7777 == 0o644
    with cdb.Reader(path) as reader:
        assert list(reader.items()) == [(b"b", b"2")]


def test_owner_is_applied(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")  # the suite runs as root in CI
    path = tmp_path / "db.cdb"
    cdb.write(path, [(b"a", b"1")], owner=(65534, 65534))
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


def test_keys_and_values_must_be_bytes(tmp_path):
    with pytest.raises(TypeError), cdb.make(tmp_path / "db.cdb") as writer:
        writer.add("text", b"")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_limit_is_a_clear_error(tmp_path, monkeypatch, backend):
    path = tmp_path / "db.cdb"
    cdb.write(path, [(b"old", b"")])
    before = path.read_bytes()
    # 2048 header + 3 records of (8 + 16 + 10 bytes) = 2150: the third record crosses 2140.
    monkeypatch.setattr(cdb_format, "MAX_SIZE", 2140)
    with pytest.raises(QmailkitError) as caught, cdb.make(path, backend=backend) as writer:
        for i in range(3):
            writer.add(b"key%02d" % i, b"vvvvv")
    message = str(caught.value)
    assert str(path) in message and "limit of 2,141 bytes" in message and "record 3" in message
    assert path.read_bytes() == before
    assert temps_in(tmp_path) == []


def test_size_limit_applies_to_bulk_adds(tmp_path, monkeypatch):
    monkeypatch.setattr(cdb_format, "MAX_SIZE", 2100)
    limit = pytest.raises(QmailkitError, match="format's limit")
    with limit, cdb.make(tmp_path / "db.cdb") as writer:
        writer.add_many([b"k1", b"k2"], [b"v" * 10, b"v" * 10])
    assert os.listdir(tmp_path) == []


def test_exactly_at_the_limit_is_fine(tmp_path, monkeypatch):
    records = [(b"key%02d" % i, b"vvvvv") for i in range(3)]
    monkeypatch.setattr(cdb_format, "MAX_SIZE", 2048 + 3 * (8 + 16 + 10))
    cdb.write(tmp_path / "db.cdb", records)
    assert (tmp_path / "db.cdb").stat().st_size == cdb_format.MAX_SIZE


def test_stats(tmp_path):
    path = tmp_path / "db.cdb"
    cdb.write(path, [(b"a", b"1"), (b"bb", b""), (b"a", b"22")])
    st_ = cdb.stats(path)
    assert (st_.records, st_.unique_keys, st_.key_bytes, st_.value_bytes) == (3, 2, 4, 3)
    assert (st_.min_key, st_.max_key, st_.slots) == (1, 2, 6)
    assert sum(st_.distances) == 3 and len(st_.distances) == 11
    assert st_.size == path.stat().st_size


# -- install: the one guarded, locked, only-if-changed replacement -----------------------------


def _fill(records):
    def fill(writer):
        for key, value in records:
            writer.add(key, value)

    return fill


GUARD = cdb.Guard("entries", "does harm")


def test_install_creates_replaces_and_leaves_only_the_lock(tmp_path):
    (tinycdb,) = need("cdb")
    target = tmp_path / "db.cdb"
    records = [(b"b", b"2"), (b"a", b"1")]
    done = cdb.install(target, _fill(records), guard=GUARD, mode=0o640)
    assert done == cdb.Installed(str(target), True, 2, None, "created")
    assert target.read_bytes() == tinycdb_make(tmp_path / "ref.cdb", records)
    assert os.stat(target).st_mode & 0o7777 == 0o640
    done = cdb.install(target, _fill(records + [(b"c", b"3")]), guard=GUARD, mode=0o640)
    assert (done.written, done.count, done.previous, done.reason) == (True, 3, 2, "replaced")
    assert sorted(os.listdir(tmp_path)) == [".db.cdb.lock", "db.cdb", "ref.cdb"]
    assert (
        subprocess.run([tinycdb, "-q", str(target), "c"], capture_output=True, check=True).stdout
        == b"3"
    )


def test_install_only_if_changed_compares_records_in_any_order(tmp_path):
    target = tmp_path / "db.cdb"
    cdb.install(target, _fill([(b"a", b"1"), (b"b", b"2")]))
    os.utime(target, ns=(1, 1))
    done = cdb.install(target, _fill([(b"b", b"2"), (b"a", b"1")]), only_if_changed=True)
    assert (done.written, done.reason, done.previous) == (False, "unchanged", 2)
    assert target.stat().st_mtime_ns == 1
    os.chmod(target, 0o600)
    done = cdb.install(target, _fill([(b"a", b"1"), (b"b", b"2")]), only_if_changed=True)
    assert done.reason == "rewritten (records unchanged; mode or owner fixed)"
    assert os.stat(target).st_mode & 0o777 == 0o644


def test_install_guard_counts_entries_not_fixed_records(tmp_path):
    target = tmp_path / "users.cdb"
    guard = cdb.Guard("entries", "drops every route", name="users/cdb", uncounted=1)
    five = [(b"!%d" % i, b"v") for i in range(5)] + [(b"", b"-")]
    assert cdb.install(target, _fill(five), guard=guard).count == 5
    before = target.read_bytes()
    with pytest.raises(InputError) as exc:
        cdb.install(target, _fill([(b"", b"")]), guard=guard)
    assert exc.value.message == "no entries found: an empty users/cdb drops every route"
    with pytest.raises(InputError) as exc:
        cdb.install(target, _fill(five[:3] + five[-1:]), guard=guard)
    assert exc.value.message == "would shrink from 5 to 3 entries (40 % fewer, limit 20 %)"
    assert target.read_bytes() == before and temps_in(tmp_path) == []
    forced = cdb.Guard("entries", "drops every route", force=True, uncounted=1)
    assert cdb.install(target, _fill([(b"", b"")]), guard=forced).previous == 5


def test_install_corrupt_old_file_needs_force_only_with_a_guard(tmp_path):
    target = tmp_path / "db.cdb"
    target.write_bytes(b"garbage")
    with pytest.raises(InputError) as exc:
        cdb.install(target, _fill([(b"a", b"")]), guard=GUARD)
    assert exc.value.hint == "the shrink guard needs the old file; use --force to replace it"
    assert target.read_bytes() == b"garbage"
    done = cdb.install(target, _fill([(b"a", b"")]), only_if_changed=True)  # no guard: replaced
    assert (done.written, done.previous, done.reason) == (True, None, "replaced")


def test_install_lock_is_shared_and_can_be_held_by_the_caller(tmp_path):
    from qmailkit.errors import LockBusy

    target = tmp_path / "db.cdb"
    with cdb.lock(target, what="another run of the test"):
        with pytest.raises(LockBusy) as exc:
            cdb.install(target, _fill([(b"a", b"")]), what="another run of the test")
        assert str(exc.value) == (
            f"{tmp_path}/.db.cdb.lock: another run of the test holds the "
            "lock (try again when it has finished)"
        )
        assert cdb.install(target, _fill([(b"a", b"")]), lock=False).written
    assert not (tmp_path / "nothere").exists()
    with pytest.raises(InputError, match="the directory for the cdb does not exist"):
        cdb.install(tmp_path / "nothere" / "db.cdb", _fill([]))


def test_install_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    target = tmp_path / "db.cdb"
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
        events.append("fsync dir" if is_dir else "fsync file")
        real_fsync(fd)

    def rename(src, dst):
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    cdb.install(target, _fill([(b"a", b"1")]), guard=GUARD)
    assert events == ["fsync file", "rename", "fsync dir"]


def test_install_a_failing_fill_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "db.cdb"
    cdb.install(target, _fill([(b"a", b"1")]))
    before = target.read_bytes()

    def fill(writer):
        writer.add(b"x", b"y")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cdb.install(target, fill)
    assert target.read_bytes() == before and temps_in(tmp_path) == []
