"""A stand-in for qmail-send, for the updater's tests and the demo.

qmail is not packaged here, so this program behaves like qmail-send where the
updater depends on it (running-qmail.md A.3):

1. its process name (``/proc/PID/comm``) is ``qmail-send``: the launcher
   ``install()`` writes is named so (the kernel takes comm from the file
   exec'd), and ``main()`` also sets it with prctl(PR_SET_NAME), so it holds
   when started as ``python3 qmail_send.py`` too;
2. it reads ``control/locals`` (``control/me`` when locals is missing) and
   ``control/virtualdomains`` as qmail's control_readfile does: empty lines
   and lines starting with ``#`` are skipped, trailing newline, spaces and
   tabs are stripped, a CR is kept;
3. then it installs its HUP, ALRM and TERM handlers -- until then a HUP kills
   it (the default action), exactly as it kills the real one.  The env var
   ``QMAIL_SEND_START_DELAY`` (seconds) widens that window for tests;
4. then it opens ``queue/lock/sendmutex`` for writing and takes
   flock(LOCK_EX|LOCK_NB) on it; if another process holds it, it prints
   ``alert: cannot start: qmail-send is already running`` and exits 111.

Usage: ``qmail-send [QMAIL_HOME]`` (default /var/qmail).  Every line goes to
stdout, line-buffered, so a logger sees each line at once:

* ``status: starting pid P`` -- first thing (the real one says nothing yet: this
  line lets a test tell a stand-in killed while starting from one never started)
* ``status: started pid P; locals=N virtualdomains=M`` -- lock held, handlers set
* ``status: got HUP; locals=N virtualdomains=M`` -- after rereading both files
* ``status: got ALRM``
* ``status: got TERM`` then ``status: exiting`` (exit 0)
* ``alert: cannot start: unable to read controls`` / ``unable to open mutex`` /
  ``qmail-send is already running`` (exit 111)

N and M count effective lines.  Signals are taken from a wakeup pipe in
arrival order, so each one is logged once, in order, never from inside a
handler.

Standard library only: ``install()`` copies this file next to the launcher,
which runs it under the system Python as any user (as standins.py does).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import sys
import time

PROG = "qmail-send"
DELAY_ENV = "QMAIL_SEND_START_DELAY"
PR_SET_NAME = 15


def set_process_name(name: str = PROG) -> bool:
    """Make /proc/self/comm read ``name`` (at most 15 bytes); False where prctl is missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def effective_lines(data: bytes) -> list[bytes]:
    """control_readfile's lines: trailing \\n, space, tab stripped; empty and # lines dropped."""
    out = []
    for line in data.split(b"\n"):
        line = line.rstrip(b" \t")
        if line and not line.startswith(b"#"):
            out.append(line)
    return out


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_controls() -> tuple[int, int]:
    """(locals, virtualdomains) line counts, from the current directory (the qmail home)."""
    data = _read("control/locals")
    if data is None:  # qmail-send falls back to me when locals is missing
        me = _read("control/me")
        data = (me or b"").split(b"\n", 1)[0]
    vdoms = _read("control/virtualdomains") or b""
    return len(effective_lines(data)), len(effective_lines(vdoms))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cannot_start(why: str) -> None:
    say(f"alert: cannot start: {why}")
    sys.exit(111)


def take_mutex() -> int:
    try:
        fd = os.open("queue/lock/sendmutex", os.O_WRONLY)
    except OSError:
        cannot_start("unable to open mutex")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            cannot_start("qmail-send is already running")
        cannot_start("unable to lock mutex")
    return fd


def counts_text() -> str:
    n_locals, n_vdoms = read_controls()
    return f"locals={n_locals} virtualdomains={n_vdoms}"


def serve(wakeup: int) -> None:
    """Log each signal as it comes; reread the controls on HUP; end on TERM.

    Signals sent together reach the wakeup pipe together (not always in the
    order sent); every one of them is logged before a TERM among them ends
    the program, as qmail-send finishes its loop before exiting.
    """
    names = {int(signal.SIGHUP): "HUP", int(signal.SIGALRM): "ALRM", int(signal.SIGTERM): "TERM"}
    while True:
        batch = os.read(wakeup, 64)
        for signum in batch:
            if signum == signal.SIGHUP:
                try:
                    say(f"status: got HUP; {counts_text()}")
                except OSError:
                    say("alert: unable to reread controls")
            else:
                say(f"status: got {names.get(signum, str(signum))}")
        if signal.SIGTERM in batch:
            say("status: exiting")
            sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    set_process_name()
    say(f"status: starting pid {os.getpid()}")
    args = sys.argv[1:] if argv is None else argv
    try:
        os.chdir(args[0] if args else "/var/qmail")
        start_counts = counts_text()
    except OSError:
        cannot_start("unable to read controls")
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)  # the window in which a HUP kills the real qmail-send too
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in (signal.SIGHUP, signal.SIGALRM, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)  # the wakeup pipe carries the signal number
    take_mutex()
    say(f"status: started pid {os.getpid()}; {start_counts}")
    serve(read_end)


# -- installing -------------------------------------------------------------------


def python_for_others() -> str:
    """A Python any user can run (the stand-in may run as an unprivileged user)."""
    for cand in ("/usr/bin/python3", sys.executable):
        if cand and os.access(cand, os.X_OK) and os.stat(cand).st_mode & 0o001:
            return cand
    return sys.executable


def install(bin_dir: str | os.PathLike[str]) -> str:
    """Write ``bin_dir/qmail-send`` (and its module copy); return the program's path."""
    bin_dir = os.fspath(bin_dir)
    os.makedirs(bin_dir, exist_ok=True)
    os.chmod(bin_dir, 0o755)
    impl = os.path.join(bin_dir, "qmail_send_impl.py")
    shutil.copyfile(__file__, impl)
    os.chmod(impl, 0o644)
    path = os.path.join(bin_dir, PROG)
    with open(path, "w") as fh:
        fh.write(
            f"#!{python_for_others()} -IB\n"
            "import sys\n"
            f"sys.path.insert(0, {bin_dir!r})\n"
            "import qmail_send_impl\n"
            "qmail_send_impl.main()\n"
        )
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    main()
