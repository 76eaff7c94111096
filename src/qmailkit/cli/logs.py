"""Command-line interface: the log commands (tai64nlocal, tai64n, convert-multilog)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

from qmailkit.cli.options import octal_mode, owner_with_login_group, processes, seconds

if TYPE_CHECKING:  # the library is imported when a command runs, to start fast
    from qmailkit.logs import convert

_TAI_HELP = (
    "labels are real TAI as s6-log and s6-tai64n write them (2^62 + 37 + Unix time since "
    "2017, 27 s ahead of daemontools' 2^62 + 10), not daemontools/runit labels"
)


def register(sub: argparse._SubParsersAction) -> None:
    _register_tai64n_commands(sub)
    _register_convert_multilog(sub)


# -- tai64nlocal, tai64n -------------------------------------------------------------------


def _register_tai64n_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tai64nlocal",
        help="convert TAI64N labels at line starts to local time (stdin to stdout)",
        description=(
            "Copy standard input to standard output, replacing the TAI64N label at the start of "
            "each line by the local time (TZ honoured), byte for byte like daemontools' "
            "tai64nlocal: '@4000000065a1b2c30000abcd text' becomes "
            "'2024-01-12 21:44:25.000043981 text'. Lines without a well-formed label (including "
            "the ones the C tool crashes on: upper-case hex, short labels, nanoseconds over "
            "999999999) pass unchanged. Exit 0 at end of input or when the reader goes away, "
            "111 on a read or write error."
        ),
    )
    p.add_argument("--tai", action="store_true", help=_TAI_HELP)
    p.set_defaults(func=_tai64nlocal)

    p = sub.add_parser(
        "tai64n",
        help="put the current TAI64N label before each line (stdin to stdout)",
        description=(
            "Copy standard input to standard output, putting '@' + 24 hex digits (the current "
            "time as a TAI64N label) and a space before every line, like daemontools' tai64n. "
            "Each read is written at once, so it can sit in a pipeline; to a pipe or terminal "
            "each line gets its own time, to a file all lines of one read share it. "
            "Exit 0 at end of input or when the reader goes away, 111 on a read or write error."
        ),
    )
    p.add_argument("--tai", action="store_true", help=_TAI_HELP)
    p.set_defaults(func=_tai64n)


def _offset(args: argparse.Namespace) -> int:
    from qmailkit.logs.tai64n import LABEL_OFFSET, TAI_OFFSET

    return TAI_OFFSET if args.tai else LABEL_OFFSET


def _tai64nlocal(args: argparse.Namespace) -> int:
    from qmailkit.logs.filters import tai64nlocal

    tai64nlocal(0, 1, offset=_offset(args))
    return 0


def _tai64n(args: argparse.Namespace) -> int:
    from qmailkit.logs.filters import tai64n

    tai64n(0, 1, offset=_offset(args))
    return 0


# -- convert-multilog ---------------------------------------------------------------------

_CONVERT_DESCRIPTION = """\
For each service directory under the scan directory, convert every rotated log file in
SERVICE/log/main (@*.s and @*.u, oldest first; never current, never *.done) like tai64nlocal,
append each line to LOGDIR/SERVICE.YYYY-MM-DD by its local date, then delete the input (or
rename it FILE.done with -r). Lines without a label go to the file of the line before them.
Crash-safe: a run killed at any moment, a full disk or an unwritable day file loses no line
and writes none twice; the next run finishes or redoes the interrupted work. One service's
failure is reported and the others go on.
"""

_CONVERT_EPILOG = """\
environment:
  QMAILKIT_CONVERT_EXCLUDE  service names to skip, separated by spaces or commas
                            (added to --exclude)
  TZ                        the time zone of the dates (default /etc/localtime)

exit codes:
  0    every service converted
  100  bad usage: an unknown option, a bad option value (--mode, --owner, ...)
  111  a service failed (the summary says which file and why), or the run could not start
       (log directory missing or not writable, another run holds the lock)

