"""Hostile inputs for every command, run as real subprocesses (issue 9 §1).

Each case builds its inputs in ``work/`` and runs one command with a timeout.
Whatever the input (FIFOs, directories, symlinks to /dev/zero or to files
outside, closed or endless standard input, binary and non-UTF-8 bytes, huge
numbers), the command must:

* end on its own (no hang: a FIFO is never opened for a blocking read);
* exit 0, 100 or 111, with no Python traceback on stderr;
* leave what lies outside ``work/`` alone: ``victim`` (a file) and
  ``victimdir/`` (a directory) stay byte for byte as they were, and nothing
  new appears beside them.

Cases that fail today in another area are listed in XFAIL (strict) with the
finding they belong to: when that fix lands, the case passes, strict xfail
turns it into a failure, and its line is removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
QK = [sys.executable, "-m", "qmailkit"]
TIMEOUT = 30
VICTIM = b"root:x:0:0:root:/root:/bin/sh\nthe file an attacker wants changed\n"
JUNK = bytes(range(256)) * 4 + b"\n\xff\xfe\x00:allow\n+1,1:\xff->\x00\n"


@dataclass(frozen=True)
class Run:
    argv: list[str]
    stdin: bytes | str | None = b""  # bytes, "closed", or a path to open


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path, Path], Run]  # (work, outside) -> what to run
    codes: tuple[int, ...] = (0, 100, 111)


# -- building blocks ---------------------------------------------------------------------------


def put(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def zero_link(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def victim_link(path: Path, outside: Path) -> Path:
    path.symlink_to(outside / "victim")
    return path


def qmail_tree(work: Path) -> Path:
    """A tiny qmail home with one local user (enough for newu, newmrh, mkvalidrcptto, mkauth)."""
    q = work / "qmail"
    for sub in ("control", "users", "alias"):
        (q / sub).mkdir(parents=True, exist_ok=True)
    (q / "control" / "rcpthosts").write_text("example.com\n")
    (q / "control" / "locals").write_text("example.com\n")
    (q / "control" / "morercpthosts").write_text("example.net\n")
    (q / "users" / "assign").write_text("=bob:bob:1000:1000:/nonexistent:-::\n.\n")
    home = work / "home" / "bob"
    home.mkdir(parents=True)
    os.chown(home, 1000, 1000)
    (work / "passwd").write_text(f"bob:x:1000:1000::{home}:/bin/sh\n")
    (work / "shadow").write_text("bob:$1$salt$hash:19000:0:99999:7:::\n")
    (work / "vpopmail").mkdir()
    return q


def rcpt(work: Path, *args: str) -> list[str]:
    q = work / "qmail"
    return [
        str(BIN / "mkvalidrcptto"),
        "--qmail-home",
        str(q),
        "--vpopmail-home",
        str(work / "vpopmail"),
        "--passwd",
        str(work / "passwd"),
        *args,
    ]


def auth(work: Path, *args: str) -> list[str]:
    return [
        *QK,
        "auth",
        "build",
        "--qmail-home",
        str(work / "qmail"),
        "--passwd",
        str(work / "passwd"),
        "--shadow",
        str(work / "shadow"),
        "--min-uid",
        "1000",
        *args,
    ]


def good_cdb(path: Path) -> Path:
    subprocess.run([*QK, "cdb", "make", str(path)], input=b"+1,1:a->b\n\n", check=True)
    return path


def services_config(work: Path, extra: str = "") -> Path:
    path = work / "c.toml"
    path.write_text(f"""[supervisor]
