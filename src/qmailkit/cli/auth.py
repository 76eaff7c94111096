"""``qmailkit auth build`` / ``mkauth`` and ``qmailkit auth check``: the AUTH_CDB database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qmailkit.cli.options import add_shrink_guard, group_id, octal_mode, owner, user_number

DEFAULT_CDB = "/var/qmail/control/auth.cdb"

# auth check exit codes (documented in docs/mkauth.md).
EXIT_MISMATCH = 1
EXIT_ABSENT = 100  # like cdbget and "qmailkit cdb get" for a missing key

BUILD_DESCRIPTION = (
    "Build the AUTH_CDB file of jms1's combined qmail-smtpd patch: key = the login as the "
    "client types it (user@domain for vpopmail mailboxes, the login for system accounts), "
    'value = the crypt(3) hash plus optional ,VAR="value" pairs. Without -c the records are '
    "printed (LOGIN VALUE lines, or cdbmake format with -m)."
)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output")
    out.add_argument(
        "-c", dest="cdb", metavar="FILE", help="write the cdb FILE (only if its records changed)"
    )
    out.add_argument(
        "-m",
        dest="cdbmake",
        action="store_true",
        help="print cdbmake format instead of LOGIN VALUE lines",
    )
    out.add_argument(
        "-d",
        dest="debug",
        action="store_true",
        help="say on stderr where each login came from and which were left out",
    )
    src = parser.add_argument_group("sources")
    src.add_argument(
        "--qmail-home",
        metavar="DIR",
        default="/var/qmail",
        help="qmail's home; vpopmail domains come from its users/assign (default %(default)s)",
    )
    src.add_argument(
        "--no-vpopmail", dest="vpopmail", action="store_false", help="leave out vpopmail mailboxes"
    )
    src.add_argument(
        "--vpopmail-home",
        metavar="DIR",
        help="vpopmail's home, for bin/vuserinfo with a SQL backend (default: "
        "the vpopmail user's home in the passwd file)",
    )
    src.add_argument(
        "--shadow",
        metavar="FILE",
        help="add system accounts from this shadow file (e.g. /etc/shadow)",
    )
    src.add_argument(
        "--passwd",
        metavar="FILE",
        default="/etc/passwd",
        help="passwd file giving the uids of system accounts (default %(default)s)",
    )
    src.add_argument(
        "--min-uid",
        type=user_number,
        default=500,
        metavar="N",
        help="lowest uid of a system account to include (default %(default)s)",
    )
    src.add_argument(
        "--max-uid",
        type=user_number,
        default=65000,
        metavar="N",
        help="highest uid of a system account to include (default %(default)s)",
    )
    src.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NAME",
        help="leave out a login (joe, joe@example.com) or a domain (@example.com); repeatable",
    )
    src.add_argument(
        "--settings", metavar="FILE", help="per-login VAR=value settings (see docs/mkauth.md)"
    )
    safety = parser.add_argument_group("file and safety")
    safety.add_argument(
        "--owner",
        type=owner,
        metavar="USER[:GROUP]",
        help="owner (and group) of the cdb, names or numbers",
    )
    safety.add_argument(
        "--group",
        type=group_id,
        metavar="GROUP",
        help="group of the cdb, e.g. the group qmail-smtpd runs as",
    )
    safety.add_argument(
        "--mode",
        type=octal_mode,
        default=0o640,
        metavar="OCTAL",
        help="file mode (default 0640; bits for others, setuid, setgid and sticky are refused)",
    )
    add_shrink_guard(safety, "logins")


def register(sub: argparse._SubParsersAction) -> None:
    auth = sub.add_parser(
        "auth",
        help="build or check the SMTP AUTH database (mkauth)",
        description="The AUTH_CDB database of jms1's qmail-smtpd patch.",
    )
    auth_sub = auth.add_subparsers(dest="auth_command", metavar="SUBCOMMAND")
    auth_sub.required = True

    build = auth_sub.add_parser(
        "build", help="build auth.cdb (same as mkauth)", description=BUILD_DESCRIPTION
    )
    add_build_arguments(build)
    build.set_defaults(func=_build)

    check = auth_sub.add_parser(
        "check",
        help="is USER in auth.cdb, and does a password match?",
        description="Look USER up in auth.cdb exactly as qmail-smtpd does and check a password "
        "against its hash. The password is read without echo from the terminal, or as the "
        "first line of standard input when that is not a terminal; never from the command line.",
    )
    check.add_argument("user", metavar="USER", help="the login as the client types it")
    check.add_argument(
        "--cdb",
        metavar="FILE",
        default=DEFAULT_CDB,
        help="the auth.cdb to read (default %(default)s)",
    )
    check.add_argument(
        "--no-password",
        action="store_true",
        help="only say whether USER is present; ask no password",
    )
    check.set_defaults(func=_check)


def _owner(args: argparse.Namespace) -> tuple[int, int] | None:
    """--owner USER[:GROUP], with --group (if given) for the group."""
    if args.owner is None and args.group is None:
        return None
    uid, gid = args.owner or (-1, -1)
    return uid, gid if args.group is None else args.group


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qmailkit import auth

    owner = _owner(args)
    if args.cdb:
        # Refuse a bad target before the (possibly long) walk over the sources.
        auth.check_target(Path(args.cdb), args.mode)
    sources = auth.Sources(
        qmail_home=Path(args.qmail_home),
        vpopmail=args.vpopmail,
        vpopmail_home=Path(args.vpopmail_home) if args.vpopmail_home else None,
        shadow=Path(args.shadow) if args.shadow else None,
        passwd=Path(args.passwd),
        min_uid=args.min_uid,
        max_uid=args.max_uid,
        exclude=args.exclude,
        settings=Path(args.settings) if args.settings else None,
    )
    found = auth.collect(sources)
    if args.debug:
        for note in found.notes:
            print(f"note: {note}", file=sys.stderr)
        for key, source in zip(found.keys, found.sources(), strict=True):
            print(f"login: {key.decode('utf-8', 'surrogateescape')} from {source}", file=sys.stderr)
        for skip in found.skipped:
            print(f"skipped: {skip.login} ({skip.reason}) from {skip.source}", file=sys.stderr)
    if not args.cdb:
        out = sys.stdout.buffer
        if args.cdbmake:
            lines = map(
                b"+%d,%d:%s->%s\n".__mod__,
                zip(
                    map(len, found.keys),
                    map(len, found.values),
                    found.keys,
                    found.values,
                    strict=True,
                ),
            )
        else:
            lines = map(b"%s %s\n".__mod__, zip(found.keys, found.values, strict=True))
        out.writelines(lines)
        if args.cdbmake:
            out.write(b"\n")
        out.flush()
        return 0
    result = auth.write_cdb(
        args.cdb,
        found,
        mode=args.mode,
        owner=owner,
        only_if_changed=True,
        max_shrink=args.max_shrink,
        force=args.force,
    )
    noun = "login" if result.count == 1 else "logins"
    if result.written:
        was = "" if result.previous is None else f", was {result.previous}"
        print(f"{result.path}: {result.reason}: {result.count} {noun}{was}")
    else:
        print(f"{result.path}: unchanged ({result.count} {noun}), left alone")
    return 0


#: the longest password line read from standard input (it is not a stream to slurp)
MAX_PASSWORD = 1 << 16


def _read_password(prompt: str) -> str | bytes:
    """From the terminal without echo, else the first line of standard input, as bytes."""
    import getpass

    from qmailkit.errors import InputError, QmailkitError

    if sys.stdin is None:
        raise QmailkitError(
            "standard input is closed and no password can be read",
            hint="give it on standard input, or use --no-password",
        )
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.buffer.readline(MAX_PASSWORD + 1)
    if len(line) > MAX_PASSWORD:
        raise InputError(f"the password on standard input is longer than {MAX_PASSWORD} bytes")
    return line.rstrip(b"\r\n")


def _check(args: argparse.Namespace) -> int:
    import time

    from qmailkit import auth

    entry = auth.find(args.cdb, args.user)
    if entry is None:
        print(f"{args.user}: not in {args.cdb}")
        return EXIT_ABSENT
    sets = "".join(f' {name}="{value}"' for name, value in entry.env)
    print(f"{args.user}: present in {args.cdb}" + (f"; sets{sets}" if sets else ""))
    if args.no_password:
        return 0
    password = _read_password(f"Password for {args.user}: ")
    if not auth.verify(password, entry.hash):
        print(f"{args.user}: password does not match")
        return EXIT_MISMATCH
    expires = entry.expires
    if expires is not None and expires <= time.time():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
        print(f"{args.user}: password matches, but it expired at {when} (AUTH fails)")
        return EXIT_MISMATCH
    print(f"{args.user}: password matches")
    return 0


def mkauth_main(argv: Sequence[str] | None = None) -> int:
    """The installed ``mkauth`` command: ``qmailkit auth build`` under its original name."""
    from qmailkit.cli import Parser, run

    parser = Parser(prog="mkauth", description=BUILD_DESCRIPTION)
    add_build_arguments(parser)
    args = parser.parse_args(argv)
    return run(_build, args, "mkauth")