See docs/convert-multilog.md.
"""


_MAX_GZIP_DAYS = 36500  # a hundred years: more would reach before year 1


def _add_convert_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-a",
        "--alarm",
        action="store_true",
        help="first make each log service rotate a non-empty current (ALRM through "
        "its supervisor) and wait for the new @ file, so it is converted too",
    )
    p.add_argument(
        "-r",
        "--rename",
        action="store_true",
        help="rename converted inputs to FILE.done instead of deleting them",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print what is done (Reading, Adding to, Closing, ...) on stderr",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no per-service summary unless a service failed (for cron)",
    )
    p.add_argument(
        "--service-dir",
        metavar="DIR",
        default="/service",
        help="the scan directory holding the service directories (default /service)",
    )
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        default="/var/log",
        help="where the SERVICE.YYYY-MM-DD files go (default /var/log); its "
        ".convert-multilog/ sub-directory holds the lock and the journals",
    )
    p.add_argument(
        "--exclude",
        metavar="NAME",
        action="append",
        default=[],
        help="skip this service (name under the scan directory); repeatable",
    )
    p.add_argument(
        "--supervisor",
        metavar="KIND",
        help="who supervises the log services, for -a (default: detect)",
    )
    p.add_argument(
        "--syslog",
        action="store_true",
        help="also send the messages to syslog (ident convert-multilog, facility "
        "user, priority info)",
    )
    p.add_argument(
        "--mode",
        metavar="OCTAL",
        type=octal_mode,
        default=0o640,
        help="mode of new day files (default 0640; permission bits only)",
    )
    p.add_argument(
        "--owner",
        metavar="USER[:GROUP]",
        type=owner_with_login_group,
        help="owner of new day files when run as root, names or numbers; USER alone "
        "means the user's login group (default root, group adm if it exists, else root)",
    )
    p.add_argument(
        "--tai",
        action="store_true",
        help="labels are s6-log's real TAI (2^62 + 37 + Unix time), not "
        "daemontools/runit labels (2^62 + 10)",
    )
    p.add_argument(
        "--jobs",
        metavar="N",
        type=_jobs,
        default=0,
        help="services converted at once, one process each (default: one per CPU)",
    )
    p.add_argument(
        "--wait",
        metavar="SECONDS",
        type=seconds,
        default=0.0,
        help="wait this long for another run to finish (default: exit 111 at once)",
    )
    p.add_argument(
        "--alarm-timeout",
        metavar="SECONDS",
        type=seconds,
        default=10.0,
        help="with -a, how long to wait for the rotated file (default 10)",
    )
    p.add_argument(
        "--gzip-after",
        metavar="DAYS",
        type=int,
        help="afterwards, gzip each converted service's day files more than DAYS "
        f"days old (SERVICE.YYYY-MM-DD.gz); 0 to {_MAX_GZIP_DAYS}",
    )
    p.add_argument(
        "--service-root",
        metavar="DIR",
        action="append",
        default=[],
        help="also convert the retired services (.retired-NAME-STAMP, left by "
        "services apply --prune) in DIR; those in the scan directory and in "
        "the directories its links point into are found anyway; repeatable",
    )
    p.set_defaults(func=_convert_multilog)


def _register_convert_multilog(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-multilog",
        help="move rotated multilog files into dated, readable LOGDIR/SERVICE.YYYY-MM-DD files",
        description=_CONVERT_DESCRIPTION,
        epilog=_CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_convert_options(p)


def convert_multilog_main(argv: list[str] | None = None) -> int:
    """The installed ``convert-multilog`` alias: the same as ``qmailkit convert-multilog``."""
    import sys

    from qmailkit.cli import Parser, run

    p = Parser(
        prog="convert-multilog",
        description=_CONVERT_DESCRIPTION,
        epilog=_CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_convert_options(p)
    args = p.parse_args(argv)
    code = run(args.func, args, "convert-multilog")
    if argv is None:
        sys.exit(code)
    return code


def _jobs(text: str) -> int:
    """``--jobs``: a number of processes, or 0 for one per CPU (the default)."""
    if text.strip() == "0":
        return 0
    try:
        return processes(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a number of processes: {text!r} (1 or more, or 0 for one per CPU)"
        ) from None


def _default_owner() -> tuple[int, int]:
    """root, with group adm if it exists (Debian's group for readable logs), else root."""
    import grp

    try:
        return 0, grp.getgrnam("adm").gr_gid
    except KeyError:
        return 0, 0


def _convert_options(args: argparse.Namespace) -> convert.Options:
    """The library's options from the command line (and QMAILKIT_CONVERT_EXCLUDE)."""
    import os
    import re
    from pathlib import Path

    from qmailkit import supervisor
    from qmailkit.errors import InputError
    from qmailkit.logs import convert

    if args.gzip_after is not None and not 0 <= args.gzip_after <= _MAX_GZIP_DAYS:
        raise InputError(f"--gzip-after: must be 0 to {_MAX_GZIP_DAYS} days")
    if args.supervisor is not None and args.supervisor not in supervisor.KINDS:
        raise InputError(
            f"--supervisor: unknown supervisor {args.supervisor!r}",
            hint="one of " + ", ".join(supervisor.KINDS),
        )
    day_file_owner = args.owner or _default_owner()  # parsed even when not root: typos show
    exclude = set(args.exclude)
    exclude.update(
        n for n in re.split(r"[\s,]+", os.environ.get("QMAILKIT_CONVERT_EXCLUDE", "")) if n
    )
    return convert.Options(
        service_dir=Path(args.service_dir),
        log_dir=Path(args.log_dir),
        rename=args.rename,
        alarm=args.alarm,
        supervisor=args.supervisor,
        exclude=frozenset(exclude),
        mode=args.mode,
        owner=day_file_owner if os.geteuid() == 0 else None,
        tai=args.tai,
        alarm_timeout=args.alarm_timeout,
        jobs=args.jobs,
        wait=args.wait,
        gzip_after=args.gzip_after,
        service_roots=tuple(Path(d) for d in args.service_root),
    )


def _convert_multilog(args: argparse.Namespace) -> int:
    import sys
    import syslog

    from qmailkit.logs import convert

    opts = _convert_options(args)
    if args.syslog:
        syslog.openlog("convert-multilog", syslog.LOG_PID, syslog.LOG_USER)
    show_progress = sys.stdout.isatty() and not args.verbose
    bar = _Progress(sys.stdout) if show_progress else None

    def log(msg: str) -> None:
        if args.verbose:
            print(f"convert-multilog: {msg}", file=sys.stderr, flush=True)
        if args.syslog:
            syslog.syslog(syslog.LOG_INFO, msg)

    result = convert.convert_all(
        opts,
        log,
        progress=bar.advance if bar else None,
        total=bar.start if bar else None,
    )
    if bar:
        bar.finish()
    for service in result.services:
        _report(service, args)
    return 0 if result.ok else 111


def _report(service: convert.ServiceResult, args: argparse.Namespace) -> None:
    """A service's summary (stdout, or stderr when it failed), warnings, and syslog."""
    import sys
    import syslog

    line = service.summary()
    if args.syslog:
        syslog.syslog(syslog.LOG_INFO if service.ok else syslog.LOG_ERR, line)
    if not service.ok:
        print(f"convert-multilog: {line}", file=sys.stderr)
    elif not args.quiet:
        print(line)
    for warning in service.warnings:
        print(f"convert-multilog: warning: {service.name}: {warning}", file=sys.stderr)


class _Progress:
    """A one-line progress indication on a terminal, for runs with much to read."""

    THRESHOLD = 32 << 20

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total = 0
        self.done = 0
        self.shown = -1.0
        self.active = False

    def start(self, total: int) -> None:
        self.total = total
        self.active = total >= self.THRESHOLD

    def advance(self, n: int) -> None:
        self.done += n
        if not self.active:
            return
        share = min(1.0, self.done / self.total)
        if share - self.shown >= 0.01:
            self.shown = share
            self.stream.write(f"\rconverting: {share:4.0%} of {self.total >> 20} MB")
            self.stream.flush()

    def finish(self) -> None:
        if self.active:
            self.stream.write("\r" + " " * 40 + "\r")
            self.stream.flush()
