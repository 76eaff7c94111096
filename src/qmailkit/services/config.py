"""The services config file: one TOML file describing every supervised service.

    [supervisor]            kind, scan_dir, service_root, log_user, log_size, log_count
    [system]                qmail_home, vpopmail_home, courier_prefix, path
    [services.NAME]         type, profile, and the options of that type

Validation is strict: an unknown key, a value of the wrong type or an impossible
value raises ``InputError`` naming the file, the line (best effort: tomllib does
not report positions, so the line is found by a small scan of the text) and the
key as ``services.mx.port``, with a hint.  Every service type declares its options
in its module under ``qmailkit.services.types``; this module only applies them.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import reprlib
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qmailkit import fsutil, supervisor
from qmailkit.errors import InputError, QmailkitError
from qmailkit.services.shell import SCRIPT_VARIABLES, SHELL_VARIABLES

if TYPE_CHECKING:
    from qmailkit.services.types import ServiceType

# multilog accepts sizes 4096..16777215 and at least 2 files; keep the same limits for all.
MIN_LOG_SIZE, MAX_LOG_SIZE = 4096, 16777215
# multilog scans the whole log directory at every rotation; 10,000 files of 16 MB is 160 GB
MIN_LOG_COUNT, MAX_LOG_COUNT = 2, 10000
# djb's tools read numbers into C integers that wrap silently (softlimit -m 2^64+1 is 1 byte):
# no integer option is larger than a C int unless its own maximum says otherwise
INT_MAX = 2**31 - 1
MAX_CONN = 10000  # tcpserver -c: one process per connection
# softlimit -m: below a few MB not even tcpserver can load its libraries; above 1 TiB is none
MIN_SOFTLIMIT, MAX_SOFTLIMIT = 4 * 2**20, 2**40

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# apply's longest name is .retired-NAME-STAMP (and supervise/ paths inside the directory):
# 64 leaves room under NAME_MAX (255) for all of them
MAX_NAME = 64
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?\Z")
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z", re.ASCII)

# A value quoted into a message: escaped (never a raw line break) and short, whatever its
# size (a 100 kB string, a list of 100,000 items, arrays within arrays).
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlist = _SHOWN.maxdict = 4
_SHOWN.maxlevel = 2
_LONG_NUMBER = 20  # digits shown of an integer before it is described by its length


def shown(value: Any) -> str:
    """``value`` as a message shows it: like repr, escaped and at most about 80 characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(abs(value))
        if len(digits) > _LONG_NUMBER:
            return f"{'-' if value < 0 else ''}a number of {len(digits)} digits"
        return str(value)
    return _SHOWN.repr(value)


# --------------------------------------------------------------------------------------------
# Option declarations (used by the service type modules)


@dataclass(frozen=True)
class Option:
    """One option of a service type.

    ``kind`` is one of str, int, bool, list (of strings), env (table of variables).
    ``default`` is a value, ``None`` (not set: nothing exported) or a callable taking
    the ``System`` settings (for defaults such as ``$qmail_home/control/me``).
    ``var`` is the original script's variable, shown in docs and in the run script.
    """

    kind: str
    default: Any
    doc: str
    var: str = ""
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] | None = None
    # extra check on a set value: returns an error message and a hint, or None
    check: Callable[[Any], tuple[str, str] | None] | None = None
    empty_ok: bool = True  # for str: "" allowed (usually meaning "off")


def ipv4_octets(value: str) -> tuple[int, ...] | None:
    """The four numbers of a dotted-quad IPv4 address, or None.

    Only what tcpserver reads as exactly that address: four decimal numbers 0..255 (it
    parses any digits-and-dots text itself, wrapping 999 to 231 and dropping a short tail,
    so nothing else made of digits and dots means what it seems to).
    """
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
        return None
    octets = tuple(int(p) for p in parts)
    return octets if max(octets) <= 255 else None


def is_loopback(ip: str) -> bool:
    """A literal loopback address (127.x.y.z, or ::1 for an IPv6 tcpserver).

    Names such as localhost do not count: tcpserver resolves a name through DNS
    itself, not /etc/hosts, so it may bind anywhere, or fail.
    """
    octets = ipv4_octets(ip)
    return octets[0] == 127 if octets else ip == "::1"


