"""The services config: defaults, profiles, and every validation error (message, key, line)."""

from __future__ import annotations

import os
import subprocess

import pytest

from qmailkit.errors import InputError
from qmailkit.services import config
from qmailkit.services.types import TYPES

MX = '[services.mx]\ntype = "qmail-smtpd"\n'


def load_error(text: str) -> InputError:
    with pytest.raises(InputError) as info:
        config.loads(text, "/etc/q.toml")
    assert info.value.exit_code == 100
    return info.value


# --------------------------------------------------------------------------------------------
# Defaults and profiles


def test_defaults_of_an_empty_supervisor_table():
    cfg = config.loads(MX, "/etc/q.toml")
    assert cfg.path == "/etc/q.toml"
    sup = cfg.supervisor
    assert (sup.kind, sup.scan_dir, sup.service_root) == (
        "daemontools",
        "/service",
        "/var/qmail/supervise",
    )
    assert (sup.log_user, sup.log_size, sup.log_count) == ("qmaill", 1048576, 1024)
    assert cfg.system.qmail_home == "/var/qmail"
    assert cfg.system.path == ("/var/qmail/bin", "/usr/local/bin", "/usr/bin", "/bin")
    mx = cfg.services["mx"]
    assert (mx.name, mx.type, mx.profile, mx.dir) == (
        "mx",
        "qmail-smtpd",
        "mx",
        "/var/qmail/supervise/mx",
    )
    assert (mx.log_user, mx.log_size, mx.log_count) == ("qmaill", 1048576, 1024)


def test_scan_dir_default_follows_the_kind():
    for kind, scan in (("runit", "/etc/service"), ("s6", "/run/service")):
        cfg = config.loads(f'[supervisor]\nkind = "{kind}"\n' + MX)
        assert cfg.supervisor.scan_dir == scan


def test_original_defaults_of_qmail_smtpd():
    o = config.loads(MX).services["mx"].options
    assert o["ip"] == "" and o["port"] == 25 and o["user"] == "qmaild" and o["maxconn"] == 50
    assert o["rules"] == "/etc/tcp/smtp.cdb" and o["rules_source"] == "/etc/tcp/smtp"
    assert o["rbl_block"] == ["sbl.spamhaus.org", "xbl.spamhaus.org"] and o["rbl_allow"] == []
    assert o["greeting"] == "Mail server ready"
    assert (o["greet_delay"], o["drop_pre_greet"], o["mfcheck"], o["spf"]) == (5, True, 3, 3)
    assert o["tls_cert"] == "/var/qmail/control/servercert.pem"
    assert o["validrcptto_cdb"] == "/var/qmail/control/validrcptto.cdb"
    assert (o["validrcptto_limit"], o["validrcptto_log"]) == (10, 2)
    assert o["checkpassword"] == "/home/vpopmail/bin/vchkpw"
    assert o["auth"] is True and o["require_auth"] is False and o["maxrcpt"] is None


def test_system_homes_move_the_defaults():
    cfg = config.loads('[system]\nqmail_home = "/opt/qmail"\nvpopmail_home = "/opt/vpop"\n' + MX)
    o = cfg.services["mx"].options
    assert o["tls_cert"] == "/opt/qmail/control/servercert.pem"
    assert o["checkpassword"] == "/opt/vpop/bin/vchkpw"
    assert o["path"] == ["/opt/qmail/bin", "/usr/local/bin", "/usr/bin", "/bin"]


