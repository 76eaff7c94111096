"""``qmailkit services``: render, apply, status and check the supervised mail services."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from qmailkit.cli import options

if TYPE_CHECKING:
    from qmailkit.services.check import Finding
    from qmailkit.services.config import Config
    from qmailkit.services.install import ApplyResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "services",
        help="service directories for every mail service, from one config file",
        description=(
            "Generate, install and report on the supervised services (qmail-send, qmail-smtpd, "
            "courier-imap, vpopmaild...) described in one TOML config file, for daemontools, "
            "runit or s6."
        ),
    )
    ssub = p.add_subparsers(dest="action", metavar="ACTION")
    ssub.required = True

    def add(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int], description: str
    ) -> argparse.ArgumentParser:
        sp = ssub.add_parser(name, help=help_text, description=description)
        options.add_config(sp)
        sp.set_defaults(func=func)
        return sp

    sp = add(
        "render",
        "show the generated service directories",
        render,
        "Print every generated file, or write the service directories into DIR for "
        "review. Touches nothing else: no owners, links, rules or restarts.",
    )
    sp.add_argument("--out", metavar="DIR", help="write the service directories into DIR")

    sp = add(
        "apply",
        "install or update the service directories",
        apply,
        "Create or update every service directory in place (atomic writes, exact modes), "
        "compile tcp rules, link new services into the scan directory and restart the "
        "services whose files changed. A file edited by hand since the last apply is "
        "not replaced without --force. With --prune, services dropped from the config "
        "are unlinked, stopped and their directories kept as .retired-NAME-STAMP.",
    )
    sp.add_argument(
        "-n", "--dry-run", action="store_true", help="only show what would change (with diffs)"
    )
    sp.add_argument(
        "--force",
        action="store_true",
        help="replace files that were edited by hand since the last apply",
    )
    sp.add_argument(
        "--prune",
        action="store_true",
        help="retire services that are no longer in the config: unlink and stop "
        "them, keep their directories as .retired-NAME-STAMP",
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="do not print the diffs")
    sp.add_argument(
        "--wait",
        type=options.seconds,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for new and restarted services to be up; exit 111 if one is not",
    )

    sp = add(
        "status",
        "state of every service and its logger",
        status,
        "One line per service and per logger: up/down, pid, seconds in that state, "
        "normally up or down, and what the supervisor wants; read from the supervisors' "
        "status files.",
    )
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sp = add(
        "check",
        "check the config against this system",
        check,
        "Check that users, programs, certificates and rules databases are in place and "
        "usable by the service's user, that no port is used twice, and that no service "
        "is an open relay or offers AUTH without TLS. The same finding for several "
        "services is one line naming them. Exits 100 when an error is found.",
    )
    sp.add_argument("-v", "--verbose", action="store_true", help="one line per finding and service")


def _load(args: argparse.Namespace) -> Config:
    from qmailkit.services import config

    return config.load(options.config_path(args.config))


def render(args: argparse.Namespace) -> int:
    from qmailkit.services import render as rendering

    cfg = _load(args)
    rendered = rendering.render(cfg)
    if args.out:
        from qmailkit.services.install import export

        for path in export(rendered, args.out):
            print(os.path.join(args.out, path))
        return 0
    out = sys.stdout
    for name, svc in rendered.items():
        for rel, (data, mode) in sorted(svc.files.items(), key=file_order):
            out.write(f"==> {name}/{rel} ({mode:04o}) <==\n")
            out.write(data.decode("utf-8", "replace"))
            if not data.endswith(b"\n"):
                out.write("\n")
            out.write("\n")
    return 0


def file_order(item: tuple[str, object]) -> tuple[int, str]:
    """run first, then log/run, then deeper files."""
    return item[0].count("/"), item[0]


def apply(args: argparse.Namespace) -> int:
    from qmailkit.services import install

    cfg = _load(args)
    result = install.apply(cfg, dry_run=args.dry_run, force=args.force, prune=args.prune)
    for warning in result.warnings:
        print(f"qmailkit services apply: warning: {warning}", file=sys.stderr)
    if not result.changes:
        print("nothing to change")
        return 0
    _report(result, quiet=args.quiet)
    if args.wait > 0 and not args.dry_run:
        targets = install.started_targets(result)
        late = install.wait_up(cfg, targets, timeout=args.wait)
        if late:
            print(
                f"qmailkit services apply: not up after {args.wait:g} seconds: "
                + ", ".join(late)
                + " (see each one's log/main/current, and qmailkit "
                "services status)",
                file=sys.stderr,
            )
            return 111
        if targets:
            print("up: " + ", ".join(targets))
    if args.dry_run:
        print("dry run: nothing was changed")
        if any(c.action == "edited" for c in result.changes):
            print(
                "note: the files marked 'edited' were changed by hand; apply needs --force "
                "to replace them"
            )
    return 0


def _report(result: ApplyResult, *, quiet: bool) -> None:
    """The changes (and their diffs), the services retired, the restarts."""
    for change in result.changes:
        print(change.describe())
    if not quiet:
        for change in result.changes:
            if change.diff:
                sys.stdout.write(change.diff)
    for r in result.retired:
        if r.in_scan_dir:
            was = "was in the scan directory"
        else:
            was = f"was linked as {r.link}" if r.link else "was not linked"
        print(f"retired {r.name} ({was}); kept its files in {r.kept_in}")
    for target in result.restarted:
        print(f"restarted {target}")


def status(args: argparse.Namespace) -> int:
    from qmailkit.services import status as st

    cfg = _load(args)
    rows = st.collect(cfg)
    sys.stdout.write(st.to_json(rows) if args.json else st.format_table(rows))
    if not args.json:
        if any(r.state == "missing" for r in rows):
            print(
                "note: 'missing' services are not installed yet: run qmailkit services apply",
                file=sys.stderr,
            )
        if any(r.state == "unsupervised" for r in rows):
            print(
                f"note: 'unsupervised' services have no {cfg.supervisor.kind} supervisor: is "
                f"the scanner running on {cfg.supervisor.scan_dir}, and are they linked there?",
                file=sys.stderr,
            )
    for kind, names in st.wrong_kind(rows).items():
        print(
            f"note: {', '.join(names)}: supervised by {kind}, not {cfg.supervisor.kind} "
            f'(their supervise/ directory is {kind}\'s): set kind = "{kind}" in [supervisor] '
            f"of {cfg.path} (restarts and --prune depend on it)",
            file=sys.stderr,
        )
    return 0


def check(args: argparse.Namespace) -> int:
    from qmailkit.services import check as checking

    cfg = _load(args)
    findings = checking.check(cfg)
    lines = [f.describe() for f in findings] if args.verbose else checking.merged(findings)
    for line in lines:
        print(line)
    for line in install_notes(findings):
        print(line)
    errors = sum(1 for f in findings if f.level == "error")
    warnings = len(findings) - errors
    more = f" ({len(lines)} distinct; -v lists each)" if len(lines) < len(findings) else ""
    print(f"{errors} error(s), {warnings} warning(s){more}")
    return 100 if errors else 0


def install_notes(findings: list[Finding]) -> list[str]:
    """Which Debian packages provide the programs not found (said once)."""
    from qmailkit.services import check as checking

    found = checking.packages(findings)
    if not found:
        return []
    programs = ", ".join(p for progs in found.values() for p in progs)
    packages = "package" + "s" * (len(found) > 1)
    return [
        f"note: {programs}: in the Debian {packages} {', '.join(found)} "
        + f"(apt-get install {' '.join(found)})"
    ]
