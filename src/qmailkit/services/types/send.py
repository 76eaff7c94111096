"""qmail-send: qmail-start with the default delivery, as root, logging to stdout.

The default delivery is the config's ``default_delivery`` or, when that is not
set, read from control/defaultdelivery when the service starts (LWQ's way),
falling back to ``./Maildir/``.
"""

from __future__ import annotations

from qmailkit.services import render as R
from qmailkit.services.config import Config, Option, Service, System, check_program
from qmailkit.services.policy import Finding
from qmailkit.services.shell import Var, quote

OPTIONS: dict[str, Option] = {
    "default_delivery": Option(
        "str",
        None,
        "default delivery instructions; not set = control/defaultdelivery at "
        "start, else ./Maildir/",
        "control/defaultdelivery",
        empty_ok=False,
    ),
    "program": Option(
        "str", "qmail-start", "the program started", "", check=check_program, empty_ok=False
    ),
}

PROFILES: dict[str, dict[str, object]] = {}
DEFAULT_PROFILE: str | None = None


def validate(svc: Service, system: System) -> tuple[str, str, str] | None:
    return None


def build(svc: Service, config: Config) -> R.Built:
    o = svc.options
    s = R.start(svc, config, OPTIONS)
    if o["default_delivery"] is not None:
        s.assign("DELIVERY", o["default_delivery"])
    else:
        dd = f"{config.system.qmail_home}/control/defaultdelivery"
        s.comment("The default delivery: control/defaultdelivery, else ./Maildir/.")
        s.line(f"DELIVERY=$(cat {quote(dd)} 2>/dev/null)")
        s.line('[ -n "$DELIVERY" ] || DELIVERY=./Maildir/')
    R.export_env(s, svc)
    checks = R.Checks(programs=[(o["program"], R.key(svc, "program"))])
    R.common_checks(svc, checks)
    s.command(R.wrap(svc, [o["program"], Var("DELIVERY")]))
    return R.Built(run=s.text(), checks=checks)


def policy(svc: Service) -> list[Finding]:
    return []  # no port: nothing a stranger reaches