@pytest.mark.parametrize(
    "profile, expect",
    [
        (
            "submission",
            {
                "port": 587,
                "force_tls": True,
                "require_auth": True,
                "rblsmtpd": "",
                "greylist": "",
                "greet_delay": 0,
                "drop_pre_greet": False,
                "spf": 0,
                "fixcrio": "",
                "mfcheck": 0,
                "ssl": False,
            },
        ),
        (
            "smtps",
            {
                "port": 465,
                "ssl": True,
                "require_auth": True,
                "rblsmtpd": "",
                "spf": 0,
                "force_tls": False,
                "greet_delay": 0,
            },
        ),
        (
            "local",
            {
                "ip": "127.0.0.1",
                "port": 25,
                "relay_client": True,
                "rblsmtpd": "",
                "rules": "",
                "rules_source": "",
                "auth": False,
            },
        ),
        (
            "mx",
            {
                "port": 25,
                "force_tls": False,
                "require_auth": False,
                "rblsmtpd": "rblsmtpd",
                "relay_client": False,
            },
        ),
    ],
)
def test_smtpd_profiles(profile, expect):
    o = config.loads(MX + f'profile = "{profile}"\n').services["mx"].options
    assert {k: o[k] for k in expect} == expect


def test_explicit_options_beat_the_profile():
    svc = config.loads(MX + 'profile = "submission"\nport = 2525\nspf = 2\n').services["mx"]
    assert svc.options["port"] == 2525 and svc.options["spf"] == 2
    assert svc.explicit == {"port", "spf"}


def test_per_service_log_settings_override_the_supervisor():
    svc = config.loads(MX + 'log_user = "nobody"\nlog_count = 10\n').services["mx"]
    assert (svc.log_user, svc.log_size, svc.log_count) == ("nobody", 1048576, 10)


def test_courier_dirs_follow_the_prefix():
    cfg = config.loads(
        '[services.imap]\ntype = "courier-imap"\nprofile = "imapssl"\n'
        'prefix = "/opt/courier"\nsysconfdir = "/etc/courier"\n'
    )
    o = cfg.services["imap"].options
    assert (o["bindir"], o["sbindir"], o["libexecdir"], o["sysconfdir"], o["port"]) == (
        "/opt/courier/bin",
        "/opt/courier/sbin",
        "/opt/courier/libexec",
        "/etc/courier",
        993,
    )


def test_other_types_defaults():
    cfg = config.loads(
        '[services.p]\ntype = "courierpassd"\n[services.v]\ntype = "vpopmaild"\n'
        '[services.a]\ntype = "courierauthd"\n[services.pop]\ntype = "qmail-pop3d"\n'
        'profile = "pop3s"\n[services.send]\ntype = "qmail-send"\n'
    )
    s = cfg.services
    assert (s["p"].options["ip"], s["p"].options["port"], s["p"].options["user"]) == (
        "127.0.0.1",
        106,
        "",
    )
    assert (s["v"].options["ip"], s["v"].options["port"], s["v"].options["user"]) == (
        "127.0.0.1",
        8900,
        "vpopmail",
    )
    assert s["v"].options["program"] == "/home/vpopmail/bin/vpopmaild"
    assert s["a"].options["ip"] == "127.0.0.1"
    assert (s["pop"].options["port"], s["pop"].options["ssl"]) == (995, True)
    assert s["send"].options["default_delivery"] is None
    assert list(s) == ["p", "v", "a", "pop", "send"]  # file order kept


def test_env_values_numbers_and_booleans_become_strings():
    svc = config.loads(MX + 'env = { DATABYTES = 20000000, NOBADHELO = true, X = "" }\n')
    assert svc.services["mx"].options["env"] == {"DATABYTES": "20000000", "NOBADHELO": "1", "X": ""}


def test_every_type_is_registered_with_options_and_build():
    for name, mod in TYPES.items():
        assert callable(mod.build), name
        for oname, opt in mod.OPTIONS.items():
            assert opt.doc, (name, oname)
            assert opt.kind in ("str", "int", "bool", "list", "env"), (name, oname)


# --------------------------------------------------------------------------------------------
# Errors: every one names the file, the line, the key and says what to do


