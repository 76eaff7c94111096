"""Render every configured service into the files of its service directory.

``render(config)`` is pure: it reads nothing but the config object (and where the
config file really is: the files name it by its canonical path, so another spelling
of the same file renders the same bytes) and returns,
per service, the files (``run``, ``log/run``, ...) with their modes, the
directories to create, who owns the log directory, the tcp rules to compile,
where the service listens and what ``services check`` should verify.  Writing
them is ``qmailkit.services.apply``'s job.

Each service type (a module under ``qmailkit.services.types``) provides
``OPTIONS``, optional ``PROFILES``/``DEFAULT_PROFILE``/``validate`` and
``build(service, config) -> Built``; this module adds what every service shares:
the header, the clean start with PATH, ``exec 2>&1``, the ``env`` table, ``softlimit``
and the logger.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from qmailkit.services.config import (
    COMMON_OPTIONS,
    MAX_CONN,
    Config,
    Option,
    Service,
    check_abs_path,
    check_listen_ip,
    check_user,
)
from qmailkit.services.shell import Script, Var, Word, quote


@dataclass(frozen=True)
class FileCheck:
    """A file the service needs when it starts."""

    path: str
    key: str  # the config key naming it, e.g. "services.mx.tls_cert"
    kind: str  # "cert", "rules", "auth_cdb", "validrcptto_cdb", "config"
    user: str | None = None  # must be readable by this account (None: root)
    secret: bool = False  # holds a private key: must not be world-readable
    required: bool = True  # False: the service runs without it (missing = a warning)


@dataclass
class Checks:
    """What ``services check`` verifies for one service (rendering never looks)."""

    users: list[str] = field(default_factory=list)  # accounts that must exist
    programs: list[tuple[str, str]] = field(default_factory=list)  # (program, config key)
    search_path: list[str] = field(default_factory=list)  # PATH of the run script
    files: list[FileCheck] = field(default_factory=list)
    # problems visible in the config alone: (config key, message, how to fix)
    warnings: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class RenderedService:
    name: str
    type: str
    dir: str  # where the service directory lives (service_root/name)
    files: dict[str, tuple[bytes, int]]  # path relative to the service dir → (content, mode)
    dirs: list[str]  # directories to create, relative to the service dir
    log_owner: str  # account owning log/main
    rules: tuple[str, str] | None  # (rules text file, cdb) to compile with qmailkit.tcprules
    checks: Checks
    listen: tuple[str, int] | None  # (ip, port); ip "" means "not set yet"
    user: str | None = None  # account the service process runs as; None = root/its own


@dataclass
class Built:
    """What a service type's ``build`` returns."""

    run: str
    checks: Checks
    listen: tuple[str, int] | None = None
    rules: tuple[str, str] | None = None
    user: str | None = None


def render(config: Config) -> dict[str, RenderedService]:
    # the type modules build on this module's pieces: importing them first is a cycle
    from qmailkit.services.types import TYPES, log  # noqa: PLC0415 - import cycle

    config = canonical(config)
    out: dict[str, RenderedService] = {}
    for name, svc in config.services.items():
        mod = TYPES[svc.type]
        built: Built = mod.build(svc, config)
        checks = built.checks
        checks.search_path = list(svc.options["path"])
        files = {"run": (built.run.encode("utf-8"), 0o755)}
        log_files, log_dirs, log_programs = log.render(svc, config)
        files.update(log_files)
        if svc.log_user not in checks.users:
            checks.users.append(svc.log_user)
        checks.programs.extend((p, "supervisor.kind") for p in log_programs)
        out[name] = RenderedService(
            name=name,
            type=svc.type,
            dir=svc.dir,
            files=files,
            dirs=log_dirs,
            log_owner=svc.log_user,
            rules=built.rules,
            checks=checks,
            listen=built.listen,
            user=built.user,
        )
    return out


def canonical(config: Config) -> Config:
    """``config`` naming its file by the real path (no symlink, no "..", not relative): the
    path goes into every generated file, and a run script may be read from anywhere."""
    if not os.path.exists(config.path):  # a text given to loads(), not a file
        return config
    return dataclasses.replace(config, path=os.path.realpath(config.path))


# --------------------------------------------------------------------------------------------
# Pieces the service types share


def key(svc: Service, option: str) -> str:
    return f"services.{svc.name}.{option}"


def settings(
    svc: Service, options: dict[str, Option], hide: frozenset[str] = frozenset()
) -> list[tuple[str, object, str]]:
    """The header's table of effective settings: the type's options, then the common ones.

    Options not set (None) and those in ``hide`` (irrelevant here, e.g. greylisting
    settings while greylisting is off) are left out to keep the table readable.
    """
    rows: list[tuple[str, object, str]] = []
    for name, opt in {**options, **COMMON_OPTIONS}.items():
        value = svc.options[name]
        if name == "env" or name.startswith("log_") or name in hide or value is None:
            continue
        if name == "path":
            value = ":".join(value)
        elif opt.kind == "env" and not value:
            continue
        rows.append((name, value, opt.var))
    for name, value in svc.options["env"].items():
        rows.append((f"env.{name}", value, ""))
    return rows


