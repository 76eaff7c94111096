"""Stand-ins for the mail programs a run script starts, for the demo and the tests.

qmail, courier-imap, vpopmail and sslserver are not packaged here, so
``install(bin_dir, record_dir)`` writes small programs with their names into
``bin_dir``.  Each records what it was started with -- argv, environment,
uid/gid, cwd -- as ``record_dir/PROG.PID.json`` (written atomically), then
behaves like the real program as far as a client can tell: qmail-smtpd greets
``220`` and answers QUIT with ``221``, imaplogin says ``* OK``, the POP3 ones
``+OK``; qmail-start waits for TERM.  The wrappers (couriertcpd, couriertls,
sslserver, rblsmtpd, jgreylist, fixcrio, recordio) record and then run the
rest of their command line, so a whole chain can be checked.  sslserver runs
the real tcpserver (no TLS: it is a stand-in).

This file uses the standard library only: it is copied next to the wrappers
and runs under the system Python as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time

SERVERS = (
    "qmail-smtpd",
    "qmail-start",
    "imaplogin",
    "pop3login",
    "qmail-popup",
    "qmail-pop3d",
    "imapd",
    "pop3d",
    "vpopmaild",
    "courierauthd",
    "courierpassd",
    "checkpassword",
    "vchkpw",
)
WRAPPERS = (
    "couriertcpd",
    "couriertls",
    "sslserver",
    "rblsmtpd",
    "jgreylist",
    "fixcrio",
    "recordio",
)
PROGRAMS = SERVERS + WRAPPERS


# -- recording ------------------------------------------------------------------


def given_env() -> dict[bytes, bytes]:
    """The environment this program was started with, before Python added to it (the C
    locale coercion sets LC_CTYPE): what the run script gave it, and what it passes on."""
    try:
        with open("/proc/self/environ", "rb") as fh:
            items = fh.read().split(b"\0")[:-1]
    except OSError:  # no /proc: as close as Python gets
        return dict(os.environb)
    return dict(item.partition(b"=")[::2] for item in items)


def record(prog: str, record_dir: str, **extra: object) -> None:
    entry = {
        "prog": prog,
        "argv": [os.fsdecode(a) for a in sys.argv],
        "env": {os.fsdecode(k): os.fsdecode(v) for k, v in given_env().items()},
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "time": time.time(),
        **extra,
    }
    final = os.path.join(record_dir, f"{prog}.{os.getpid()}.json")
    tmp = final + ".tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(entry, fh)
        os.chmod(tmp, 0o644)
        os.rename(tmp, final)
    except OSError as err:  # recording must never break the service
        print(f"standin {prog}: cannot record: {err}", file=sys.stderr, flush=True)


def read_records(record_dir: str, prog: str | None = None) -> list[dict]:
    """Every record in ``record_dir`` (of one program if given), oldest first."""
    out = []
    for name in os.listdir(record_dir):
        if not name.endswith(".json") or (prog and not name.startswith(prog + ".")):
            continue
        with open(os.path.join(record_dir, name)) as fh:
            out.append(json.load(fh))
    return sorted(out, key=lambda r: r["time"])


# -- line protocols ---------------------------------------------------------------


def _say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _dialogue(greeting: str, quit_words: tuple[str, ...], bye: str, other: str) -> None:
    _say(greeting)
    for raw in sys.stdin:
        words = raw.strip().split()
        verb = words[0].upper() if words else ""
        tagged = words[1].upper() if len(words) > 1 else ""
        if verb in quit_words or tagged in quit_words:
            tag = words[0] if tagged in quit_words else ""
            _say(bye.replace("TAG", tag))
            return
        _say(other)


def smtpd(prog: str) -> None:
    # like jms1's qmail-smtpd: SMTPGREETING replaces control/smtpgreeting
    host = os.environ.get("TCPLOCALHOST") or "standin"
    greeting = os.environ.get("SMTPGREETING") or host
    print(
        f"standin {prog}: pid {os.getpid()} from {os.environ.get('TCPREMOTEIP', '?')}",
        file=sys.stderr,
        flush=True,
    )
    _dialogue(f"220 {greeting} ESMTP standin\r\n", ("QUIT",), f"221 {host}\r\n", "250 ok\r\n")


def wait_for_term(prog: str) -> None:
    print(f"standin {prog}: started with {sys.argv[1:]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: print(f"standin {prog}: got HUP", flush=True))
    while True:
        signal.pause()


# -- wrappers ---------------------------------------------------------------------


def _exec(argv: list[str], prog: str, **add: str) -> None:
    """Run the rest of the command line with our own environment plus ``add``."""
    if not argv:
        print(f"standin {prog}: no program to run", file=sys.stderr, flush=True)
        sys.exit(100)
    env = {**given_env(), **{k.encode(): v.encode() for k, v in add.items()}}
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        print(f"standin {prog}: cannot run {argv[0]}: {err}", file=sys.stderr, flush=True)
        sys.exit(111)


def skip_options(args: list[str], with_value: str) -> list[str]:
    """Drop getopt-style options; letters in ``with_value`` take an argument."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            return args[i + 1 :]
        letters = args[i][1:]
        i += 1
        for pos, letter in enumerate(letters):
            if letter in with_value:
                if pos == len(letters) - 1:
                    i += 1  # value is the next word
                break
    return args[i:]


