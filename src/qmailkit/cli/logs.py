"""Command-line interface: the log commands (tai64nlocal, tai64n, convert-multilog)."""

from __future__ import annotations

import argparse

_TAI_HELP = (
    "labels are real TAI as s6-log and s6-tai64n write them (2^62 + 37 + Unix time since "
    "2017, 27 s ahead of daemontools' 2^62 + 10), not daemontools/runit labels"
)


def register(sub: argparse._SubParsersAction) -> None:
    _register_tai64n_commands(sub)


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
    from qmailkit.tai64n import LABEL_OFFSET, TAI_OFFSET

    return TAI_OFFSET if args.tai else LABEL_OFFSET


def _tai64nlocal(args: argparse.Namespace) -> int:
    from qmailkit.logfilter import tai64nlocal

    tai64nlocal(0, 1, offset=_offset(args))
    return 0


def _tai64n(args: argparse.Namespace) -> int:
    from qmailkit.logfilter import tai64n

    tai64n(0, 1, offset=_offset(args))
    return 0