def check_listen_ip(value: str) -> tuple[str, str] | None:
    if value in ("", "0"):
        return None
    hint = 'use an address such as "192.0.2.25", or "0" for all'
    if all(c.isdigit() or c == "." for c in value):
        if ipv4_octets(value) is None:
            return (
                f"not an IPv4 address: {shown(value)}",
                'write four numbers 0..255 separated by dots, or "0" for all',
            )
        return None
    if ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            return (f"not an IPv6 address: {shown(value)}", hint)
        return None
    if _plausible_host(value):
        return None
    return (f"neither an IP address nor a host name: {shown(value)}", hint)


def _plausible_host(value: str) -> bool:
    """A DNS name tcpserver could look up: letters, digits and '-' in labels of at most 63,
    at most 253 in all, and a last label that starts with a letter (so not 1e5 or 0x7f...)."""
    labels = value.split(".")
    return (
        len(value) <= 253
        and labels[-1][:1].isalpha()
        and all(_LABEL_RE.match(label) for label in labels)
    )


def check_user(value: str) -> tuple[str, str] | None:
    if value == "" or _USER_RE.match(value):
        return None
    return (f"not a user name: {shown(value)}", "give an account name such as qmaild")


def check_abs_path(value: str) -> tuple[str, str] | None:
    if value == "" or value.startswith("/"):
        return check_one_line(value)  # paths are exported, and logged, as one line
    return (f"not an absolute path: {shown(value)}", "start the path with /")


def check_program(value: str) -> tuple[str, str] | None:
    """A program: an absolute path or a bare name looked up in the service's path."""
    if value == "" or value.startswith("/") or "/" not in value:
        return check_one_line(value)
    return (
        f"a program must be a bare name or an absolute path: {shown(value)}",
        "write /full/path/to/program, or just its name to look it up in path",
    )


def check_one_line(value: str) -> tuple[str, str] | None:
    """Text that ends up in one SMTP reply, header, protocol line or logged variable
    (``NAME="value"``, one log line): no line break.  The one check for all of them."""
    if "\n" in value or "\r" in value:
        return (
            "contains a line break",
            "write it on one line: it goes into one SMTP line, header or log line",
        )
    return None


def check_zone(value: str) -> tuple[str, str] | None:
    # rblsmtpd takes "zone" or "zone:message"; the zone is what must look like a name,
    # and the message is sent to the client as one SMTP reply.
    zone = value.split(":", 1)[0]
    if not _HOST_RE.match(zone):
        return (f"not a DNS zone: {shown(value)}", 'use a zone name such as "zen.spamhaus.org"')
    return check_one_line(value)


def _check_softlimit(value: int) -> tuple[str, str] | None:
    if 0 < value < MIN_SOFTLIMIT:
        return (
            f"{value} is too small: no program starts with less",
            f"give at least {MIN_SOFTLIMIT} (4 MiB), or 0 for no limit",
        )
    return None


# Options every service has, whatever its type.
COMMON_OPTIONS: dict[str, Option] = {
    "path": Option(
        "list",
        lambda system: list(system.path),
        "PATH for the service (searched for every program given as a bare name)",
        "PATH",
        check=check_abs_path,
    ),
    "env": Option(
        "env",
        lambda system: {},
        "extra environment variables, exported and logged before the command",
    ),
    "softlimit": Option(
        "int",
        0,
        "memory limit in bytes (softlimit -m); 0 = none",
        min=0,
        max=MAX_SOFTLIMIT,
        check=_check_softlimit,
    ),
    "log_user": Option(
        "str",
        None,
        "user the logger runs as (default: [supervisor] log_user)",
        check=check_user,
        empty_ok=False,
    ),
    "log_size": Option(
        "int",
        None,
        "bytes per log file (default: [supervisor] log_size)",
        min=MIN_LOG_SIZE,
        max=MAX_LOG_SIZE,
    ),
    "log_count": Option(
        "int",
        None,
        "log files kept, as multilog n (default: [supervisor])",
        min=MIN_LOG_COUNT,
        max=MAX_LOG_COUNT,
    ),
}


# --------------------------------------------------------------------------------------------
# The loaded config


