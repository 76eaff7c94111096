"""convert-multilog as root over directories others write: the attacks of the adversarial test.

Each test redoes a reproduction of findings A2, A3 and A4 (``su nobody`` there is
``os.chown`` to nobody here) and checks that the victim file is untouched, the
exit code and the exact message; then the order of fsync, journal, unlink.
"""

from __future__ import annotations

import grp
import gzip
import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from support.logs import day_files, label, run_cli, service, write_rotated

from qmailkit.logs import journal
from qmailkit.logs.convert import Options, convert_all

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
NAME = "@4000000066322b2e0a1b2c3d.s"  # 2024-05-01 11:44:36 UTC
LINE = b"@4000000066322b2e0a1b2c3d hello; touch /tmp/PWNED\n"
T0 = 1_700_000_000 * 10**9
UTC = {"TZ": "UTC"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks need root and nobody")


def _cli(root: Path, *args: str):
    return run_cli(
        *args,
        "--service-dir",
        str(root / "scan"),
        "--log-dir",
        str(root / "log"),
        env=UTC,
        timeout=60,
    )


def _scan(root: Path) -> Path:
    main = root / "scan" / "svc" / "log" / "main"
    main.mkdir(parents=True)
    (root / "log").mkdir()
    for d in (root, root / "scan", root / "scan" / "svc", root / "scan" / "svc" / "log"):
        os.chmod(d, 0o755)
    return main


def _fatal(message: str) -> bytes:
    return f"qmailkit convert-multilog: fatal: {message}\n".encode()


def _failed(summary: str) -> bytes:
    return f"convert-multilog: {summary}\n".encode()


# -- A2: the state directory and the journals ---------------------------------------------------


def _first_run(root: Path) -> Path:
    """The finding's set-up: one converted file, then LOGDIR made writable by nogroup."""
    main = _scan(root)
    (main / NAME).write_bytes(LINE)
    assert _cli(root, "-q").returncode == 0
    state = root / "log" / ".convert-multilog"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and state.stat().st_uid == 0
    os.chown(root / "log", 0, NOGROUP)
    os.chmod(root / "log", 0o775)
    (main / NAME).write_bytes(LINE)  # something to do on the next run
    return main


def _victims(root: Path) -> dict[str, bytes]:
    victims = root / "victims"
    victims.mkdir()
    for name in ("delete-me", "truncate-me"):
        (victims / name).write_bytes(b"important\n")
    return {p.name: p.read_bytes() for p in victims.iterdir()}


def test_a2_planted_symlink_state_dir_is_refused(tmp_path):
    root = tmp_path / "a6"
    root.mkdir()
    _first_run(root)
    before = _victims(root)
    evil = root / "evil"
    evil.mkdir()
    os.chown(evil, NOBODY, NOGROUP)
    # as nobody: move the root-owned state dir aside, link in its own, write a journal
    log = root / "log"
    os.rename(log / ".convert-multilog", log / ".moved")
    os.symlink(evil, log / ".convert-multilog")
    os.lchown(log / ".convert-multilog", NOBODY, NOGROUP)
    (evil / "svc.journal").write_text(
        json.dumps({"inputs": ["../../../../victims/delete-me"], "done": True})
    )
    res = _cli(root, "-v")
    assert (res.returncode, res.stdout) == (111, b"")
    assert res.stderr == _fatal(
        f"{log}/.convert-multilog: state directory is a symbolic link, not a directory "
        "(remove it (it may have been planted) and run again)"
    )
    assert {p.name: p.read_bytes() for p in (root / "victims").iterdir()} == before
    assert day_files(log) == {"svc.2024-05-01": FIRST}  # the first run's line only
    assert (root / "scan" / "svc" / "log" / "main" / NAME).exists()


FIRST = b"2024-05-01 11:44:36.169552957 hello; touch /tmp/PWNED\n"


@pytest.mark.parametrize(
    ("owner", "mode", "problem"),
    [
        (NOBODY, 0o700, "is owned by uid 65534, not 0"),
        (0, 0o770, "has mode 0770; group and others must have no access"),
    ],
)
def test_a2_state_dir_of_another_owner_or_open_mode_is_refused(tmp_path, owner, mode, problem):
    root = tmp_path / "a6"
    root.mkdir()
    _first_run(root)
    log = root / "log"
    os.rename(log / ".convert-multilog", log / ".moved")
    os.mkdir(log / ".convert-multilog")
    os.chown(log / ".convert-multilog", owner, NOGROUP)
    os.chmod(log / ".convert-multilog", mode)
    res = _cli(root)
    assert res.returncode == 111
    assert res.stderr == _fatal(
        f"{log}/.convert-multilog: state directory {problem} "
        "(remove it (it may have been planted) and run again)"
    )


_BAD_JOURNALS = [
    (
        {"inputs": ["../../../../victims/delete-me"], "done": True},
        "names an input '../../../../victims/delete-me' that is not a rotated file name",
    ),
    (
        {"inputs": ["x"], "sizes": {"../victims/truncate-me": 4}},
        "names an input 'x' that is not a rotated file name",
    ),
    (
        {"inputs": [NAME], "sizes": {"../victims/truncate-me": 4}},
        "names a day file '../victims/truncate-me' that is not svc.YYYY-MM-DD",
    ),
    (
        {"inputs": [NAME], "sizes": {"../victims/truncate-me": -1}},
        "names a day file '../victims/truncate-me' that is not svc.YYYY-MM-DD",
    ),
    (
        {"inputs": [NAME], "sizes": {"other.2024-05-01": 4}},
        "names a day file 'other.2024-05-01' that is not svc.YYYY-MM-DD",
    ),
    ({"inputs": [NAME], "sizes": {"svc.2024-05-01": "4"}}, "has a bad size '4' for svc.2024-05-01"),
    (
        {"inputs": ["@../../victims/x.s"], "done": True},
        "names an input '@../../victims/x.s' that is not a rotated file name",
    ),
    ({"last": "../../victims/truncate-me"}, "has a bad date '../../victims/truncate-me'"),
    (
        {"inputs": [NAME], "dir": "../../victims", "done": True},
        "names a directory '../../victims' that is not a retired svc",
    ),
    ([NAME], "is not a JSON object"),
]


@pytest.mark.parametrize(("journal", "problem"), _BAD_JOURNALS)
def test_a2_a_journal_naming_other_files_is_refused_and_nothing_is_touched(
    tmp_path, journal, problem
):
    """Even in the real state directory (a swap after the check): names are checked."""
    root = tmp_path / "a6"
    root.mkdir()
    main = _first_run(root)
    before = _victims(root)
    log = root / "log"
    (log / ".convert-multilog" / "svc.journal").write_text(json.dumps(journal))
    res = _cli(root)
    assert (res.returncode, res.stdout) == (111, b"")
    assert res.stderr == _failed(
        f"svc: 0 files, 0 lines into 0 day files; FAILED: {log}/.convert-multilog/svc.journal: "
        f"journal {problem}; nothing done (convert-multilog did not write this: check it by "
        "hand; if no run was interrupted, remove it)"
    )
    assert {p.name: p.read_bytes() for p in (root / "victims").iterdir()} == before
    assert day_files(log) == {"svc.2024-05-01": FIRST}
    assert (main / NAME).read_bytes() == LINE


# -- A3: day files ------------------------------------------------------------------------------


def test_a3_symlinked_day_file_is_refused(tmp_path):
    root = tmp_path / "a4"
    main = _scan(root)
    (root / "etc").mkdir()
    passwd = root / "etc" / "passwd"
    passwd.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    os.symlink(passwd, root / "log" / "svc.2024-05-01")  # by whoever can write LOGDIR
    (main / NAME).write_bytes(LINE)
    res = _cli(root)
    assert (res.returncode, res.stdout) == (111, b"")
    assert res.stderr == _failed(
        f"svc: 0 files, 0 lines into 0 day files; FAILED: {root}/log/svc.2024-05-01: is a "
        f"symbolic link (not followed) (while converting {main}/{NAME}) (day files must be "
        "regular files: remove it or move it away; the input is kept and converted on the "
        "next run)"
    )
    assert passwd.read_bytes() == b"root:x:0:0:root:/root:/bin/bash\n"
    assert (main / NAME).read_bytes() == LINE
    os.unlink(root / "log" / "svc.2024-05-01")
    assert _cli(root).returncode == 0  # the admin removed it: converted
    assert passwd.read_bytes() == b"root:x:0:0:root:/root:/bin/bash\n"
    assert day_files(root / "log") == {"svc.2024-05-01": FIRST}


def test_a3_roll_back_never_truncates_through_a_symlink(tmp_path):
    root = tmp_path / "a4"
    main = _scan(root)
    victim = root / "victim"
    victim.write_bytes(b"important content\n")
    (main / NAME).write_bytes(LINE)
    state = journal.state_dir(root / "log")
    # an interrupted run's journal, then the day file replaced by a symlink
    (state / "svc.journal").write_text(
        json.dumps({"inputs": [NAME], "sizes": {"svc.2024-05-01": 4}, "last": None})
    )
    os.symlink(victim, root / "log" / "svc.2024-05-01")
    res = _cli(root)
    assert res.returncode == 111
    assert res.stderr == _failed(
        f"svc: 0 files, 0 lines into 0 day files; FAILED: {root}/log/svc.2024-05-01: is a "
        "symbolic link (not followed); cannot cut it back to 4 bytes (day files must be "
        "regular files: remove it, then run again)"
    )
    assert victim.read_bytes() == b"important content\n"
    assert (main / NAME).read_bytes() == LINE


def test_a3_a_fifo_as_day_file_neither_hangs_nor_is_written(tmp_path):
    root = tmp_path / "a4"
    main = _scan(root)
    os.mkfifo(root / "log" / "svc.2024-05-01")
    (main / NAME).write_bytes(LINE)
    res = _cli(root)
    assert res.returncode == 111
    assert res.stderr == _failed(
        f"svc: 0 files, 0 lines into 0 day files; FAILED: {root}/log/svc.2024-05-01: is "
        f"not a regular file (while converting {main}/{NAME}) (day files must be "
        "regular files: remove it or move it away; the input is kept and converted on the "
        "next run)"
    )
    assert (main / NAME).read_bytes() == LINE


# -- A4: what the log user puts in log/main -------------------------------------------------------


def _b4(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "b4"
    main = _scan(root)
    os.chown(main, NOBODY, NOGROUP)
    return root, main


def _refused_input(path: Path, reason: str) -> bytes:
    return _failed(
        f"svc: 0 files, 0 lines into 0 day files; FAILED: {path}: {reason} (kept: "
        "it and the files after it wait until it is replaced by a regular file or "
        "removed)"
    )


def test_a4_symlink_to_a_root_only_file_is_not_copied(tmp_path):
    root, main = _b4(tmp_path)
    shadow = root / "shadow"
    shadow.write_bytes(b"root:SECRET-HASH:19000:0:99999:7:::\n")
    os.chmod(shadow, 0o600)
    os.symlink(shadow, main / NAME)  # as nobody
    os.lchown(main / NAME, NOBODY, NOGROUP)
    res = _cli(root)
    assert (res.returncode, res.stdout) == (111, b"")
    assert res.stderr == _refused_input(main / NAME, "is a symbolic link (not followed)")
    assert day_files(root / "log") == {}
    assert os.path.islink(main / NAME)


def test_a4_a_fifo_does_not_hang_or_keep_the_lock(tmp_path):
    root, main = _b4(tmp_path)
    os.mkfifo(main / NAME)
    os.chown(main / NAME, NOBODY, NOGROUP)
    for _ in range(2):  # the second run is not locked out by a hanging first one
        res = _cli(root)  # (with a timeout: it used to block forever)
        assert res.returncode == 111
        assert res.stderr == _refused_input(main / NAME, "is a FIFO, not a regular file")


def test_a4_a_symlink_to_dev_zero_is_not_read(tmp_path):
    root, main = _b4(tmp_path)
    os.symlink("/dev/zero", main / NAME)
    res = subprocess.run(
        [
            "sh",
            "-c",
            'ulimit -v 1500000; exec "$@"',
            "sh",
            *run_cli.__globals__["QMAILKIT"],
            "convert-multilog",
            "--service-dir",
            str(root / "scan"),
            "--log-dir",
            str(root / "log"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 111
    assert res.stderr == _refused_input(main / NAME, "is a symbolic link (not followed)")


def test_a4_files_over_the_cap_are_refused_kept_and_wait(tmp_path):
    """A sparse 64 MiB + 1 file, and a gzip bomb: named, kept, later files wait."""
    from qmailkit.logs.logdir import MAX_FILE

    root, main = _b4(tmp_path)
    first, big, after = (main / (label(T0 + i * 10**9).decode() + ".s") for i in range(3))
    first.write_bytes(label(T0) + b" before\n")
    with open(big, "wb") as fh:
        fh.truncate(MAX_FILE + 1)
    after.write_bytes(label(T0 + 2 * 10**9) + b" after\n")
    res = _cli(root)
    assert res.returncode == 111
    hint = "(kept: convert it by hand (tai64nlocal) and remove it; the files after it wait)"
    assert res.stderr == _failed(
        f"svc: 1 file, 1 line into 1 day file; FAILED: {big}: larger than 64 MiB, more than "
        f"any logger writes; not read {hint}"
    )
    assert sorted(main.iterdir()) == [big, after]
    assert day_files(root / "log") == {"svc.2023-11-14": b"2023-11-14 22:13:20.000000000 before\n"}
    big.write_bytes(gzip.compress(b"\0" * (MAX_FILE + 1)))
    res = _cli(root)
    assert res.returncode == 111
    assert res.stderr == _failed(
        f"svc: 0 files, 0 lines into 0 day files; FAILED: {big}: larger than 64 MiB when "
        f"decompressed, more than any logger writes; not read {hint}"
    )
    assert sorted(main.iterdir()) == [big, after]


# -- A18: a full log directory is named as such --------------------------------------------------


def test_a18_enospc_names_the_day_file_not_the_input(tmp_path):
    ldir = tmp_path / "small"
    ldir.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(ldir)]
    assert subprocess.run(mount, capture_output=True, check=False).returncode == 0
    try:
        sdir = tmp_path / "s"
        lines = [label(T0 + i * 10**6) + b" %d " % i + b"x" * 200 for i in range(2000)]
        (path,) = write_rotated(service(sdir, "x"), [lines])
        res = convert_all(Options(service_dir=sdir, log_dir=ldir, jobs=1))
        assert res.services[0].error == (
            f"{ldir}/x.2023-11-14: No space left on device (while converting {path}) "
            f"(free some space in {ldir}; the input is kept and converted on the next run)"
        )
        assert day_files(ldir) == {}  # cut back: the new day file removed again
        assert path.exists()
    finally:
        subprocess.run(["umount", str(ldir)], check=True)


# -- durability: the order of fsync, journal, unlink ----------------------------------------------


def test_fsync_order_day_files_then_journal_then_unlink_then_directory(tmp_path, monkeypatch):
    """Recorded at the OS boundary: removing any of these fsyncs fails the test."""
    monkeypatch.setenv("TZ", "UTC")
    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    day = 86_400 * 10**9
    inputs = write_rotated(main, [[label(T0) + b" a"], [label(T0 + day) + b" b"]])
    events: list[tuple[str, str]] = []
    real = {n: getattr(os, n) for n in ("fsync", "rename", "unlink")}

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real["fsync"](fd)

    def rename(src, dst, **kw):
        state = Path(src).read_bytes() if str(dst).endswith(".journal") else b""
        events.append(("rename", f"{dst} {state.decode()}"))
        return real["rename"](src, dst, **kw)

    def unlink(path, **kw):
        events.append(("unlink", os.fspath(path)))
        return real["unlink"](path, **kw)

    for name, fn in (("fsync", fsync), ("rename", rename), ("unlink", unlink)):
        monkeypatch.setattr(os, name, fn)
    assert convert_all(Options(service_dir=sdir, log_dir=ldir, jobs=1)).ok
    monkeypatch.undo()
    state = ldir / ".convert-multilog"

    def at(event: tuple[str, str]) -> int:
        assert event in events, (event, events)
        return events.index(event)

    def journal_written(content: str) -> int:
        """The journal is fsync'd, renamed into place, and its directory fsync'd."""
        found = [
            i
            for i, (op, what) in enumerate(events)
            if op == "rename" and what.startswith(f"{state}/x.journal {content}")
        ]
        assert found, (content, events)
        i = found[0]
        assert events[i - 1][0] == "fsync" and ".x.journal.qmailkit-tmp." in events[i - 1][1]
        assert events[i + 1] == ("fsync", str(state))
        return i

    first_touch = journal_written('{"inputs": [')
    days = [at(("fsync", f"{ldir}/x.2023-11-14")), at(("fsync", f"{ldir}/x.2023-11-15"))]
    new_files = at(("fsync", str(ldir)))  # the day files are new: their directory too
    done = journal_written('{"done": true')
    gone = [at(("unlink", str(p))) for p in inputs]
    main_synced = at(("fsync", str(main)))
    forget = journal_written('{"last": "2023-11-15"}')
    assert first_touch < min(days) and max(days) < new_files < done < min(gone)
    assert max(gone) < main_synced < forget
    assert day_files(ldir) == {
        "x.2023-11-14": b"2023-11-14 22:13:20.000000000 a\n",
        "x.2023-11-15": b"2023-11-15 22:13:20.000000000 b\n",
    }
