"""``qmailkit tcprules``: compile tcpserver rules (like ucspi-tcp's tcprules) and explain them."""

from __future__ import annotations

import argparse
import os
import sys

USAGE = """qmailkit tcprules FILE.cdb FILE.tmp < RULES
       qmailkit tcprules check [--rules RULES] FILE.cdb IP [HOST [INFO]]"""

DESCRIPTION = """\
Compile tcpserver access rules from standard input into FILE.cdb, exactly as
ucspi-tcp's tcprules does (same syntax, same bytes): FILE.tmp is written,
fsync'd and renamed over FILE.cdb.  A bad rule prints its line number and what
is wrong, exits 100 (as tcprules does) and leaves FILE.cdb untouched.

'check' says what tcpserver -x FILE.cdb does with a connection from IP (with
the remote HOST name and ident INFO if given): the key that matches, the
environment it sets, allow or deny, and the line of the rules source that
made it (RULES, or FILE without .cdb if that exists)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tcprules",
        usage=USAGE,
        help="compile tcpserver rules into a cdb; 'check' explains a match",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # "check" is a word, not a sub-parser, so that "tcprules FILE.cdb FILE.tmp" keeps its
    # form; the arguments after it are parsed here.
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=cmd_tcprules, parser=parser)
    check = type(parser)(  # the same class, so usage errors exit as everywhere else
        prog="qmailkit tcprules check",
        description="Say what tcpserver -x FILE.cdb does with a connection from IP.",
    )
    check.add_argument("--rules", metavar="RULES", help="the rules source FILE.cdb came from")
    check.add_argument("cdb", metavar="FILE.cdb")
    check.add_argument("ip", metavar="IP")
    check.add_argument("host", metavar="HOST", nargs="?", help="remote host name (TCPREMOTEHOST)")
    check.add_argument("info", metavar="INFO", nargs="?", help="remote ident (TCPREMOTEINFO)")
    parser.set_defaults(check_parser=check)


def cmd_tcprules(args: argparse.Namespace) -> int:
    if args.args[:1] == ["check"]:
        opts = args.check_parser.parse_args(args.args[1:])
        return cmd_check(opts.rules, opts.cdb, opts.ip, opts.host, opts.info)
    if len(args.args) != 2 or any(a.startswith("-") for a in args.args):
        args.parser.error("expected FILE.cdb FILE.tmp (rules on standard input)")
    return cmd_compile(*args.args)


def _say(line: str) -> None:
    print(f"qmailkit tcprules: {line}", file=sys.stderr)


def cmd_compile(cdb_path: str, tmp_path: str) -> int:
    from qmailkit import tcprules
    from qmailkit.cli import stdin_binary

    # Parsed as a stream: junk on standard input fails at its first bad line.
    rules = tcprules.parse(stdin_binary(), "standard input")
    for number, text in rules.ignored:
        shown = text.decode("utf-8", "backslashreplace")
        _say(f"warning: standard input:{number}: no ':' in this line, ignored: {shown}")
    tcprules.compile_rules(rules, cdb_path, tmp_path)
    return 0


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _is_text(arg: str) -> bool:
    """False for an argument holding bytes that are not UTF-8 (surrogate escapes)."""
    try:
        arg.encode()
    except UnicodeEncodeError:
        return False
    return True


def cmd_check(
    rules_path: str | None, cdb_path: str, ip: str, host: str | None = None, info: str | None = None
) -> int:
    from qmailkit import tcprules
    from qmailkit.errors import InputError, QmailkitError

    # Bytes that are not UTF-8 are shown as \xNN escapes, once (not as surrogates, not doubled).
    if not _is_text(ip):
        raise InputError(
            f"not an IP address: '{_text(os.fsencode(ip))}'",
            hint="give the client's address, e.g. 1.2.3.4",
        )
    tcprules.check_ip(ip)
    for what, value in (("HOST", host), ("INFO", info)):
        if value is not None and not _is_text(value):
            raise InputError(
                f"{what} '{_text(os.fsencode(value))}' is not valid UTF-8 text",
                hint="give the name as tcpserver sets TCPREMOTEHOST/TCPREMOTEINFO",
            )
    found = tcprules.explain(cdb_path, ip, host, info)
    # Output as tcprulescheck's, then where the rule came from.
    out = []
    if found.key is None:
        out.append("default:")
    else:
        out.append(f"rule {_text(found.key)}:")
        if found.allow:
            out += [f"set environment variable {_text(n)}={_text(v)}" for n, v in found.env]
    out.append("allow connection" if found.allow else "deny connection")
    if rules_path is None and cdb_path.endswith(".cdb") and os.path.isfile(cdb_path[:-4]):
        rules_path = cdb_path[:-4]
    source = None
    if rules_path is not None:
        try:
            source = tcprules.explain(tcprules.compile_source(rules_path), ip, host, info)
        except QmailkitError as err:  # the cdb's answer stands; the source cannot explain it
            _say(f"warning: cannot say which line matched: {err}")
    if source is not None:
        if (source.key, source.data) != (found.key, found.data):
            _say(
                f"warning: {cdb_path} does not match {rules_path} (which gives "
                f"{'no rule' if source.key is None else repr(_text(source.key))}); "
                f"recompile it with qmailkit tcprules"
            )
        elif source.rule is not None:
            out.append(f"from {rules_path}:{source.rule.line}: {_text(source.rule.text)}")
        else:
            out.append(f"no line of {rules_path} matches: tcpserver allows the connection")
    print("\n".join(out))
    return 0