@dataclass(frozen=True)
class SupervisorSettings:
    """The ``[supervisor]`` table: which suite, where, and how the loggers keep files."""

    kind: str
    scan_dir: str
    service_root: str
    log_user: str
    log_size: int
    log_count: int


@dataclass(frozen=True)
class System:
    qmail_home: str
    vpopmail_home: str
    courier_prefix: str
    path: tuple[str, ...]


@dataclass
class Service:
    """One ``[services.NAME]`` table, validated, with every default filled in."""

    name: str
    type: str
    profile: str | None
    options: dict[str, Any]  # every option of the type, effective value (None = not set)
    explicit: frozenset[str] = frozenset()  # options written in the file
    dir: str = ""  # service_root/name
    log_user: str = ""
    log_size: int = 0
    log_count: int = 0


@dataclass
class Config:
    path: str
    supervisor: SupervisorSettings
    system: System
    services: dict[str, Service] = field(default_factory=dict)
    text: str = ""


# --------------------------------------------------------------------------------------------
# Loading


#: a config larger than this is not a config (5 MB of comments still load)
CONFIG_LIMIT = 16 * 2**20
#: the most digits Python turns into an int by default (sys.get_int_max_str_digits())
_LONGEST_INT_TEXT = 4300
_BOM = "\ufeff"


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at ``path`` (a regular file, read with a bound)."""
    path = os.fspath(path)
    try:
        raw = fsutil.read_bounded(path, CONFIG_LIMIT)
    except FileNotFoundError:
        raise InputError(
            "config file not found",
            path=path,
            hint="create it (see examples/qmailkit.toml) or pass --config",
        ) from None
    except QmailkitError as err:
        raise InputError(f"cannot read config: {err.message}", path=path, hint=err.hint) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", path=path, line=line) from None
    return loads(text, path)


def loads(text: str, path: str = "<string>") -> Config:
    """Validate config ``text``; ``path`` is used in messages and run-script headers."""
    if text.startswith(_BOM):
        raise InputError(
            "starts with a UTF-8 byte-order mark",
            path=path,
            line=1,
            hint="remove the byte-order mark: save the file as UTF-8 without the bytes EF BB BF "
            "at its start",
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) if m else msg
        if m is None and "end of document" in msg:
            line = text.count("\n") + 1
        raise InputError(
            f"TOML syntax error: {msg}",
            path=path,
            line=line,
            hint="see https://toml.io for the syntax",
        ) from None
    except RecursionError:
        raise InputError(
            "TOML nested too deeply to read: arrays or tables within each other",
            path=path,
            hint="no qmailkit setting nests more than two levels",
        ) from None
    except ValueError as err:
        # Python refuses to convert an integer of more than 4300 digits (CVE-2020-10735)
        # and tomllib lets that ValueError out: a number no setting could take anyway
        line = _line_of_long_number(text)
        if line is None:
            raise InputError(f"TOML cannot be read: {err}", path=path) from None
        raise InputError(
            "an integer too long to read",
            path=path,
            line=line,
            hint="no qmailkit setting takes a number of that many digits",
        ) from None
    v = _Validator(text, path)
    return v.config(data)


class _Validator:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.names: list[str] = []  # service names, for keys whose name holds dots

    def fail(self, key: str, message: str, hint: str | None = None) -> InputError:
        parts = _key_parts(key, self.names)
        return InputError(
            f"{self.shown_key(key)}: {message}",
            path=self.path,
            line=_locate(self.text, parts),
            hint=hint,
        )

    def shown_key(self, key: str) -> str:
        """``key`` as a message shows it: parts that are not plain names quoted and escaped."""
        parts = _key_parts(key, self.names)
        return ".".join(p if _NAME_RE.match(p) else _quoted(p) for p in parts)

    # -- generic checks -------------------------------------------------------------------
    def unknown(
        self, key: str, table: Mapping[str, Any], known: Mapping[str, Any] | set[str], what: str
    ) -> None:
        for k in table:
            if k not in known:
                close = _closest(k, known)
                hint = (
                    f"did you mean {close}?"
                    if close
                    else f"known keys of {what}: " + ", ".join(sorted(known))
                )
                raise self.fail(f"{key}.{k}" if key else k, "unknown key", hint)

    def table(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(
                key,
                f"expected a table, got {_tname(value)}",
                f"write it as [{self.shown_key(key)}]",
            )
        return value

    def value(self, key: str, opt: Option, value: Any) -> Any:
        """``value`` checked as an ``opt`` (its kind, bounds and own check), as it is used."""
        value = self._READERS[opt.kind](self, key, opt, value)
        if opt.check is not None:
            for item in value if opt.kind == "list" else [value]:
                problem = opt.check(item)
                if problem is not None:
                    raise self.fail(key, problem[0], problem[1])
        return value

    def _str(self, key: str, opt: Option, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(
                key, f"expected a string, got {_tname(value)}", "put the value in double quotes"
            )
        self.no_nul(key, value)
        if not opt.empty_ok and value == "":
            raise self.fail(key, "must not be empty")
        if opt.choices is not None and value not in opt.choices:
            raise self.fail(
                key, f"unknown value {shown(value)}", "use one of " + ", ".join(opt.choices)
            )
        return value

    def _int(self, key: str, opt: Option, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(
                key, f"expected an integer, got {_tname(value)}", "write a number without quotes"
            )
        if opt.min is not None and value < opt.min:
            raise self.fail(key, f"{shown(value)} is too small", f"the minimum is {opt.min}")
        top = INT_MAX if opt.max is None else opt.max
        if value > top:
            raise self.fail(key, f"{shown(value)} is too large", f"the maximum is {top}")
        return value

    def _bool(self, key: str, opt: Option, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(
                key,
                f"expected true or false, got {_tname(value)}",
                "write true or false without quotes",
            )
        return value

    def _list(self, key: str, opt: Option, value: Any) -> list[str]:
        if isinstance(value, str):
            raise self.fail(
                key,
                "expected a list of strings, got a string",
                f"write it as [{_toml_string(value)}]",
            )
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise self.fail(
                key, f"expected a list of strings, got {_tname(value)}", 'write it as ["a", "b"]'
            )
        for item in value:
            self.no_nul(key, item)
            if item == "":
                raise self.fail(key, "empty string in the list", "remove it")
        return list(value)

    def _env(self, key: str, opt: Option, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(
                key,
                f"expected a table of variables, got {_tname(value)}",
                'write it as { NAME = "value" }',
            )
        return {name: self._variable(key, name, v) for name, v in value.items()}

    def _variable(self, key: str, name: str, value: Any) -> str:
        """One variable of an env table, as the string exported."""
        sub = f"{key}.{name}"
        if not _ENV_NAME_RE.match(name):
            raise self.fail(
                sub,
                "not a valid environment variable name",
                "use letters, digits and _ and do not start with a digit",
            )
        if key.endswith(".env") and (
            name in SCRIPT_VARIABLES or name in SHELL_VARIABLES or name.startswith("_qk_")
        ):
            raise self.fail(
                sub,
                "reserved: the run script or the shell uses this variable",
                "set it with the service's own option, see docs/services-config.md",
            )
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif isinstance(value, int):
            value = str(value)
        elif not isinstance(value, str):
            raise self.fail(sub, f"expected a string or number, got {_tname(value)}")
        self.no_nul(sub, value)
        problem = check_one_line(value)  # the run script logs each variable as one line
        if problem is not None:
            raise self.fail(sub, *problem)
        return value

    _READERS: dict[str, Callable[[_Validator, str, Option, Any], Any]] = {
        "str": _str,
        "int": _int,
        "bool": _bool,
        "list": _list,
        "env": _env,
    }

    def no_nul(self, key: str, value: str) -> None:
        if "\0" in value:
            raise self.fail(
                key,
                "contains a NUL character",
                "programs cannot receive NUL in arguments or environment",
            )

    # -- the sections --------------------------------------------------------------------
    def config(self, data: dict[str, Any]) -> Config:
        self.unknown("", data, {"supervisor", "system", "services"}, "the top level")
        sup = self.supervisor(self.table("supervisor", data.get("supervisor", {})))
        system = self.system(self.table("system", data.get("system", {})))
        services_raw = self.table("services", data.get("services", {}))
        if not services_raw:
            raise InputError(
                "no services configured",
                path=self.path,
                hint='add a table such as [services.mx] with type = "qmail-smtpd"',
            )
        cfg = Config(path=self.path, supervisor=sup, system=system, text=self.text)
        self.names = list(services_raw)
        for name, table in services_raw.items():
            cfg.services[name] = self.service(name, table, sup, system)
        return cfg

    def supervisor(self, t: dict[str, Any]) -> SupervisorSettings:
        opts = {
            "kind": Option("str", supervisor.DEFAULT_KIND, "", choices=supervisor.KINDS),
            "scan_dir": Option("str", None, "", check=check_abs_path, empty_ok=False),
            "service_root": Option(
                "str", "/var/qmail/supervise", "", check=check_abs_path, empty_ok=False
            ),
            "log_user": Option("str", "qmaill", "", check=check_user, empty_ok=False),
            "log_size": Option("int", 1048576, "", min=MIN_LOG_SIZE, max=MAX_LOG_SIZE),
            "log_count": Option("int", 1024, "", min=MIN_LOG_COUNT, max=MAX_LOG_COUNT),
        }
        self.unknown("supervisor", t, opts, "[supervisor]")
        v = {
            k: (self.value(f"supervisor.{k}", o, t[k]) if k in t else o.default)
            for k, o in opts.items()
        }
        if v["scan_dir"] is None:
            v["scan_dir"] = supervisor.get(v["kind"]).scan_dir
        return SupervisorSettings(**v)

    def system(self, t: dict[str, Any]) -> System:
        opts = {
            "qmail_home": Option("str", "/var/qmail", "", check=check_abs_path, empty_ok=False),
            "vpopmail_home": Option(
                "str", "/home/vpopmail", "", check=check_abs_path, empty_ok=False
            ),
            "courier_prefix": Option(
                "str", "/usr/lib/courier-imap", "", check=check_abs_path, empty_ok=False
            ),
            "path": Option("list", None, "", check=check_abs_path),
        }
        self.unknown("system", t, opts, "[system]")
        v = {
            k: (self.value(f"system.{k}", o, t[k]) if k in t else o.default)
            for k, o in opts.items()
        }
        if v["path"] is None:
            v["path"] = [v["qmail_home"] + "/bin", "/usr/local/bin", "/usr/bin", "/bin"]
        v["path"] = tuple(v["path"])
        return System(**v)

    def service(self, name: str, t: Any, sup: SupervisorSettings, system: System) -> Service:
        key = f"services.{name}"
        t = self.table(key, t)
        self.service_name(key, name)
        stype, kind = self.service_type(key, t)
        profile = self.profile(key, t, stype, kind)
        options: dict[str, Option] = {**COMMON_OPTIONS, **kind.OPTIONS}
        self.unknown(key, t, {"type", "profile", *options}, f"a {stype} service")
        overrides = kind.PROFILES.get(profile, {}) if profile else {}
        values: dict[str, Any] = {}
        for oname, opt in options.items():
            if oname in t:
                values[oname] = self.value(f"{key}.{oname}", opt, t[oname])
            else:
                default = overrides.get(oname, opt.default)
                values[oname] = default(system) if callable(default) else default
        if "rules_source" in values and values["rules_source"] is None:
            # the rules text next to the cdb, as tcprules users keep it: smtp.cdb ← smtp
            rules = values.get("rules") or ""
            values["rules_source"] = rules[:-4] if rules.endswith(".cdb") else ""
        svc = Service(
            name=name,
            type=stype,
            profile=profile,
            options=values,
            explicit=frozenset(k for k in t if k in options),
            dir=sup.service_root.rstrip("/") + "/" + name,
            log_user=values["log_user"] or sup.log_user,
            log_size=values["log_size"] or sup.log_size,
            log_count=values["log_count"] or sup.log_count,
        )
        problem = kind.validate(svc, system)
        if problem is not None:
            okey, message, hint = problem
            raise self.fail(f"{key}.{okey}" if okey else key, message, hint)
        return svc

    def service_name(self, key: str, name: str) -> None:
        if not _NAME_RE.match(name):
            raise self.fail(
                key,
                "not a usable service directory name",
                "use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        if len(name) > MAX_NAME:
            raise self.fail(
                key,
                f"service name of {len(name)} characters is too long",
                f"use at most {MAX_NAME}: apply keeps a retired service as "
                ".retired-NAME-STAMP, and every file name must fit 255 bytes",
            )

    def service_type(self, key: str, t: dict[str, Any]) -> tuple[str, ServiceType]:
        # the type modules build on this module's Option: importing them first is a cycle
        from qmailkit.services.types import TYPES  # noqa: PLC0415 - import cycle

        if "type" not in t:
            raise self.fail(
                key, "missing type", "add type = one of " + ", ".join(f'"{n}"' for n in TYPES)
            )
        stype = t["type"]
        if not isinstance(stype, str) or stype not in TYPES:
            raise self.fail(
                f"{key}.type",
                f"unknown service type {shown(stype)}",
                "use one of " + ", ".join(TYPES),
            )
        return stype, TYPES[stype]

    def profile(self, key: str, t: dict[str, Any], stype: str, kind: ServiceType) -> str | None:
        profiles = kind.PROFILES
        profile = t.get("profile", kind.DEFAULT_PROFILE)
        if "profile" in t:
            if not profiles:
                raise self.fail(
                    f"{key}.profile", f"type {stype} has no profiles", "remove the profile key"
                )
            if not isinstance(profile, str) or profile not in profiles:
                raise self.fail(
                    f"{key}.profile",
                    f"unknown profile {shown(profile)}",
                    f"{stype} profiles: " + ", ".join(profiles),
                )
        elif profiles and profile is None:
            raise self.fail(
                key,
                "missing profile",
                "add profile = one of " + ", ".join(f'"{p}"' for p in profiles),
            )
        return profile


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string (JSON's escapes are TOML's), or a stand-in if long."""
    quoted = json.dumps(value, ensure_ascii=False)
    return quoted if len(quoted) <= _SHOWN.maxstring else '"..."'