ERRORS = [
    # (config text, line, message, hint fragment)
    (
        '[services.mx]\ntype = "qmail-smtpd"\nport = \n',
        3,
        "TOML syntax error: Invalid value",
        "toml.io",
    ),
    ('[services.mx\ntype = "qmail-smtpd"\n', 1, "TOML syntax error", "toml.io"),
    ("foo = 1\n" + MX, 1, "foo: unknown key", "services, supervisor, system"),
    (MX + "prot = 25\n", 3, "services.mx.prot: unknown key", "did you mean port?"),
    (
        MX + 'port = "25x"\n',
        3,
        "services.mx.port: expected an integer, got a string",
        "without quotes",
    ),
    (
        MX + "port = 25.0\n",
        3,
        ("services.mx.port: expected an integer, got a number with a fraction"),
        "without quotes",
    ),
    (MX + "port = 70000\n", 3, "services.mx.port: 70000 is too large", "maximum is 65535"),
    (MX + "port = 0\n", 3, "services.mx.port: 0 is too small", "minimum is 1"),
    (MX + "maxconn = true\n", 3, "services.mx.maxconn: expected an integer, got a boolean", None),
    (
        MX + 'auth = "yes"\n',
        3,
        "services.mx.auth: expected true or false, got a string",
        "true or false",
    ),
    (
        MX + "greeting = 5\n",
        3,
        "services.mx.greeting: expected a string, got an integer",
        "double quotes",
    ),
    (
        MX + 'greeting = "a\\r\\nb"\n',
        3,
        "services.mx.greeting: contains a line break",
        "one SMTP line",
    ),
    (MX + 'hostname = "a\\nb"\n', 3, "services.mx.hostname: contains a line break", None),
    (MX + 'greeting = "a\\u0000b"\n', 3, "services.mx.greeting: contains a NUL character", None),
    (
        MX + 'rbl_block = "zen.spamhaus.org"\n',
        3,
        "services.mx.rbl_block: expected a list of strings, got a string",
        '["zen.spamhaus.org"]',
    ),
    (
        MX + 'rbl_block = ["zen", 3]\n',
        3,
        "services.mx.rbl_block: expected a list of strings, got a list",
        None,
    ),
    (MX + 'rbl_block = ["bad zone"]\n', 3, "services.mx.rbl_block: not a DNS zone", None),
    (MX + 'rbl_allow = [""]\n', 3, "services.mx.rbl_allow: empty string in the list", None),
    (
        MX + 'ip = "1.2.3.4 5"\n',
        3,
        "services.mx.ip: neither an IP address nor a host name",
        '"0" for all',
    ),
    (MX + 'user = "qmail d"\n', 3, "services.mx.user: not a user name", None),
    (MX + 'user = ""\n', 3, "services.mx.user: must not be empty", None),
    (
        MX + 'rules = "etc/tcp.cdb"\n',
        3,
        "services.mx.rules: not an absolute path",
        "start the path with /",
    ),
    (
        MX + 'smtpd = "bin/qmail-smtpd"\n',
        3,
        "services.mx.smtpd: a program must be a bare name or an absolute path",
        None,
    ),
    (MX + "spf = 7\n", 3, "services.mx.spf: 7 is too large", "maximum is 6"),
    (MX + "validrcptto_log = -1\n", 3, "services.mx.validrcptto_log: -1 is too small", None),
    (
        MX + 'env = { "1X" = "a" }\n',
        3,
        ("services.mx.env.1X: not a valid environment variable name"),
        None,
    ),
    (MX + 'env = { IP = "a" }\n', 3, "services.mx.env.IP: reserved", "own option"),
    (MX + 'env = { PATH = "/bin" }\n', 3, "services.mx.env.PATH: reserved", None),
    (MX + 'env = { IFS = "x" }\n', 3, "services.mx.env.IFS: reserved", None),
    (MX + 'env = "A=b"\n', 3, "services.mx.env: expected a table of variables, got a string", None),
    (
        MX + '[services.mx.env]\nA = "a"\nB = [1]\n',
        5,
        "services.mx.env.B: expected a string or number, got a list",
        None,
    ),
    (
        MX + 'auth_set = { "bad-name" = "1" }\n',
        3,
        "services.mx.auth_set.bad-name: not a valid environment variable name",
        None,
    ),
    (MX + 'auth_unset = ["A B"]\n', 3, "services.mx.auth_unset: not a variable name", None),
    ("[services.mx]\nport = 25\n", 1, "services.mx: missing type", '"qmail-smtpd"'),
    (
        '[services.mx]\ntype = "smtpd"\n',
        2,
        "services.mx.type: unknown service type 'smtpd'",
        "qmail-smtpd",
    ),
    ("[services.mx]\ntype = 1\n", 2, "services.mx.type: unknown service type 1", None),
    (MX + 'profile = "sub"\n', 3, "services.mx.profile: unknown profile 'sub'", "submission"),
    (
        '[services.s]\ntype = "qmail-send"\nprofile = "mx"\n',
        3,
        "services.s.profile: type qmail-send has no profiles",
        "remove",
    ),
    ('[services.imap]\ntype = "courier-imap"\n', 1, "services.imap: missing profile", '"imapssl"'),
    (
        '[services."a b"]\ntype = "qmail-smtpd"\n',
        1,
        'services."a b": not a usable service directory name',
        None,
    ),
    ("[services]\nmx = 3\n", 2, "services.mx: expected a table, got an integer", None),
    ("services = 3\n", 1, "services: expected a table, got an integer", None),
    (
        '[supervisor]\nkind = "systemd"\n' + MX,
        2,
        "supervisor.kind: unknown value 'systemd'",
        "daemontools, runit, s6",
    ),
    ("[supervisor]\nlog_size = 10\n" + MX, 2, "supervisor.log_size: 10 is too small", "4096"),
    (
        "[supervisor]\nlog_size = 16777216\n" + MX,
        2,
        "supervisor.log_size: 16777216 is too large",
        None,
    ),
    ("[supervisor]\nlog_count = 1\n" + MX, 2, "supervisor.log_count: 1 is too small", None),
    (
        '[supervisor]\nscan_dir = "service"\n' + MX,
        2,
        ("supervisor.scan_dir: not an absolute path"),
        None,
    ),
    (
        "[supervisor]\nlogsize = 1\n" + MX,
        2,
        "supervisor.logsize: unknown key",
        "did you mean log_size?",
    ),
    ('[system]\npath = ["bin"]\n' + MX, 2, "system.path: not an absolute path", None),
    ('[system]\nqmail_home = ""\n' + MX, 2, "system.qmail_home: must not be empty", None),
    ("[supervisor]\n", None, "no services configured", "[services.mx]"),
    (
        MX + "force_tls = true\ndeny_tls = true\n",
        3,
        "services.mx.force_tls: force_tls and deny_tls together refuse every client",
        None,
    ),
    (
        MX + 'force_tls = true\ntls_cert = ""\n',
        3,
        "services.mx.force_tls: force_tls needs a certificate",
        None,
    ),
    (
        MX + 'profile = "smtps"\ntls_cert = ""\n',
        4,
        "services.mx.tls_cert: ssl = true needs a certificate",
        None,
    ),
    (
        MX + "require_auth = true\nauth = false\n",
        3,
        "services.mx.require_auth: require_auth without auth refuses every client",
        None,
    ),
    (
        MX + 'require_auth = true\ntls_cert = ""\n',
        3,
        (
            "services.mx.require_auth: require_auth refuses every client: AUTH is offered only "
            "over TLS, and there is no TLS"
        ),
        "set tls_cert",
    ),
    (
        MX + "require_auth = true\ndeny_tls = true\n",
        3,
        "services.mx.require_auth: require_auth refuses every client",
        None,
    ),
    (
        MX + 'checkpassword = ""\n',
        1,
        "services.mx.auth: auth needs auth_cdb or a checkpassword program",
        None,
    ),
    (
        MX + 'rules = ""\nrules_source = "/etc/tcp/smtp"\n',
        4,
        "services.mx.rules_source: rules_source is set but rules (the cdb) is empty",
        None,
    ),
    (MX + "log_count = 1\n", 3, "services.mx.log_count: 1 is too small", None),
    (
        '[services.p]\ntype = "qmail-pop3d"\nprofile = "pop3s"\ntls_cert = ""\n',
        4,
        "services.p.tls_cert: ssl = true needs a certificate",
        None,
    ),
    (
        '[services.i]\ntype = "courier-imap"\nprofile = "imap"\nmaxprocs = 0\n',
        4,
        "services.i.maxprocs: 0 is too small",
        None,
    ),
    (
        '[services.v]\ntype = "vpopmaild"\nuser = "a:b"\n',
        3,
        "services.v.user: not a user name",
        None,
    ),
    # A10: no integer wraps in djb's tools
    (
        MX + "softlimit = 18446744073709551617\n",
        3,
        "services.mx.softlimit: 18446744073709551617 is too large",
        "maximum is 1099511627776",
    ),
    (
        MX + "softlimit = 1\n",
        3,
        "services.mx.softlimit: 1 is too small: no program starts",
        "at least 4194304",
    ),
    (
        "[supervisor]\nlog_count = 18446744073709551618\n" + MX,
        2,
        "supervisor.log_count: 18446744073709551618 is too large",
        "maximum is 10000",
    ),
    (
        MX + "log_count = 10001\n",
        3,
        "services.mx.log_count: 10001 is too large",
        "maximum is 10000",
    ),
    (
        MX + "maxconn = 18446744073709551617\n",
        3,
        "services.mx.maxconn: 1844674407370955161",
        "maximum is 10000",
    ),
    (
        '[services.v]\ntype = "vpopmaild"\nmaxconn = 10001\n',
        3,
        "services.v.maxconn: 10001 is too large",
        "maximum is 10000",
    ),
    (MX + "greet_delay = 301\n", 3, "services.mx.greet_delay: 301 is too large", "maximum is 300"),
    (
        MX + "greylist_limit = 2147483648\n",
        3,
        "services.mx.greylist_limit: 2147483648 is too",
        "maximum is 2147483647",
    ),
    (
        '[services.i]\ntype = "courier-imap"\nprofile = "imap"\nmaxperip = 99999\n',
        4,
        "services.i.maxperip: 99999 is too large",
        "maximum is 10000",
    ),
    # A19: text sent as one SMTP line or header
    (
        MX + 'diemsg = "421 busy\\r\\n250 ok"\n',
        3,
        "services.mx.diemsg: contains a line break",
        "one line",
    ),
    (MX + 'diemsg_maxconnip = "a\\nb"\n', 3, "services.mx.diemsg_maxconnip: contains a line", None),
    (
        MX + 'rbl_block = ["zen.spamhaus.org:Listed\\n250 ok"]\n',
        3,
        "services.mx.rbl_block: contains a line break",
        None,
    ),
    (MX + 'dkverify = "DEfGhIJK\\n"\n', 3, "services.mx.dkverify: contains a line break", None),
    (MX + 'dksign = "\\rkey"\n', 3, "services.mx.dksign: contains a line break", None),
    (
        '[services.p]\ntype = "qmail-pop3d"\nhostname = "a\\nb"\n',
        3,
        "services.p.hostname: contains a line break",
        None,
    ),
    # A18: names, with their line, shown escaped
    (
        '\n[services."a\\u0000b"]\ntype = "qmail-send"\n',
        2,
        'services."a\\x00b": not a usable service directory name',
        None,
    ),
    (
        '[services."."]\ntype = "qmail-send"\n',
        1,
        'services.".": not a usable service directory name',
        None,
    ),
    (
        '\n\n[services.".."]\ntype = "qmail-send"\n',
        3,
        'services."..": not a usable service directory name',
        None,
    ),
    (
        '[services."a\\nb"]\ntype = "qmail-send"\n',
        1,
        'services."a\\nb": not a usable service directory name',
        None,
    ),
    (
        f'[services.{"a" * 65}]\ntype = "qmail-send"\n',
        1,
        f"services.{'a' * 65}: service name of 65 characters is too long",
        "at most 64",
    ),
    (
        '[services."smtp.example"]\ntype = "qmail-smtpd"\nport = 70000\n',
        3,
        "services.smtp.example.port: 70000 is too large",
        None,
    ),
    ("\ufeff" + MX, 1, "starts with a UTF-8 byte-order mark", "remove the byte-order mark"),
    # A14: nesting that Python's TOML reader cannot follow
    ("a = " + "[" * 5000 + "]" * 5000 + "\n" + MX, None, "TOML nested too deeply", None),
    ("a = " + "{b=" * 2000 + "1" + "}" * 2000 + "\n" + MX, None, "TOML nested too deeply", None),
]