scan_dir = "{work}/scan"
service_root = "{work}/root"
log_user = "nobody"
{extra}
[services.send]
type = "qmail-send"
""")
    (work / "scan").mkdir(exist_ok=True)
    return path


def log_tree(work: Path) -> tuple[Path, Path, Path]:
    """A scan dir with one service whose log/main holds rotated files, and a log dir."""
    main = work / "scan" / "svc" / "log" / "main"
    main.mkdir(parents=True)
    (work / "logs").mkdir()
    return work / "scan", main, work / "logs"


def convert(scan: Path, logs: Path) -> list[str]:
    return [*QK, "convert-multilog", "-q", "--service-dir", str(scan), "--log-dir", str(logs)]


LABEL = "@4000000066322b2e0a1b2c3d"


# -- the corpus --------------------------------------------------------------------------------

CASES: list[Case] = []


def case(id: str, codes: tuple[int, ...] = (0, 100, 111)):
    def add(setup):
        CASES.append(Case(id, setup, codes))
        return setup

    return add


# the documented exit 1 of auth check (the password does not match) and rcpt check (rejected)
AUTH_CHECK_CODES = RCPT_CHECK_CODES = (0, 1, 100, 111)


# cdb make / get / dump / stats
for kind, make_input in (
    ("fifo", lambda w, o: fifo(w / "x.cdb")),
    ("dir", lambda w, o: (w / "x.cdb").mkdir() or w / "x.cdb"),
    ("zero-link", lambda w, o: zero_link(w / "x.cdb")),
    ("victim-link-junk", lambda w, o: victim_link(w / "x.cdb", o)),
    ("missing", lambda w, o: w / "missing.cdb"),
    ("junk", lambda w, o: (w / "x.cdb").write_bytes(JUNK) and w / "x.cdb"),
):
    for verb in ("get", "dump", "stats"):

        def setup(w, o, make_input=make_input, verb=verb):
            path = make_input(w, o)
            return Run([*QK, "cdb", verb, str(path), *(["a"] if verb == "get" else [])])

        CASES.append(Case(f"cdb-{verb}-{kind}", setup))

case("cdb-get-key-not-utf8")(
    lambda w, o: Run([*QK, "cdb", "get", str(good_cdb(w / "x.cdb")), b"\xff\xfe"])
)
case("cdb-get-key-100k")(
    lambda w, o: Run([*QK, "cdb", "get", str(good_cdb(w / "x.cdb")), "k" * 100_000])
)
case("cdb-make-stdin-closed")(lambda w, o: Run([*QK, "cdb", "make", str(w / "x.cdb")], "closed"))
case("cdb-make-stdin-zero")(lambda w, o: Run([*QK, "cdb", "make", str(w / "x.cdb")], "/dev/zero"))
case("cdb-make-lines-stdin-zero")(
    lambda w, o: Run([*QK, "cdb", "make", "--lines", str(w / "x.cdb")], "/dev/zero")
)
case("cdb-make-stdin-urandom")(
    lambda w, o: Run([*QK, "cdb", "make", str(w / "x.cdb")], "/dev/urandom")
)
case("cdb-make-stdin-junk")(lambda w, o: Run([*QK, "cdb", "make", str(w / "x.cdb")], JUNK))
case("cdb-make-target-dir")(
    lambda w, o: (w / "x.cdb").mkdir() or Run([*QK, "cdb", "make", str(w / "x.cdb")], b"\n")
)
case("cdb-make-target-victim-link")(
    lambda w, o: Run([*QK, "cdb", "make", str(victim_link(w / "x.cdb", o))], b"+1,1:a->b\n\n")
)
case("cdb-make-planted-temp-link")(
    lambda w, o: (
        victim_link(w / f".x.cdb.qmailkit-tmp.{os.getpid()}", o),
        Run([*QK, "cdb", "make", str(w / "x.cdb")], b"+1,1:a->b\n\n"),
    )[1]
)
for mode in ("-1", "7777", "1777777", "9x", "99999999999999999999"):
    case(f"cdb-make-mode-{mode}")(
        lambda w, o, mode=mode: Run([*QK, "cdb", "make", f"--mode={mode}", str(w / "x.cdb")], b"\n")
    )

# tcprules
case("tcprules-stdin-closed")(
    lambda w, o: Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], "closed")
)
case("tcprules-stdin-urandom")(
    lambda w, o: Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], "/dev/urandom")
)
case("tcprules-stdin-zero")(
    lambda w, o: Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], "/dev/zero")
)
case("tcprules-stdin-junk")(
    lambda w, o: Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], JUNK)
)
case("tcprules-stdin-dir")(
    lambda w, o: Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], str(w))
)
case("tcprules-cdb-dir")(
    lambda w, o: (
        (w / "r.cdb").mkdir()
        or Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], b":allow\n")
    )
)
case("tcprules-tmp-dir")(
    lambda w, o: (
        (w / "r.tmp").mkdir()
        or Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.tmp")], b":allow\n")
    )
)
case("tcprules-tmp-victim-link")(
    lambda w, o: Run(
        [*QK, "tcprules", str(w / "r.cdb"), str(victim_link(w / "r.tmp", o))], b":allow\n"
    )
)
case("tcprules-cdb-victim-link")(
    lambda w, o: Run(
        [*QK, "tcprules", str(victim_link(w / "r.cdb", o)), str(w / "r.tmp")], b":allow\n"
    )
)
case("tcprules-same-path")(
    lambda w, o: Run([*QK, "tcprules", str(w / "r.cdb"), str(w / "r.cdb")], b":allow\n")
)
case("tcprules-tmp-other-fs")(
    lambda w, o: Run(
        [*QK, "tcprules", str(w / "r.cdb"), "/dev/shm/qmailkit-hostile.tmp"], b":allow\n"
    )
)

# tcprules check
for kind, make_cdb in (
    ("fifo", lambda w, o: fifo(w / "r.cdb")),
    ("dir", lambda w, o: (w / "r.cdb").mkdir() or w / "r.cdb"),
    ("zero-link", lambda w, o: zero_link(w / "r.cdb")),
    ("junk", lambda w, o: (w / "r.cdb").write_bytes(JUNK) and w / "r.cdb"),
    ("missing", lambda w, o: w / "r.cdb"),
):
    case(f"tcprules-check-cdb-{kind}")(
        lambda w, o, make_cdb=make_cdb: Run(
            [*QK, "tcprules", "check", str(make_cdb(w, o)), "1.2.3.4"]
        )
    )
for name, args in (
    ("host-surrogate", ["1.2.3.4", b"\xff\xfe"]),
    ("info-surrogate", ["1.2.3.4", "h", b"\xff"]),
    ("ip-100k", ["1" * 100_000]),
    ("ip-empty", [""]),
    ("ip-ipv6", ["::1"]),
):
    case(f"tcprules-check-{name}")(
        lambda w, o, args=args: Run([*QK, "tcprules", "check", str(good_cdb(w / "r.cdb")), *args])
    )
for kind, make_rules in (
    ("fifo", lambda w: fifo(w / "rules")),
    ("zero-link", lambda w: zero_link(w / "rules")),
    ("dir", lambda w: (w / "rules").mkdir() or w / "rules"),
    ("binary", lambda w: (w / "rules").write_bytes(JUNK) and w / "rules"),
):
    case(f"tcprules-check-rules-{kind}")(
        lambda w, o, make_rules=make_rules: Run(
            [
                *QK,
                "tcprules",
                "check",
                "--rules",
                str(make_rules(w)),
                str(good_cdb(w / "r.cdb")),
                "1.2.3.4",
            ]
        )
    )
case("tcprules-check-source-beside-is-fifo")(
    lambda w, o: (
        fifo(w / "r"),
        Run([*QK, "tcprules", "check", str(good_cdb(w / "r.cdb")), "1.2.3.4"]),
    )[1]
)

# newu / newmrh
for data_id, data in (
    ("dot-only", b".\n"),
    ("dot-first", b".+x-:x:1:1:/t:-::\n"),
    ("binary", JUNK),
    ("not-utf8", b"=\xff:u:1:1:/h:-::\n.\n"),
    ("huge-uid", b"=a:a:99999999999999999999:1:/h:-::\n.\n"),
    ("negative-uid", b"=a:a:-1:1:/h:-::\n.\n"),
    ("nul", b"=a\0:a:1:1:/h:-::\n.\n"),
):
    case(f"newu-{data_id}")(
        lambda w, o, data=data: (
            qmail_tree(w),
            (w / "qmail" / "users" / "assign").write_bytes(data),
            Run([*QK, "newu", "--qmail-home", str(w / "qmail")]),
        )[2]
    )
for kind, plant in (("fifo", fifo), ("zero-link", zero_link), ("dir", lambda p: p.mkdir())):
    case(f"newu-assign-{kind}")(
        lambda w, o, plant=plant: (
            qmail_tree(w),
            (w / "qmail" / "users" / "assign").unlink(),
            plant(w / "qmail" / "users" / "assign"),
            Run([*QK, "newu", "--qmail-home", str(w / "qmail")]),
        )[3]
    )
    case(f"newmrh-morercpthosts-{kind}")(
        lambda w, o, plant=plant: (
            qmail_tree(w),
            (w / "qmail" / "control" / "morercpthosts").unlink(),
            plant(w / "qmail" / "control" / "morercpthosts"),
            Run([*QK, "newmrh", "--qmail-home", str(w / "qmail")]),
        )[3]
    )
case("newu-cdb-is-dir")(
    lambda w, o: (
        qmail_tree(w),
        (w / "qmail" / "users" / "cdb").mkdir(),
        Run([*QK, "newu", "--qmail-home", str(w / "qmail")]),
    )[2]
)
case("newu-cdb-victim-link")(
    lambda w, o: (
        qmail_tree(w),
        victim_link(w / "qmail" / "users" / "cdb", o),
        Run([*QK, "newu", "--qmail-home", str(w / "qmail")]),
    )[2]
)
case("newu-qmail-home-missing")(
    lambda w, o: Run([*QK, "newu", "--qmail-home", str(w / "nonexistent")])
)
case("newmrh-binary")(
    lambda w, o: (
        qmail_tree(w),
        (w / "qmail" / "control" / "morercpthosts").write_bytes(JUNK),
        Run([*QK, "newmrh", "--qmail-home", str(w / "qmail")]),
    )[2]
)

# auth build / mkauth / auth check
case("auth-build-c-dir")(
    lambda w, o: (qmail_tree(w), (w / "auth.cdb").mkdir(), Run(auth(w, "-c", str(w / "auth.cdb"))))[
        2
    ]
)
case("auth-build-c-fifo")(
    lambda w, o: (qmail_tree(w), fifo(w / "auth.cdb"), Run(auth(w, "-c", str(w / "auth.cdb"))))[2]
)
case("auth-build-c-victim-link")(
    lambda w, o: (
        qmail_tree(w),
        victim_link(w / "auth.cdb", o),
        Run(auth(w, "-c", str(w / "auth.cdb"))),
    )[2]
)
case("auth-build-c-missing-dir")(
    lambda w, o: (qmail_tree(w), Run(auth(w, "-c", str(w / "nonexistent" / "auth.cdb"))))[1]
)
for name, args in (
    ("group-huge", ["--group", "99999999999"]),
    ("owner-huge", ["--owner", "99999999999"]),
    ("owner-unknown", ["--owner", "no-such-user-here"]),
    ("group-negative", ["--group", "-5"]),
    ("mode-7770", ["--mode", "7770"]),
    ("mode--1", ["--mode=-1"]),
    ("mode-0644", ["--mode", "0644"]),
    ("max-shrink-nan", ["--max-shrink", "nan"]),
):
    case(f"auth-build-{name}")(
        lambda w, o, args=args: (qmail_tree(w), Run(auth(w, "-c", str(w / "auth.cdb"), *args)))[1]
    )
for name, plant in (
    ("shadow-fifo", lambda w: fifo(w / "shadow")),
    ("shadow-zero-link", lambda w: zero_link(w / "shadow")),
    ("passwd-fifo", lambda w: fifo(w / "passwd")),
    ("passwd-binary", lambda w: (w / "passwd").write_bytes(JUNK)),
    ("settings-fifo", lambda w: fifo(w / "settings")),
):

    def setup(w, o, plant=plant, name=name):
        qmail_tree(w)
        for f in ("shadow", "passwd"):
            if name.startswith(f):
                (w / f).unlink()
        plant(w)
        return Run(
            auth(w, "-c", str(w / "auth.cdb"), "--settings", str(w / "settings"))
            if name.startswith("settings")
            else auth(w, "-c", str(w / "auth.cdb"))
        )

    CASES.append(Case(f"auth-build-{name}", setup))
case("mkauth-stdout-binary-settings")(
    lambda w, o: (
        qmail_tree(w),
        (w / "settings").write_bytes(JUNK),
        Run(
            [
                str(BIN / "mkauth"),
                "--qmail-home",
                str(w / "qmail"),
                "--settings",
                str(w / "settings"),
            ]
        ),
    )[2]
)
case("mkauth-c-dir")(
    lambda w, o: (
        qmail_tree(w),
        (w / "auth.cdb").mkdir(),
        Run([str(BIN / "mkauth"), "--qmail-home", str(w / "qmail"), "-c", str(w / "auth.cdb")]),
    )[2]
)
for name, stdin in (
    ("stdin-closed", "closed"),
    ("stdin-zero", "/dev/zero"),
    ("stdin-binary", b"\xff\xfe\x00\n"),
    ("stdin-empty", b""),
):
    case(f"auth-check-{name}", codes=AUTH_CHECK_CODES)(
        lambda w, o, stdin=stdin: Run(
            [*QK, "auth", "check", "--cdb", str(good_cdb(w / "auth.cdb")), "a"], stdin
        )
    )
for kind, plant in (("fifo", fifo), ("dir", lambda p: p.mkdir() or p), ("zero-link", zero_link)):
    case(f"auth-check-cdb-{kind}")(
        lambda w, o, plant=plant: Run(
            [*QK, "auth", "check", "--no-password", "--cdb", str(plant(w / "auth.cdb")), "a"]
        )
    )
case("auth-check-user-not-utf8")(
    lambda w, o: Run(
        [*QK, "auth", "check", "--no-password", "--cdb", str(good_cdb(w / "auth.cdb")), b"\xff"]
    )
)

# mkvalidrcptto / rcpt check
case("mkvalidrcptto-c-dir")(
    lambda w, o: (qmail_tree(w), (w / "v.cdb").mkdir(), Run(rcpt(w, "-c", str(w / "v.cdb"))))[2]
)
case("mkvalidrcptto-c-victim-link")(
    lambda w, o: (qmail_tree(w), victim_link(w / "v.cdb", o), Run(rcpt(w, "-c", str(w / "v.cdb"))))[
        2
    ]
)
for name, target in (
    ("rcpthosts-fifo", "qmail/control/rcpthosts"),
    ("locals-fifo", "qmail/control/locals"),
    ("dotqmail-fifo", "home/bob/.qmail-x"),
    ("passwd-fifo", "passwd"),
):

    def setup(w, o, target=target):
        qmail_tree(w)
        (w / target).unlink(missing_ok=True)
        fifo(w / target)
        return Run(rcpt(w, "-c", str(w / "v.cdb")))

    CASES.append(Case(f"mkvalidrcptto-{name}", setup))
case("mkvalidrcptto-dotqmail-zero-link")(
    lambda w, o: (
        qmail_tree(w),
        zero_link(w / "home" / "bob" / ".qmail-z"),
        Run(rcpt(w, "-c", str(w / "v.cdb"))),
    )[2]
)
case("mkvalidrcptto-dotqmail-newline")(
    lambda w, o: (
        qmail_tree(w),
        (w / "home" / "bob" / ".qmail-x\npostmaster2").write_text("./Maildir/\n"),
        Run(rcpt(w, "-c", str(w / "v.cdb"))),
    )[2]
)
case("mkvalidrcptto-rcpthosts-binary")(
    lambda w, o: (
        qmail_tree(w),
        (w / "qmail" / "control" / "rcpthosts").write_bytes(JUNK),
        Run(rcpt(w, "-c", str(w / "v.cdb"))),
    )[2]
)
case("mkvalidrcptto-assign-binary")(
    lambda w, o: (
        qmail_tree(w),
        (w / "qmail" / "users" / "assign").write_bytes(JUNK),
        Run(rcpt(w, "-c", str(w / "v.cdb"))),
    )[2]
)
for address in ("", "@", "a@@b", "x" * 100_000, "a\nb@example.com", b"\xff@example.com"):
    shown = address if isinstance(address, str) else address.decode("latin-1")
    case(f"rcpt-check-{shown[:12]!r}", codes=RCPT_CHECK_CODES)(
        lambda w, o, address=address: (
            qmail_tree(w),
            Run(
                [
                    *QK,
                    "rcpt",
                    "check",
                    "--qmail-home",
                    str(w / "qmail"),
                    "--vpopmail-home",
                    str(w / "vpopmail"),
                    "--passwd",
                    str(w / "passwd"),
                    address,
                ]
            ),
        )[1]
    )
for kind, plant in (("fifo", fifo), ("dir", lambda p: p.mkdir() or p), ("zero-link", zero_link)):
    case(f"rcpt-check-cdb-{kind}", codes=RCPT_CHECK_CODES)(
        lambda w, o, plant=plant: Run(
            [*QK, "rcpt", "check", "--cdb", str(plant(w / "v.cdb")), "bob@example.com"]
        )
    )

# tai64nlocal / tai64n
for prog in ("tai64nlocal", "tai64n"):
    for name, stdin in (
        ("stdin-closed", "closed"),
        ("stdin-junk", JUNK),
        ("stdin-not-utf8", b"@4000000066322b2e0a1b2c3d \xff\xfe\n"),
        ("stdin-hostile-labels", b"@FFFFFFFFFFFFFFFFFFFFFFFF x\n@4 y\n@" + b"9" * 24 + b" z\n"),
    ):
        case(f"{prog}-{name}")(lambda w, o, prog=prog, stdin=stdin: Run([*QK, prog], stdin))


# convert-multilog
def convert_case(id: str, prepare: Callable[[Path, Path, Path], object], *extra: str) -> None:
    """A convert-multilog case: ``prepare(main, logs, outside)`` plants the input."""

    def setup(w: Path, o: Path) -> Run:
        scan, main, logs = log_tree(w)
        prepare(main, logs, o)
        return Run([*convert(scan, logs), *extra])

    CASES.append(Case(id, setup))


def one_line(main: Path, logs: Path, o: Path) -> None:
    (main / f"{LABEL}.s").write_bytes(f"{LABEL} hello\n".encode())


convert_case("convert-multilog-rotated-fifo", lambda m, lg, o: fifo(m / f"{LABEL}.s"))
convert_case("convert-multilog-rotated-zero-link", lambda m, lg, o: zero_link(m / f"{LABEL}.s"))
convert_case(
    "convert-multilog-rotated-victim-link", lambda m, lg, o: victim_link(m / f"{LABEL}.s", o)
)
convert_case(
    "convert-multilog-day-file-victim-link",
    lambda m, lg, o: (one_line(m, lg, o), victim_link(lg / "svc.2024-05-01", o)),
)
convert_case(
    "convert-multilog-state-dir-link",
    lambda m, lg, o: (one_line(m, lg, o), (lg / ".convert-multilog").symlink_to(o / "victimdir")),
)
convert_case("convert-multilog-binary", lambda m, lg, o: (m / f"{LABEL}.s").write_bytes(JUNK))
convert_case("convert-multilog-gzip-after-huge", one_line, "--gzip-after", "99999999")
for name, args in (
    ("mode-99999", ["--mode", "99999"]),
    ("owner-unknown", ["--owner", "nosuch"]),
    ("jobs-negative", ["--jobs", "-1"]),
    ("wait-nan", ["--wait", "nan"]),
):
    convert_case(f"convert-multilog-{name}", one_line, *args)
case("convert-multilog-service-dir-missing")(lambda w, o: Run(convert(w / "nonexistent", w)))

# services render / check / apply
for action in ("render", "check", "apply"):
    case(f"services-{action}-config-fifo")(
        lambda w, o, action=action: Run(
            [*QK, "services", action, "--config", str(fifo(w / "c.toml"))]
        )
    )
    case(f"services-{action}-config-zero-link")(
        lambda w, o, action=action: Run(
            [*QK, "services", action, "--config", str(zero_link(w / "c.toml"))]
        )
    )
    case(f"services-{action}-config-dir")(
        lambda w, o, action=action: (
            (w / "c.toml").mkdir() or Run([*QK, "services", action, "--config", str(w / "c.toml")])
        )
    )
    case(f"services-{action}-config-binary")(
        lambda w, o, action=action: (
            put(w / "c.toml", JUNK) or Run([*QK, "services", action, "--config", str(w / "c.toml")])
        )
    )
    case(f"services-{action}-config-deep")(
        lambda w, o, action=action: (
            put(w / "c.toml", b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n")
            or Run([*QK, "services", action, "--config", str(w / "c.toml")])
        )
    )
    case(f"services-{action}-config-huge-int")(
        lambda w, o, action=action: Run(
            [
                *QK,
                "services",
                action,
                "--config",
                str(services_config(w, "log_count = 18446744073709551618\n")),
            ]
        )
    )
case("services-render-out-planted-link")(
    lambda w, o: (
        (w / "review").mkdir(),
        (w / "review" / "send").symlink_to(o / "victimdir"),
        Run(
            [
                *QK,
                "services",
                "render",
                "--config",
                str(services_config(w)),
                "--out",
                str(w / "review"),
            ]
        ),
    )[2]
)
case("services-apply-leftover-new-file")(
    lambda w, o: (
        (w / "root").mkdir(),
        (w / "root" / ".send.qmailkit-new").write_text("x"),
        Run([*QK, "services", "apply", "-q", "--config", str(services_config(w))]),
    )[2]
)
case("services-apply-scan-loop")(
    lambda w, o: (
        services_config(w),
        (w / "scan" / "send").symlink_to("send"),
        Run([*QK, "services", "apply", "-q", "--config", str(w / "c.toml")]),
    )[2]
)

# demo
case("demo-dir-is-file")(
    lambda w, o: put(w / "f", b"x") or Run([*QK, "demo", "--part", "cdb", "--dir", str(w / "f")])
)
case("demo-dir-missing-parent")(
    lambda w, o: Run([*QK, "demo", "--part", "cdb", "--dir", str(w / "nonexistent" / "x" / "y")])
)
case("demo-dir-part-victim-link")(
    lambda w, o: (
        (w / "d").mkdir(),
        (w / "d" / "cdb").symlink_to(o / "victimdir"),
        Run([*QK, "demo", "--part", "cdb", "--dir", str(w / "d")]),
    )[2]
)
case("demo-bad-part")(lambda w, o: Run([*QK, "demo", "--part", "nosuch", "--dir", str(w / "d")]))


# Cases that fail today, each with the finding and the work that fixes it.  When a fix lands
# the case passes and strict xfail reports it: then delete its line here.
XFAIL: dict[str, str] = {
    "tcprules-stdin-dir": "A14: the interpreter refuses a directory on standard input before "
    "qmailkit runs (Fatal Python error: init_sys_streams)",
}
assert set(XFAIL) <= {c.id for c in CASES}


# -- the test ----------------------------------------------------------------------------------


def _snapshot(outside: Path) -> dict[str, bytes]:
    found = {}
    for root, dirs, files in os.walk(outside):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != str(outside / "work")]
        for name in dirs + files:
            path = os.path.join(root, name)
            found[path] = b"<dir>" if os.path.isdir(path) else Path(path).read_bytes()
    return found


def _run(run: Run, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd), "LC_ALL": "C.UTF-8"}
    env.pop("QMAILKIT_CONFIG", None)
    kwargs = {
        "cwd": cwd,
        "env": env,
        "capture_output": True,
        "timeout": TIMEOUT,
        "start_new_session": True,
    }  # no terminal: getpass cannot ask
    if run.stdin == "closed":
        return subprocess.run(
            run.argv,
            stdin=subprocess.DEVNULL,
            check=False,
            preexec_fn=lambda: os.close(0),
            **kwargs,
        )
    if isinstance(run.stdin, str):
        fd = os.open(run.stdin, os.O_RDONLY)
        try:
            return subprocess.run(run.argv, stdin=fd, check=False, **kwargs)
        finally:
            os.close(fd)
    return subprocess.run(run.argv, input=run.stdin, check=False, **kwargs)


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(
            c,
            id=c.id,
            marks=[pytest.mark.xfail(strict=True, reason=XFAIL[c.id])] if c.id in XFAIL else [],
        )
        for c in CASES
    ],
)
def test_hostile_input(tmp_path, hostile):
    outside = tmp_path
    (outside / "victim").write_bytes(VICTIM)
    (outside / "victimdir").mkdir()
    (outside / "victimdir" / "run").write_bytes(b"#!/bin/sh\nexec sshd\n")
    work = outside / "work"
    work.mkdir()
    before = _snapshot(outside)
    run = hostile.setup(work, outside)
    try:
        proc = _run(run, work)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {TIMEOUT} s")
    stderr = proc.stderr.decode("utf-8", "backslashreplace")
    assert "Traceback" not in stderr, stderr
    assert proc.returncode in hostile.codes, (proc.returncode, stderr)
    assert _snapshot(outside) == before, "something outside work/ changed"


def test_every_command_has_hostile_cases():
    """The corpus covers every command the issue lists."""
    prefixes = {c.id.split("-", 1)[0] for c in CASES} | {
        "-".join(c.id.split("-")[:2]) for c in CASES
    }
    for command in (
        "cdb-make",
        "cdb-get",
        "cdb-dump",
        "cdb-stats",
        "tcprules",
        "tcprules-check",
        "newu",
        "newmrh",
        "auth-build",
        "auth-check",
        "mkauth",
        "mkvalidrcptto",
        "rcpt-check",
        "tai64nlocal",
        "convert-multilog",
        "services-render",
        "services-check",
        "services-apply",
        "demo",
    ):
        assert command in prefixes, command