def _line_of_long_number(text: str) -> int | None:
    m = re.search(f"[0-9][0-9_]{{{_LONGEST_INT_TEXT},}}", text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _tname(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number with a fraction",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _closest(word: str, known: Collection[str]) -> str | None:
    m = difflib.get_close_matches(word, list(known), n=1, cutoff=0.75)
    return m[0] if m else None


_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _quoted(part: str) -> str:
    """A key part shown in quotes, escaped: no raw line break or NUL in a message."""
    return '"' + part.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _key_parts(key: str, names: list[str]) -> list[str]:
    """The parts of dotted ``key``, keeping a service name that holds dots in one piece."""
    if key.startswith("services."):
        rest = key[len("services.") :]
        for name in sorted(names, key=len, reverse=True):
            if rest == name or rest.startswith(name + "."):
                tail = rest[len(name) + 1 :]
                return ["services", name, *(tail.split(".") if tail else [])]
    return key.split(".")


def _unquote(part: str) -> str:
    if part[:1] == "'":
        return part[1:-1]
    if part[:1] == '"':
        try:  # TOML's own reading of the escapes in a basic string
            return tomllib.loads(f"k = {part}")["k"]
        except tomllib.TOMLDecodeError:
            return part[1:-1]
    return part


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'""", key)
    return [_unquote(p) for p in parts]


def _locate(text: str, key: str | list[str]) -> int | None:
    """Best-effort line number of ``key`` (dotted, or its parts): its assignment, or its
    table header."""
    want = key.split(".") if isinstance(key, str) else key
    header_line: int | None = None
    dotted_line: int | None = None  # the first `want.x = ...`: a table made by dotted keys
    current: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        m = _HEADER_RE.match(line)
        if m and not _KEY_RE.match(line):
            current = _split_dotted(m.group(1))
            if current == want:
                header_line = n
            continue
        m = _KEY_RE.match(line)
        if m:
            full = current + _split_dotted(m.group(1))
            if full == want:
                return n
            if dotted_line is None and full[: len(want)] == want:
                dotted_line = n
            # an inline table or a table-valued key containing the wanted key
            if len(full) < len(want) and want[: len(full)] == full:
                rest = want[len(full)]
                name = re.escape(rest)
                if re.search(r"[{,]\s*(" + name + '|"' + name + r'")\s*=', line):
                    return n
    if header_line is not None:
        return header_line
    if dotted_line is not None:
        return dotted_line
    # fall back to the nearest enclosing table
    if len(want) > 1:
        return _locate(text, want[:-1])
    return None