@pytest.mark.parametrize("text, line, message, hint", ERRORS, ids=[e[2][:50] for e in ERRORS])
def test_errors(text, line, message, hint):
    err = load_error(text)
    assert err.path == "/etc/q.toml"
    assert err.line == line
    assert err.message.startswith(message), err.message
    if hint is not None:
        assert err.hint and hint in err.hint, err.hint
    assert str(err).startswith(f"/etc/q.toml:{line}: " if line else "/etc/q.toml: ")


def test_error_line_found_under_a_dotted_header_and_inline_table():
    text = (
        '[supervisor]\nkind = "runit"\n\n[services.mx]\ntype = "qmail-smtpd"\n'
        'ip = "0"\n\n[services.mx.env]\nGOOD = "1"\n"2BAD" = "x"\n'
    )
    assert load_error(text).line == 10
    text = MX + 'ip = "0"\nenv = { A = "1", IFS = "2" }\n'
    assert load_error(text).line == 4


def test_load_reads_a_file(tmp_path):
    p = tmp_path / "q.toml"
    p.write_text('[supervisor]\nkind = "s6"\n' + MX)
    cfg = config.load(p)
    assert cfg.path == str(p) and cfg.supervisor.kind == "s6"


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        config.load(tmp_path / "none.toml")
    assert info.value.message == "config file not found"
    assert info.value.path == str(tmp_path / "none.toml")
    assert "--config" in info.value.hint
    assert os.listdir(tmp_path) == []