def sslserver(args: list[str]) -> None:
    """Run the real tcpserver with sslserver's own options (-e) removed."""
    out = []
    value_next = False
    for a in args:
        if value_next:
            out.append(a)
            value_next = False
            continue
        if a.startswith("-") and len(a) > 1 and out[-1:] != ["--"]:
            letters = a[1:].replace("e", "")
            if letters:
                out.append("-" + letters)
            value_next = letters[-1:] in "lxcugbBtTbhpPrbC" and bool(letters)
            continue
        out.append(a)
    _exec(["tcpserver", *out], "sslserver")


def couriertcpd(args: list[str]) -> None:
    """``couriertcpd [-opt=value...] PORT PROG ARGS``: a forking server like the real one."""
    address = "0"
    rest = list(args)
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt.startswith("-address="):
            address = opt.split("=", 1)[1]
    if len(rest) < 2:
        print(
            "standin couriertcpd: usage: couriertcpd [options] port prog args",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(100)
    port, prog_argv = int(rest[0]), rest[1:]
    ip = "0.0.0.0" if address in ("0", "") else address
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, port))
    srv.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"standin couriertcpd: listening on {ip}:{port}", file=sys.stderr, flush=True)
    while True:
        conn, (rip, rport) = srv.accept()
        if os.fork() == 0:
            srv.close()
            os.dup2(conn.fileno(), 0)
            os.dup2(conn.fileno(), 1)
            conn.close()
            lip, lport = socket.socket(fileno=os.dup(0)).getsockname()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _exec(
                prog_argv,
                "couriertcpd",
                PROTO="TCP",
                TCPREMOTEIP=rip,
                TCPREMOTEPORT=str(rport),
                TCPLOCALIP=lip,
                TCPLOCALPORT=str(lport),
            )
        conn.close()


def main(prog: str, record_dir: str) -> None:
    record(prog, record_dir)
    args = sys.argv[1:]
    if prog == "qmail-smtpd":
        smtpd(prog)
    elif prog == "qmail-start":
        wait_for_term(prog)
    elif prog in {"imaplogin", "imapd"}:
        _dialogue(
            "* OK [CAPABILITY IMAP4rev1] standin imaplogin ready.\r\n",
            ("LOGOUT",),
            "* BYE standin\r\nTAG OK LOGOUT completed\r\n",
            "* BAD standin\r\n",
        )
    elif prog in ("pop3login", "qmail-popup", "pop3d", "qmail-pop3d"):
        _dialogue(f"+OK standin {prog} ready\r\n", ("QUIT",), "+OK bye\r\n", "-ERR standin\r\n")
    elif prog in ("vpopmaild", "courierauthd"):
        _dialogue(f"+OK standin {prog}\r\n", ("QUIT",), "+OK\r\n", "-ERR standin\r\n")
    elif prog == "courierpassd":
        _dialogue("200 standin courierpassd ready\r\n", ("QUIT",), "200 Bye\r\n", "500 standin\r\n")
    elif prog in ("checkpassword", "vchkpw"):
        sys.exit(1)  # every login fails: the stand-in knows no passwords
    elif prog == "sslserver":
        sslserver(args)
    elif prog == "couriertcpd":
        couriertcpd(args)
    elif prog == "couriertls":
        _exec(skip_options(args, ""), prog)
    elif prog == "rblsmtpd":
        _exec(skip_options(args, "tarm"), prog)
    else:  # jgreylist, fixcrio, recordio: just run the rest
        _exec(args, prog)


# -- installing -------------------------------------------------------------------


def python_for_others() -> str:
    """A Python any user can run (tcpserver children run as e.g. nobody)."""
    for cand in ("/usr/bin/python3", sys.executable):
        if cand and os.access(cand, os.X_OK) and os.stat(cand).st_mode & 0o001:
            return cand
    return sys.executable


def install(
    bin_dir: str | os.PathLike[str],
    record_dir: str | os.PathLike[str],
    programs: tuple[str, ...] = PROGRAMS,
) -> list[str]:
    """Write the stand-in programs into ``bin_dir``; records go to ``record_dir``.

    Both directories are made world-usable (records are written by whichever
    user the service runs as).  Returns the paths of the programs.
    """
    bin_dir, record_dir = os.fspath(bin_dir), os.fspath(record_dir)
    os.makedirs(bin_dir, exist_ok=True)
    os.makedirs(record_dir, exist_ok=True)
    os.chmod(bin_dir, 0o755)
    os.chmod(record_dir, 0o1777)
    shutil.copyfile(__file__, os.path.join(bin_dir, "standin_impl.py"))
    os.chmod(os.path.join(bin_dir, "standin_impl.py"), 0o644)
    python = python_for_others()
    paths = []
    for prog in programs:
        path = os.path.join(bin_dir, prog)
        with open(path, "w") as fh:
            fh.write(
                f"#!{python} -IB\n"
                "import sys\n"
                f"sys.path.insert(0, {bin_dir!r})\n"
                "import standin_impl\n"
                f"standin_impl.main({prog!r}, {record_dir!r})\n"
            )
        os.chmod(path, 0o755)
        paths.append(path)
    return paths
