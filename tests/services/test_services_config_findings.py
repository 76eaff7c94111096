"""The config findings of the 2026-12-02 adversarial check (A10, A14, A16, A18, A19), end to end.

Every case goes through ``qmailkit services render`` (or ``check``) as an admin runs it:
the exact message on stderr, nothing on stdout, exit code 100, never a traceback.  The
bounds are shown to matter with the real softlimit, multilog and tcpserver.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import need
from support.services import public_tempdir
from support.services_prune import Site, retired_dirs

from qmailkit import supervisor
from qmailkit.errors import InputError
from qmailkit.services import config

MX = '[services.mx]\ntype = "qmail-smtpd"\nip = "0"\n'
FATAL = "qmailkit services: fatal: "


def render(path: Path, *args: str, action: str = "render") -> subprocess.CompletedProcess:
    return support.run(
        "services", action, "--config", str(path), *args, drop_env=("QMAILKIT_CONFIG",), timeout=30
    )


def refused(tmp_path: Path, text: str | bytes, action: str = "render") -> str:
    """The one-line error of ``services ACTION`` for config ``text``, after the path."""
    path = tmp_path / "q.toml"
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    r = render(path, action=action)
    assert (r.returncode, r.stdout) == (100, ""), r.stderr
    prefix = f"{FATAL}{path}"
    assert r.stderr.startswith(prefix) and r.stderr.endswith("\n"), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # one line: no raw line break in it
    return r.stderr[len(prefix) : -1]


# --------------------------------------------------------------------------------------------
# A10: every integer has a maximum; nothing that would wrap in djb's tools gets through

A10 = [
    (
        MX + "softlimit = 18446744073709551617\n",
        ":4: services.mx.softlimit: 18446744073709551617 is too large "
        "(the maximum is 1099511627776)",
    ),
    (
        "[supervisor]\nlog_count = 18446744073709551618\n" + MX,
        ":2: supervisor.log_count: 18446744073709551618 is too large (the maximum is 10000)",
    ),
    (
        MX + "log_size = 18446744073709551616\n",
        ":4: services.mx.log_size: 18446744073709551616 is too large (the maximum is 16777215)",
    ),
    (
        MX + "maxconn = 18446744073709551617\n",
        ":4: services.mx.maxconn: 18446744073709551617 is too large (the maximum is 10000)",
    ),
    (
        MX + "greet_delay = 9223372036854775808\n",
        ":4: services.mx.greet_delay: 9223372036854775808 is too large (the maximum is 300)",
    ),
    (
        MX + "simscan_debug = 2147483648\n",
        ":4: services.mx.simscan_debug: 2147483648 is too large (the maximum is 2147483647)",
    ),
    (MX + "greet_delay = -1\n", ":4: services.mx.greet_delay: -1 is too small (the minimum is 0)"),
    (
        MX + "softlimit = -18446744073709551617\n",
        ":4: services.mx.softlimit: -18446744073709551617 is too small (the minimum is 0)",
    ),
    (
        '[services.i]\ntype = "courier-imap"\nprofile = "imap"\nmaxprocs = 10001\n',
        ":4: services.i.maxprocs: 10001 is too large (the maximum is 10000)",
    ),
    # numbers too long to print are described, not printed
    (
        MX + "port = " + "9" * 4000 + "\n",
        ":4: services.mx.port: a number of 4000 digits is too large (the maximum is 65535)",
    ),
    # more digits than Python converts: tomllib lets a ValueError out
    (
        MX + "\nport = " + "9" * 5000 + "\n",
        ":5: an integer too long to read (no qmailkit setting takes a number of that many digits)",
    ),
]


@pytest.mark.parametrize("text, message", A10, ids=[m.split(":")[2] for _, m in A10])
def test_a10_integers_have_a_maximum(tmp_path, text, message):
    assert refused(tmp_path, text) == message


def test_a10_check_refuses_them_too(tmp_path):
    assert refused(tmp_path, MX + "maxconn = 18446744073709551617\n", action="check") == (
        ":4: services.mx.maxconn: 18446744073709551617 is too large (the maximum is 10000)"
    )


def test_a10_the_real_multilog_wraps_what_the_bound_refuses(tmp_path):
    """multilog reads n18446744073709551618 as n2; at the maxima it keeps what it is told."""
    (multilog,) = need("multilog")
    lines = b"".join(b"line %05d %s\n" % (i, b"x" * 50) for i in range(300))  # ~18 kB

    def old_files(count: int | str) -> int:
        d = tmp_path / f"log-{count}"
        subprocess.run([multilog, "s4096", f"n{count}", str(d)], input=lines, check=True)
        return sum(1 for p in d.iterdir() if p.name.startswith("@"))

    assert old_files(18446744073709551618) == 1  # as n2: one old file beside current
    assert old_files(2) == 1
    assert old_files(3) == 2
    assert old_files(config.MAX_LOG_COUNT) == 7  # every rotation of the ~18 kB kept
    # the largest size and count the config takes are what the rendered logger runs
    cfg_path = tmp_path / "q.toml"
    cfg_path.write_text(
        f"[supervisor]\nlog_size = {config.MAX_LOG_SIZE}\nlog_count = {config.MAX_LOG_COUNT}\n" + MX
    )
    r = render(cfg_path)
    assert r.returncode == 0, r.stderr
    assert "exec setuidgid qmaill multilog t s16777215 n10000 ./main\n" in r.stdout
    d = tmp_path / "log-max"
    subprocess.run([multilog, "s16777215", "n10000", str(d)], input=lines, check=True)
    assert (d / "current").read_bytes() == lines


def tcpserver_status(tcpserver: str, maxconn: str) -> bytes:
    """The first status line of a real tcpserver started with -c ``maxconn``."""
    proc = subprocess.Popen(
        [tcpserver, "-v", "-c", maxconn, "127.0.0.1", "0", "true"], stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        return proc.stderr.readline()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_a10_the_real_tcpserver_wraps_what_the_bound_refuses():
    (tcpserver,) = need("tcpserver")
    assert tcpserver_status(tcpserver, "18446744073709551617") == b"tcpserver: status: 0/1\n"
    assert tcpserver_status(tcpserver, str(config.MAX_CONN)) == b"tcpserver: status: 0/10000\n"


def test_a10_the_real_softlimit_wraps_what_the_bound_refuses():
    (softlimit,) = need("softlimit")
    wrapped = subprocess.run(
        [softlimit, "-m", "18446744073709551617", "/bin/echo", "hi"], capture_output=True
    )
    # read as a 1-byte limit: the program dies before it prints
    assert (wrapped.returncode, wrapped.stdout) == (-signal.SIGSEGV, b"")
    top = subprocess.run(
        [softlimit, "-m", str(config.MAX_SOFTLIMIT), "/bin/echo", "hi"], capture_output=True
    )
    assert (top.returncode, top.stdout) == (0, b"hi\n")


# --------------------------------------------------------------------------------------------
# A14: deep nesting and long names give a message, never a traceback

DEEP = "\n" + MX
A14 = [
    ("a = " + "[" * 5000 + "]" * 5000 + DEEP, "nested"),
    ("a = " + "{b=" * 2000 + "1" + "}" * 2000 + DEEP, "nested"),
    ("a = " + "[" * 200_000 + "]" * 200_000 + DEEP, "nested"),
    (f'[services.{"a" * 255}]\ntype = "qmail-send"\n', 255),
    (f'\n[services.{"b" * 254}]\ntype = "qmail-send"\n', 254),
    (f'[services.{"c" * 65}]\ntype = "qmail-send"\n', 65),
]


@pytest.mark.parametrize("text, what", A14, ids=[str(w) for _, w in A14])
def test_a14_nesting_and_long_names(tmp_path, text, what):
    message = refused(tmp_path, text)
    if what == "nested":
        assert message == (
            ": TOML nested too deeply to read: arrays or tables within each other "
            "(no qmailkit setting nests more than two levels)"
        )
        return
    line = 2 if what == 254 else 1
    name = text.split("[services.")[1].split("]")[0]
    assert message == (
        f":{line}: services.{name}: service name of {what} characters is too long (use at "
        "most 64: apply keeps a retired service as .retired-NAME-STAMP, and every file name "
        "must fit 255 bytes)"
    )


@pytest.fixture
def pub():
    with public_tempdir() as d:
        yield d


@pytest.mark.parametrize("kind", ["daemontools", "runit", "s6"])
def test_a14_a_name_of_64_characters_is_applied_supervised_and_retired(pub, scan, kind):
    """The longest name the config takes: every path apply and the supervisor make from it
    (.NAME.qmailkit-new, the scan link, supervise/, log/supervise/, .retired-NAME-STAMP)."""
    name = "n" * config.MAX_NAME
    site = Site(pub, kind)
    tree = scan(kind, site.scan_dir)
    r = support.run(
        "services",
        "apply",
        "-q",
        "--config",
        site.write("keep", name),
        drop_env=("QMAILKIT_CONFIG",),
    )
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert f"link        {name}  ({site.scan_dir}/{name} -> {site.dir(name)})" in r.stdout
    tree.wait_up(site.dir(name))
    sup = supervisor.get(kind)
    assert sup.status(site.dir(name)).pid and sup.status(site.dir(name) / "log").pid
    r = support.run(
        "services",
        "apply",
        "-q",
        "--prune",
        "--config",
        site.write("keep"),
        drop_env=("QMAILKIT_CONFIG",),
    )
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    [kept] = retired_dirs(site.root, name)
    assert len(kept.name) == len(f".retired-{name}-") + 15 < 255
    assert not os.path.lexists(site.scan_dir / name)


# --------------------------------------------------------------------------------------------
# A16: --config that is a FIFO or a device: an error at once, no hang, no endless read


def test_a16_config_fifo_and_dev_zero(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, what in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        for action in ("render", "check", "status"):
            r = render(path, action=action)  # a hang would hit run's timeout (30 s)
            assert (r.returncode, r.stdout, r.stderr) == (
                100,
                "",
                f"{FATAL}{path}: cannot read config: is {what}, not a regular file "
                "(replace it with a regular file)\n",
            ), action


def test_a16_a_symlink_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "q.toml"
    link.symlink_to("/dev/zero")
    r = render(link)
    assert r.returncode == 100
    assert r.stderr == (
        f"{FATAL}{link}: cannot read config: is a character device, not a regular file "
        "(replace it with a regular file)\n"
    )


# --------------------------------------------------------------------------------------------
# A18: the BOM, names with their line, no raw line break in any message, listen addresses

A18 = [
    (
        b"\xef\xbb\xbf" + MX.encode(),
        ":1: starts with a UTF-8 byte-order mark (remove the byte-order mark: save the file "
        "as UTF-8 without the bytes EF BB BF at its start)",
    ),
    (
        '\n[services."a\\u0000b"]\ntype = "qmail-send"\n',
        ':2: services."a\\x00b": not a usable service directory name',
    ),
    ('\n\n[services."."]\ntype = "qmail-send"\n', ':3: services.".": not a usable service'),
    ("[services.'..']\ntype = \"qmail-send\"\n", ':1: services."..": not a usable service'),
    ('\n[services."a\\nb"]\ntype = "qmail-send"\n', ':2: services."a\\nb": not a usable'),
    ('\n[services."\\r"]\ntype = "qmail-send"\n', ':2: services."\\r": not a usable'),
    # a table made by dotted keys: its first key's line
    ('\n\nservices.".".type = "qmail-send"\n', ':3: services.".": not a usable service'),
    ('\n[services]\n"a b" = { type = "qmail-send" }\n', ':3: services."a b": not a usable'),
    # user text in a hint or a message is escaped as well
    (
        MX + 'rbl_block = "zen\\nspam"\n',
        ":4: services.mx.rbl_block: expected a list of strings, got a string (write it as "
        '["zen\\nspam"])',
    ),
    (
        '[services]\n"a\\nb" = 3\n',
        ':2: services."a\\nb": expected a table, got an integer (write it as [services."a\\nb"])',
    ),
    (MX + '"k\\ny" = 1\n', ':4: services.mx."k\\ny": unknown key (known keys of a qmail-smtpd'),
    (MX + 'profile = "a\\nb"\n', ":4: services.mx.profile: unknown profile 'a\\nb' (qmail-smtpd"),
    (
        "[services.mx]\ntype = [" + "1, " * 100_000 + "]\n",
        ":2: services.mx.type: unknown service type [1, 1, 1, 1, ...] (use one of qmail-send,",
    ),
    # ip: what tcpserver would read as another address, or look up in DNS as a number
    (
        '[services.mx]\ntype = "qmail-smtpd"\nip = "999.1.1.1"\n',
        ":3: services.mx.ip: not an IPv4 address: '999.1.1.1' (write four numbers 0..255 "
        'separated by dots, or "0" for all)',
    ),
    (
        '[services.mx]\ntype = "qmail-smtpd"\nip = "1e5"\n',
        ":3: services.mx.ip: neither an IP address nor a host name: '1e5' (use an address "
        'such as "192.0.2.25", or "0" for all)',
    ),
    ('[services.mx]\ntype = "qmail-smtpd"\nip = "127.1"\n', ":3: services.mx.ip: not an IPv4"),
    ('[services.mx]\ntype = "qmail-smtpd"\nip = "0x7f000001"\n', ":3: services.mx.ip: neither"),
    ('[services.mx]\ntype = "qmail-smtpd"\nip = "2130706433"\n', ":3: services.mx.ip: not an"),
    ('[services.mx]\ntype = "qmail-smtpd"\nip = "a..b"\n', ":3: services.mx.ip: neither"),
    ('[services.mx]\ntype = "qmail-smtpd"\nip = "::1::"\n', ":3: services.mx.ip: not an IPv6"),
]


@pytest.mark.parametrize("text, message", A18, ids=range(len(A18)))
def test_a18_messages(tmp_path, text, message):
    assert refused(tmp_path, text).startswith(message)


def test_a18_a_long_value_is_shortened_in_the_message(tmp_path):
    message = refused(tmp_path, MX + 'user = "u ' + "u" * 100_000 + '"\n')
    assert message == (
        f":4: services.mx.user: not a user name: 'u {'u' * 35}...{'u' * 38}' "
        "(give an account name such as qmaild)"
    )


@pytest.mark.parametrize("ip", ["0", "127.0.0.1", "192.0.2.25", "::1", "mx.example.com", "mail"])
def test_a18_listen_addresses_tcpserver_takes(ip):
    assert config.loads(MX.replace('"0"', f'"{ip}"')).services["mx"].options["ip"] == ip


def test_a18_what_the_real_tcpserver_makes_of_them():
    """Why the addresses above are refused: tcpserver (ucspi-tcp) parses digits-and-dots
    itself, wrapping 999 to 231; other numbers it looks up as names, and fails."""
    (tcpserver,) = need("tcpserver")

    def first_line(ip: str) -> bytes:
        proc = subprocess.Popen(
            [tcpserver, "-v", "-H", "-R", ip, "0", "true"], stderr=subprocess.PIPE
        )
        try:
            assert proc.stderr is not None
            return proc.stderr.readline()
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)

    assert first_line("0") == b"tcpserver: status: 0/40\n"
    assert first_line("999.1.1.1") == b"tcpserver: status: 0/40\n"  # bound, to 231.1.1.1
    for ip in ("127.1", "1e5"):
        assert first_line(ip) == f"tcpserver: fatal: no IP address for {ip}\n".encode()


def test_a18_only_literal_loopback_is_loopback():
    for ip in ("127.0.0.1", "127.255.0.9", "::1"):
        assert config.is_loopback(ip), ip
    for ip in (
        "localhost",
        "localhost.localdomain",
        "127.1",
        "0",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "127.0.0.1.nip.io",
        "2130706433",
        "",
    ):
        assert not config.is_loopback(ip), ip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(min_size=1, max_size=20), value=st.text(max_size=20))
def test_a18_no_message_holds_a_raw_line_break(name, value):
    from support.services_render import toml_str

    texts = [
        f'[services.{toml_str(name)}]\ntype = "qmail-send"\n',
        MX + f"{toml_str(name)} = {toml_str(value)}\n",
        MX + f"ip = {toml_str(value)}\nuser = {toml_str(value)}\n",
        MX + f"env = {{ {toml_str(name)} = {toml_str(value)} }}\n",
        MX + f"rbl_block = {toml_str(value)}\n",
    ]
    for text in texts:
        try:
            config.loads(text, "/q.toml")
        except InputError as err:
            assert "\n" not in str(err) and "\r" not in str(err), str(err)


# --------------------------------------------------------------------------------------------
# A19: whatever goes into one SMTP line, header or logged variable refuses CR and LF

ONE_LINE = [
    (MX, "greeting"),
    (MX, "hostname"),
    (MX, "diemsg"),
    (MX, "diemsg_maxload"),
    (MX, "diemsg_maxconnip"),
    (MX, "diemsg_maxconnc"),
    (MX, "dkverify"),
    (MX, "dksign"),
    (MX, "tls_cert"),
    (MX, "validrcptto_cdb"),
    (MX, "qmailqueue"),
    (MX, "auth_cdb"),
    (MX, "greylist_dir"),
    (MX, "qmail_dk"),
    (MX, "smtpd"),
    ('[services.mx]\ntype = "qmail-pop3d"\nip = "0"\n', "hostname"),
    ('[services.mx]\ntype = "qmail-pop3d"\nip = "0"\n', "maildir"),
    ('[services.mx]\ntype = "courier-imap"\nprofile = "imap"\nip = "0"\n', "maildir"),
    ('[services.mx]\ntype = "courierpassd"\nip = "127.0.0.1"\n', "authservice"),
]


@pytest.mark.parametrize(
    "text, option", ONE_LINE, ids=[f"{t.split(chr(34))[1]}-{o}" for t, o in ONE_LINE]
)
@pytest.mark.parametrize("brk", ["\\n", "\\r", "\\r\\n"])
def test_a19_one_line_values(tmp_path, text, option, brk):
    value = f"/a{brk}250 ok"
    line = text.count("\n") + 1
    assert refused(tmp_path, text + f'{option} = "{value}"\n') == (
        f":{line}: services.mx.{option}: contains a line break (write it on one line: it goes "
        "into one SMTP line, header or log line)"
    )


@pytest.mark.parametrize(
    "entry, key, line",
    [
        ('rbl_block = ["zen.spamhaus.org:Listed\\r\\n250 ok"]', "rbl_block", 4),
        ('env = { NOTE = "a\\nb" }', "env.NOTE", 4),
        ('auth_set = { NOTE = "a\\rb" }', "auth_set.NOTE", 4),
        ('\n[services.mx.env]\nOK = "1"\nNOTE = """a\nx"""', "env.NOTE", 7),
    ],
)
def test_a19_lists_and_variables(tmp_path, entry, key, line):
    """A variable is logged as NAME="value" by the run script: one log line."""
    assert refused(tmp_path, MX + entry + "\n") == (
        f":{line}: services.mx.{key}: contains a line break (write it on one line: it goes "
        "into one SMTP line, header or log line)"
    )


def test_a19_nul_is_refused_in_every_string(tmp_path):
    assert refused(tmp_path, MX + 'diemsg = "a\\u0000b"\n') == (
        ":4: services.mx.diemsg: contains a NUL character (programs cannot receive NUL in "
        "arguments or environment)"
    )


def test_a19_default_delivery_may_hold_several_lines():
    """qmail-start's default delivery is dot-qmail text: one instruction per line."""
    cfg = config.loads(
        '[services.s]\ntype = "qmail-send"\ndefault_delivery = "./Maildir/\\n&a@b"\n'
    )
    assert cfg.services["s"].options["default_delivery"] == "./Maildir/\n&a@b"