def test_no_certificate_means_no_starttls():
    """tls_cert = "" renders DENY_TLS=1: without it jms1's qmail-smtpd offers STARTTLS with
    its default certificate (control/servercert.pem)."""
    from qmailkit.services.render import render

    for text, deny in (
        (MX + 'tls_cert = ""\n', True),
        (MX, False),
        (MX + 'profile = "smtps"\n', False),
    ):
        cfg = config.loads(text)
        assert cfg.services["mx"].options["deny_tls"] is deny
        run = render(cfg)["mx"].files["run"][0].decode()
        assert ("setenv DENY_TLS 1\n" in run) is deny
        assert ("TLS_SERVER_CERT" in run) is (not deny and "smtps" not in text)
    # require_auth with AUTH in clear allowed is possible (check warns about it)
    cfg = config.loads(MX + 'require_auth = true\ntls_cert = ""\nallow_insecure_auth = true\n')
    assert cfg.services["mx"].options["require_auth"] is True


def test_names_of_64_characters_fit_every_file_apply_makes(tmp_path):
    name = "a" * config.MAX_NAME
    cfg = config.loads(f'[services.{name}]\ntype = "qmail-send"\n')
    assert list(cfg.services) == [name]
    longest = f".retired-{name}-20261202T000000.000000-99"  # apply's retired name, and more
    assert len(f".{name}.qmailkit-new") < len(longest) < 255
    (tmp_path / longest).mkdir()  # the file system takes it