def start(
    svc: Service, config: Config, options: dict[str, Option], hide: frozenset[str] = frozenset()
) -> Script:
    """A new run script: header, helper functions, stderr merged, PATH."""
    profile = f" (profile {svc.profile})" if svc.profile else ""
    script = Script(
        f'{svc.type} service "{svc.name}"{profile}',
        config.path,
        settings(svc, options, hide),
        svc.options["path"],
    )
    script.line("exec 2>&1")
    script.blank()
    return script


def export_env(script: Script, svc: Service) -> None:
    """The free ``env`` table, exported last so it can override anything."""
    env = svc.options["env"]
    if env:
        script.blank()
        script.comment("From the env table of the config.")
        for name, value in env.items():
            script.setenv(name, value)


def wrap(svc: Service, words: list[Word]) -> list[Word]:
    """Put ``softlimit`` in front of the command when a memory limit is set."""
    limit = svc.options["softlimit"]
    if limit:
        return ["softlimit", "-m", str(limit), *words]
    return words


def common_checks(svc: Service, checks: Checks) -> None:
    if svc.options["softlimit"]:
        checks.programs.append(("softlimit", key(svc, "softlimit")))


# --------------------------------------------------------------------------------------------
# The small tcpserver services (pop3d, courierpassd, vpopmaild, courierauthd) share these.


def tcp_options(ip: str, port: int, user: str, maxconn: int = 40) -> dict[str, Option]:
    return {
        "ip": Option(
            "str",
            ip,
            'address to listen on; "0" = all; empty = refuse to start',
            "IP",
            check=check_listen_ip,
        ),
        "port": Option("int", port, "TCP port", "PORT", min=1, max=65535),
        "user": Option(
            "str",
            user,
            "account the server runs as (tcpserver -u/-g); empty = root",
            "",
            check=check_user,
        ),
        "maxconn": Option(
            "int",
            maxconn,
            "maximum simultaneous connections (tcpserver -c)",
            "MAX",
            min=1,
            max=MAX_CONN,
        ),
        "rules": Option(
            "str", "", "tcprules cdb (tcpserver -x); empty = none", "", check=check_abs_path
        ),
        "rules_source": Option(
            "str",
            None,
            "rules text compiled into rules by services apply; "
            "default: rules without .cdb; empty = do not compile",
            "",
            check=check_abs_path,
        ),
    }


def tcp_setup(
    s: Script, svc: Service, config: Config, checks: Checks
) -> tuple[list[Word], tuple[str, str] | None]:
    """Start-time checks for listen address, user and rules; returns the tcpserver options
    that follow ``-l HOST`` (``-c``, ``-u/-g``, ``-x``) and the rules to compile."""
    o = svc.options
    s.comment("Where to listen and as whom.")
    s.assign("IP", o["ip"])
    s.fatal_unless('[ -n "$IP" ]', f"ip is not set: set {key(svc, 'ip')} in {config.path}")
    if not o["ip"]:
        checks.warnings.append(
            (
                key(svc, "ip"),
                "no listen address: the service will not start",
                'set ip, e.g. "127.0.0.1"',
            )
        )
    words: list[Word] = ["-c", str(o["maxconn"])]
    user = o.get("user") or ""
    if user:
        checks.users.append(user)
        s.assign("SUSER", user)
        s.line('SUID=$(id -u "$SUSER") && SGID=$(id -g "$SUSER") ||')
        s.line(f'\tfatal "unknown user $SUSER: create it or change {key(svc, "user")}"')
        words += ["-u", Var("SUID"), "-g", Var("SGID")]
    rules_pair = None
    if o["rules"]:
        rules = o["rules"]
        s.fatal_unless(
            f"[ -r {quote(rules)} ]",
            f"rules cdb {rules} is missing: compile it with qmailkit tcprules",
        )
        checks.files.append(FileCheck(rules, key(svc, "rules"), "rules", user or None))
        words += ["-x", rules]
        source = o["rules_source"]
        if source:
            rules_pair = (source, rules)
    checks.programs.append(("tcpserver", ""))
    return words, rules_pair


def build_tcp_service(
    svc: Service, config: Config, options: dict[str, Option], args: list[Word]
) -> Built:
    """A plain ``tcpserver -vRH -l 0 ... IP PORT PROGRAM ARGS`` service (option ``program``)."""
    o = svc.options
    checks = Checks()
    s = start(svc, config, options)
    tcp, rules = tcp_setup(s, svc, config, checks)
    export_env(s, svc)
    checks.programs.append((o["program"], key(svc, "program")))
    common_checks(svc, checks)
    words: list[Word] = [
        "tcpserver",
        "-vRH",
        "-l",
        "0",
        *tcp,
        Var("IP"),
        str(o["port"]),
        o["program"],
        *args,
    ]
    s.command(wrap(svc, words))
    return Built(
        run=s.text(),
        checks=checks,
        listen=(o["ip"], o["port"]),
        rules=rules,
        user=o["user"] or None,
    )