def test_extreme_integers_work_with_the_real_softlimit():
    from support import need

    softlimit, tcpserver = need("softlimit", "tcpserver")
    o = config.loads(MX + f"softlimit = {config.MAX_SOFTLIMIT}\n").services["mx"].options
    out = subprocess.run(
        [softlimit, "-m", str(o["softlimit"]), "/bin/echo", "ok"], capture_output=True, check=True
    ).stdout
    assert out == b"ok\n"
    # the smallest accepted limit still lets tcpserver load its libraries (it prints usage)
    low = subprocess.run(
        [softlimit, "-m", str(config.MIN_SOFTLIMIT), tcpserver], capture_output=True, check=False
    )
    assert low.stderr.startswith(b"tcpserver: usage: ")
    assert (
        b"error while loading shared libraries"
        in subprocess.run(
            [softlimit, "-m", str(config.MIN_SOFTLIMIT // 4), tcpserver],
            capture_output=True,
            check=False,
        ).stderr
    )


def test_load_refuses_what_is_not_a_regular_file(tmp_path):
    """A FIFO or a device as --config: an error at once, never a hang or an endless read."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, what in (
        (fifo, "a FIFO"),
        ("/dev/zero", "a character device"),
        (tmp_path, "a directory"),
    ):
        with pytest.raises(InputError) as info:
            config.load(path)
        assert str(info.value) == (
            f"{path}: cannot read config: is {what}, not a regular file "
            "(replace it with a regular file)"
        )
        assert info.value.exit_code == 100
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (config.CONFIG_LIMIT + 1))
    with pytest.raises(InputError, match="larger than 16777216 bytes"):
        config.load(big)
    comments = tmp_path / "comments.toml"  # 5 MB of comments, as in the findings: fine
    comments.write_bytes(b"# x\n" * 1_250_000 + MX.encode())
    assert list(config.load(comments).services) == ["mx"]


def test_load_bad_utf8_names_the_line(tmp_path):
    p = tmp_path / "q.toml"
    p.write_bytes(MX.encode() + b'greeting = "\xff"\n')
    with pytest.raises(InputError) as info:
        config.load(p)
    assert (info.value.message, info.value.line) == ("not valid UTF-8", 3)


# --------------------------------------------------------------------------------------------
# The example and the documentation stay in step with the code

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_example_config_renders_a_full_server():
    from qmailkit.services import render

    cfg = config.load(os.path.join(ROOT, "examples", "qmailkit.toml"))
    types = {name: (s.type, s.profile) for name, s in cfg.services.items()}
    assert types == {
        "qmail-send": ("qmail-send", None),
        "qmail-smtpd": ("qmail-smtpd", "mx"),
        "submission": ("qmail-smtpd", "submission"),
        "smtps": ("qmail-smtpd", "smtps"),
        "imap": ("courier-imap", "imap"),
        "imapssl": ("courier-imap", "imapssl"),
        "pop3ssl": ("courier-imap", "pop3ssl"),
        "vpopmaild": ("vpopmaild", None),
    }
    rendered = render.render(cfg)
    assert all(not r.checks.warnings for r in rendered.values())
    ports = sorted(r.listen[1] for r in rendered.values() if r.listen)
    assert ports == [25, 143, 465, 587, 993, 995, 8900]


def test_docs_list_every_option_of_every_type():
    with open(os.path.join(ROOT, "docs", "services-config.md"), encoding="utf-8") as f:
        doc = f.read()
    for tname, mod in TYPES.items():
        start = doc.index(f'## `type = "{tname}"`')
        end = doc.find("\n## ", start + 1)
        section = doc[start:end]
        for oname, opt in mod.OPTIONS.items():
            assert f"| `{oname}` |" in section, (tname, oname)
            if opt.var:
                assert f"`{opt.var}`" in section, (tname, oname)
        for profile in getattr(mod, "PROFILES", {}):
            assert f"`{profile}`" in section, (tname, profile)
    common = doc[doc.index("## Options every service has") :]
    for oname in config.COMMON_OPTIONS:
        assert f"| `{oname}` |" in common, oname
