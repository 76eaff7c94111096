"""The open-relay guard of ``services check``/``apply``: judged by what tcpserver does.

Every rule set is compiled by ucspi-tcp's own ``tcprules`` and probed with its
``tcprulescheck``; qmailkit's verdict (from the rules source and from the cdb) must agree.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import need

from qmailkit import tcprules
from qmailkit.errors import InputError
from qmailkit.services import config
from qmailkit.services.check import check
from qmailkit.services.policy import read_rules

R = b',RELAYCLIENT=""'
CATCH_ALL = {  # every spelling that gives RELAYCLIENT to every IPv4 client
    "empty": b":allow" + R + b"\n",
    "single quote": b":allow,RELAYCLIENT=''\n",
    "slash quote": b":allow,RELAYCLIENT=//\n",
    "after another variable": b':allow,X="1"' + R + b"\n",
    "with a value": b':allow,RELAYCLIENT="@relay"\n',
    "0-255.": b"0-255.:allow" + R + b"\n",
    "0-999.": b"0-999.:allow" + R + b"\n",
    "-255.": b"-255.:allow" + R + b"\n",
    "1-255. and 0.": b"1-255.:allow" + R + b"\n0.:allow" + R + b"\n",
    "1-255. alone": b"1-255.:allow" + R + b"\n",
    "256 lines": b"".join(b"%d.:allow%s\n" % (n, R) for n in range(256)),
    "halves": b"0-127.:allow" + R + b"\n128-255.:allow" + R + b"\n",
    "all but one address": b"8.8.8.8:deny\n:allow" + R + b"\n",
    "deny after the catch-all": b":allow" + R + b"\n:deny\n",
    "second-level ranges": b"".join(b"%d.0-255.:allow%s\n" % (n, R) for n in range(1, 224)),
}
BY_NAME = {  # the client picks its own PTR name: (rules, a name it can give itself)
    "=": (b"=:allow" + R + b"\n", "anything.example"),
    "=.com": (b"=.com:allow" + R + b"\n", "mx.attacker.com"),
    "=.net": (b"10.:allow" + R + b"\n=.net:allow" + R + b"\n", "a.net"),
    "=host": (b"=mail.partner.example:allow" + R + b"\n", "mail.partner.example"),
}
LEGITIMATE = {  # relaying for the site's own networks only
    "loopback": b"127.:allow" + R + b"\n:allow\n",
    "LAN range": b"10.0.0.0-255:allow" + R + b"\n",
    "private networks": (
        b"127.:allow"
        + R
        + b"\n10.:allow"
        + R
        + b"\n172.16-31.:allow"
        + R
        + b"\n192.168.:allow"
        + R
        + b"\n"
    ),
    "own public /24": b"198.51.100.:allow" + R + b"\n203.0.113.7:allow" + R + b"\n",
    "a public /16": b"130.1.:allow" + R + b"\n",
    "catch-all denied": b"127.:allow" + R + b"\n:deny\n",
    "catch-all without RELAYCLIENT": b':allow,RBLSMTPD=""\n',
    "relay rule denied": b":deny" + R + b"\n",
    "first record wins": b"0-255.:deny\n:allow" + R + b"\n",
    "info rule (no ident with -R)": b"@:allow" + R + b"\n",
    "names deny": b"127.:allow" + R + b'\n=.example:deny\n=:allow,X="1"\n',
    "non-canonical keys": b"010.:allow" + R + b"\n256.:allow" + R + b"\n",
}
PUBLIC_SAMPLE = [
    "1.1.1.1",
    "8.8.8.8",
    "45.33.1.2",
    "100.63.255.1",
    "128.0.0.1",
    "130.1.2.3",
    "172.32.0.1",
    "200.1.2.3",
    "223.255.255.254",
]


def real_compile(tmp_path: Path, source: bytes, name: str = "smtp") -> tuple[Path, int]:
    (prog,) = need("tcprules")
    (tmp_path / "tcp").mkdir(exist_ok=True)
    src, cdb = tmp_path / "tcp" / name, tmp_path / "tcp" / f"{name}.cdb"
    src.write_bytes(source)
    cdb.unlink(missing_ok=True)
    proc = subprocess.run([prog, cdb, f"{cdb}.tmp"], input=source, capture_output=True, check=False)
    return cdb, proc.returncode


def tcpserver_relays(cdb: Path, ip: str, host: str | None = None) -> bool:
    """Does tcpserver give RELAYCLIENT to this client? (djb's tcprulescheck says.)"""
    (prog,) = need("tcprulescheck")
    env = {"TCPREMOTEIP": ip, **({"TCPREMOTEHOST": host} if host else {})}
    out = subprocess.run([prog, cdb], env=env, capture_output=True, check=True).stdout
    return b"set environment variable RELAYCLIENT=" in out and out.endswith(b"allow connection\n")


def load(tmp_path: Path, body: str) -> config.Config:
    text = f"""
[supervisor]
scan_dir = "{tmp_path}/scan"
service_root = "{tmp_path}/services"
log_user = "nobody"
[system]
qmail_home = "{tmp_path}/qmail"
{body}"""
    return config.loads(text, str(tmp_path / "q.toml"))


def mx(tmp_path: Path, ip: str = "0", rules_source: str | None = None) -> str:
    extra = "" if rules_source is None else f'rules_source = "{rules_source}"\n'
    return (
        f'[services.mx]\ntype = "qmail-smtpd"\nip = "{ip}"\nuser = "nobody"\n'
        f'rules = "{tmp_path}/tcp/smtp.cdb"\n{extra}'
    )


def relay_findings(cfg: config.Config) -> list[str]:
    return [
        f.describe() for f in check(cfg) if f.message.startswith(("open relay", "bad tcp rules"))
    ]


# -- the key-set analysis against tcprulescheck -----------------------------------------------


@pytest.mark.parametrize("name", CATCH_ALL)
def test_catch_all_spellings_relay_for_every_public_address(tmp_path, name):
    cdb, rc = real_compile(tmp_path, CATCH_ALL[name])
    assert rc == 0
    relays = [ip for ip in PUBLIC_SAMPLE if tcpserver_relays(cdb, ip)]
    expect_all = name != "all but one address"
    assert relays == (
        PUBLIC_SAMPLE if expect_all else [ip for ip in PUBLIC_SAMPLE if ip != "8.8.8.8"]
    )
    r = tcprules.relaying(tcprules.first_values(tcprules.parse(CATCH_ALL[name]).records()))
    assert r.public == tcprules.PUBLIC_IPV4 - (0 if expect_all else 1)
    assert r.names == ()


@pytest.mark.parametrize("name", LEGITIMATE)
def test_legitimate_rules_do_not_relay_for_strangers(tmp_path, name):
    cdb, rc = real_compile(tmp_path, LEGITIMATE[name])
    assert rc == 0
    r = tcprules.relaying(tcprules.first_values(tcprules.parse(LEGITIMATE[name]).records()))
    relays = {ip for ip in PUBLIC_SAMPLE if tcpserver_relays(cdb, ip)}
    expected = {"own public /24": 0, "a public /16": 1 << 16}.get(name, 0)
    if name == "own public /24":
        expected = 0  # documentation ranges are not public; still far below the limit
        assert tcpserver_relays(cdb, "203.0.113.7") and tcpserver_relays(cdb, "198.51.100.9")
    assert r.public == expected
    assert relays == ({"130.1.2.3"} if name == "a public /16" else set())
    assert r.names == ()
    if name in ("loopback", "private networks", "catch-all denied"):
        assert tcpserver_relays(cdb, "127.0.0.1")
    if name == "LAN range":
        assert tcpserver_relays(cdb, "10.0.0.9") and not tcpserver_relays(cdb, "10.0.1.9")


@pytest.mark.parametrize("name", BY_NAME)
def test_name_rules_that_relay_are_reachable_by_any_client(tmp_path, name):
    source, host = BY_NAME[name]
    cdb, rc = real_compile(tmp_path, source)
    assert rc == 0
    assert not tcpserver_relays(cdb, "8.8.8.8")  # without a name: no relaying
    assert tcpserver_relays(cdb, "8.8.8.8", host)  # with the PTR name it chose: relaying
    r = tcprules.relaying(tcprules.first_values(tcprules.parse(source).records()))
    assert r.public == 0
    assert r.names == (source.split(b"\n")[-2].split(b":")[0],)


def test_exact_counts():
    def public(text: bytes) -> int:
        return tcprules.relaying(tcprules.first_values(tcprules.parse(text).records())).public

    assert public(b"8.8.8.8:allow" + R + b"\n") == 1
    assert public(b"1.:allow" + R + b"\n") == 1 << 24
    assert public(b"100.:allow" + R + b"\n") == (1 << 24) - (1 << 22)  # 100.64/10 is shared
    assert public(b"1.:allow" + R + b"\n1.2.:deny\n1.2.3.:allow" + R + b"\n") == (
        (1 << 24) - (1 << 16) + (1 << 8)
    )
    assert public(b"10.:allow" + R + b"\n127.:allow" + R + b"\n") == 0
    # the documented constant: 2^32 less the ranges that are not public
    assert tcprules.PUBLIC_IPV4 == 3702258688


def test_a_large_cdb_is_judged_quickly(tmp_path):
    """200,000 single addresses: one sweep over the keys, not a lookup per address."""

    rng = random.Random(7)
    table = {
        b"%d.%d.%d.%d" % tuple(rng.randrange(1, 224) for _ in range(4)): b"+RELAYCLIENT=\0"
        for _ in range(200_000)
    }
    began = time.monotonic()
    r = tcprules.relaying(table)
    assert time.monotonic() - began < 10  # 1.5 s here (the per-prefix walk took 7)
    assert 0 < r.public <= len(table)


def _random_rules(rng, block: str) -> bytes:
    """Rules for the addresses of ``block`` (a /24 such as 1.2.3) and the prefixes above it,
    in every form tcprules reads: single addresses, ranges (also open and past 255),
    prefixes, the default; allow or deny, with or without RELAYCLIENT, repeated keys."""
    a, b, _c = block.split(".")
    lines = []
    for _ in range(rng.randrange(1, 30)):
        low = rng.randrange(256)
        address = rng.choice(
            [
                f"{block}.{low}",
                f"{block}.{low}-{low + rng.randrange(40)}",
                f"{block}.-{low}",
                f"{block}.{low}-999",
                f"{block}.",
                f"{a}.{b}.",
                f"{a}.",
                "",
            ]
        )
        verdict = rng.choice(["allow", "deny"])
        env = rng.choice(['RELAYCLIENT=""', 'X="1"', 'X="1",RELAYCLIENT="@h"', ""])
        lines.append(f"{address}:{verdict}" + (f",{env}" if env else ""))
    return "".join(line + "\n" for line in lines).encode()


@pytest.mark.parametrize("seed", range(6))
def test_the_count_is_exactly_what_tcprulescheck_says(tmp_path, seed):
    """Address by address over a /24 (and one address for each wider prefix): the number of
    public addresses given RELAYCLIENT, from the cdb djb's tcprules compiled, is exact."""
    rng = random.Random(seed)
    block = rng.choice(["1.2.3", "45.67.89", "223.255.254"])
    source = _random_rules(rng, block)
    cdb, rc = real_compile(tmp_path, source)
    assert rc == 0, source
    a, b, c = block.split(".")
    inside = sum(tcpserver_relays(cdb, f"{block}.{d}") for d in range(256))
    outside = (  # one address stands for each block decided by a wider key alone
        tcpserver_relays(cdb, f"{a}.{b}.{(int(c) + 1) % 256}.1") * ((1 << 16) - (1 << 8))
        + tcpserver_relays(cdb, f"{a}.{(int(b) + 1) % 256}.0.1") * ((1 << 24) - (1 << 16))
        + tcpserver_relays(cdb, "8.8.8.8") * (tcprules.PUBLIC_IPV4 - (1 << 24))
    )
    [table] = read_rules({"rules": str(cdb), "rules_source": ""}).tables
    assert tcprules.relaying(table.table).public == inside + outside, source
    from_source = tcprules.first_values(tcprules.parse(source).records())
    assert from_source == table.table


# -- services check and apply -------------------------------------------------------------------


@pytest.mark.parametrize("name", CATCH_ALL)
def test_check_refuses_every_catch_all_from_the_source_and_the_cdb(tmp_path, name):
    cdb, _ = real_compile(tmp_path, CATCH_ALL[name])
    src = tmp_path / "tcp" / "smtp"
    os.utime(src, ns=(1, 1))  # older than the cdb: apply will not recompile it
    found = relay_findings(load(tmp_path, mx(tmp_path)))
    assert len(found) == 2, found
    who = (
        "every public IPv4 address"
        if name != "all but one address"
        else "3,702,258,687 public IPv4 addresses (100% of them)"
    )
    assert found[0].startswith(f"error: mx: open relay on 0:25: {src}:")
    assert found[0].endswith(
        f": RELAYCLIENT for {who} [services.mx.rules] (allow relaying only for your own "
        'networks, e.g. 192.0.2.:allow,RELAYCLIENT="", and let your users relay with SMTP AUTH)'
    )
    assert found[1].startswith(f"error: mx: open relay on 0:25: {cdb}: keys ")
    # the cdb alone (rules_source = ""): A9
    found = relay_findings(load(tmp_path, mx(tmp_path, rules_source="")))
    assert len(found) == 1 and found[0].startswith(f"error: mx: open relay on 0:25: {cdb}: keys ")
    assert f"RELAYCLIENT for {who} [services.mx.rules]" in found[0]


def test_message_names_the_lines(tmp_path):
    real_compile(
        tmp_path, b"# mine\n127.:allow" + R + b"\n1-255.:allow" + R + b"\n0.:allow" + R + b"\n"
    )
    src = tmp_path / "tcp" / "smtp"
    os.utime(src, ns=(1, 1))
    found = relay_findings(load(tmp_path, mx(tmp_path)))
    assert found[0] == (
        f"error: mx: open relay on 0:25: {src}:3: RELAYCLIENT for every public IPv4 address "
        "[services.mx.rules] (allow relaying only for your own networks, e.g. "
        '192.0.2.:allow,RELAYCLIENT="", and let your users relay with SMTP AUTH)'
    )
    assert found[1].startswith(
        f"error: mx: open relay on 0:25: {tmp_path}/tcp/smtp.cdb: keys "
        "'1.', '100.', '101.', '102.', '103.' and 216 more: RELAYCLIENT"
    )
    real_compile(tmp_path, b"".join(b"%d.:allow%s\n" % (n, R) for n in range(256)))
    found = relay_findings(load(tmp_path, mx(tmp_path, rules_source="")))
    assert len(found) == 1


@pytest.mark.parametrize("name", BY_NAME)
def test_check_refuses_name_rules_that_relay(tmp_path, name):
    source, _host = BY_NAME[name]
    real_compile(tmp_path, source)
    found = relay_findings(load(tmp_path, mx(tmp_path, rules_source="")))
    key = source.split(b"\n")[-2].split(b":")[0].decode()
    assert found == [
        (
            f"error: mx: open relay on 0:25: {tmp_path}/tcp/smtp.cdb: keys '{key}': '{key}' sets "
            "RELAYCLIENT by the client's host name, which the client chooses (its PTR record) "
            "[services.mx.rules] (relay by IP address or SMTP AUTH; name rules may only deny or "
            "set other variables)"
        )
    ]


@pytest.mark.parametrize("name", LEGITIMATE)
def test_check_accepts_legitimate_rules(tmp_path, name):
    real_compile(tmp_path, LEGITIMATE[name])
    assert relay_findings(load(tmp_path, mx(tmp_path))) == []
    assert relay_findings(load(tmp_path, mx(tmp_path, rules_source=""))) == []


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.1.2.3", "::1"])
def test_loopback_services_may_relay_for_all(tmp_path, ip):
    real_compile(tmp_path, CATCH_ALL["empty"] + BY_NAME["="][0])
    assert relay_findings(load(tmp_path, mx(tmp_path, ip=ip))) == []
    cfg = load(tmp_path, f'[services.l]\ntype = "qmail-smtpd"\nprofile = "local"\nip = "{ip}"\n')
    assert relay_findings(cfg) == []


def test_a_stale_source_is_judged_not_the_cdb_it_replaces(tmp_path):
    """apply compiles a source newer than its cdb: the old cdb's rules are not the danger."""
    real_compile(tmp_path, CATCH_ALL["empty"])
    src = tmp_path / "tcp" / "smtp"
    src.write_bytes(LEGITIMATE["loopback"])
    os.utime(tmp_path / "tcp" / "smtp.cdb", ns=(1, 1))
    assert relay_findings(load(tmp_path, mx(tmp_path))) == []
    (tmp_path / "tcp" / "smtp.cdb").unlink()  # before the first apply: the source alone
    assert relay_findings(load(tmp_path, mx(tmp_path))) == []
    src.write_bytes(CATCH_ALL["0-255."])
    assert len(relay_findings(load(tmp_path, mx(tmp_path)))) == 1


def test_crlf_and_corrupt_rules_are_errors(tmp_path):
    _, rc = real_compile(tmp_path, CATCH_ALL["empty"].replace(b"\n", b"\r\n"))
    assert rc == 100  # tcprules refuses the line too
    [found] = relay_findings(load(tmp_path, mx(tmp_path)))
    assert found.startswith(f"error: mx: bad tcp rules: {tmp_path}/tcp/smtp:1: ")
    assert "carriage return" in found
    cdb = tmp_path / "tcp" / "smtp.cdb"
    cdb.write_bytes(b"\xff" * 100)
    [found] = relay_findings(load(tmp_path, mx(tmp_path, rules_source="")))
    assert found.startswith(f"error: mx: bad tcp rules: {cdb}: not a valid cdb: ")


def test_a_fifo_as_the_cdb_does_not_hang(tmp_path):
    (tmp_path / "tcp").mkdir()
    os.mkfifo(tmp_path / "tcp" / "smtp.cdb")
    [found] = relay_findings(load(tmp_path, mx(tmp_path, rules_source="")))
    assert found == (
        f"error: mx: bad tcp rules: {tmp_path}/tcp/smtp.cdb: is a FIFO, not a regular "
        "file (replace it with a regular file) [services.mx.rules] (recompile it "
        "from its source (qmailkit tcprules))"
    )


RELAY_IPS = [
    "0",
    "0.0.0.0",
    "::",
    "localhost",
    "::ffff:127.0.0.1",
    "127.0.0.1.nip.io",
    "localhost.localdomain",
    "192.0.2.1",
]


@pytest.mark.parametrize("ip", RELAY_IPS)
@pytest.mark.parametrize("how", ["relay_client = true", 'env = { RELAYCLIENT = "" }'])
def test_relaying_for_all_needs_a_literal_loopback_address(tmp_path, ip, how):
    cfg = load(tmp_path, f'[services.mx]\ntype = "qmail-smtpd"\nip = "{ip}"\nrules = ""\n{how}\n')
    found = relay_findings(cfg)
    assert len(found) == 1 and found[0].startswith("error: mx: open relay: ")
    assert f"for every client on {ip}:25" in found[0]


@pytest.mark.parametrize(
    "ip",
    [
        "127.1",
        "0x7f000001",
        "2130706433",
        "999.1.1.1",
        "1e5",
        "127.0.0.1.",
        "-a.com",
        "a..b",
        ":::1",
        "1.2.3.4 5",
    ],
)
def test_listen_addresses_tcpserver_would_misread_are_refused(tmp_path, ip):
    with pytest.raises(InputError) as info:
        load(tmp_path, f'[services.mx]\ntype = "qmail-smtpd"\nip = "{ip}"\n')
    err = info.value
    assert (err.path, err.line, err.exit_code) == (str(tmp_path / "q.toml"), 10, 100)
    assert err.message.startswith("services.mx.ip: not an IPv") or err.message.startswith(
        "services.mx.ip: neither an IP address nor a host name"
    )


def test_the_local_profile_on_all_addresses_is_an_open_relay(tmp_path):
    cfg = load(tmp_path, '[services.l]\ntype = "qmail-smtpd"\nprofile = "local"\nip = "0"\n')
    assert relay_findings(cfg) == [
        (
            "error: l: open relay: RELAYCLIENT is set for every client on 0:25 "
            "[services.l.relay_client] (set relay_client = false and allow relaying per network in "
            'the tcp rules (e.g. 192.0.2.:allow,RELAYCLIENT=""), or listen on a literal loopback '
            "address such as 127.0.0.1)"
        )
    ]


@pytest.mark.parametrize("case", ["0-255.", "=.com", "cdb only", "1-255. and 0."])
def test_apply_refuses_and_writes_nothing_even_with_force(tmp_path, case):
    source = BY_NAME["=.com"][0] if case == "=.com" else CATCH_ALL.get(case, CATCH_ALL["empty"])
    cdb, _ = real_compile(tmp_path, source)
    if case != "cdb only":
        cdb.unlink()  # the first apply would compile it
    (tmp_path / "scan").mkdir()
    conf = tmp_path / "q.toml"
    body = mx(tmp_path, rules_source="" if case == "cdb only" else None)
    conf.write_text(
        f'[supervisor]\nscan_dir = "{tmp_path}/scan"\nservice_root = '
        f'"{tmp_path}/services"\nlog_user = "nobody"\n{body}'
    )
    for force in ([], ["--force"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "qmailkit",
                "services",
                "apply",
                "-q",
                *force,
                "--config",
                str(conf),
            ],
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 100, proc.stderr
        assert b"refusing to install: mx: open relay on 0:25: " in proc.stderr
        assert b"Traceback" not in proc.stderr
    assert not (tmp_path / "services").exists()
    assert list((tmp_path / "scan").iterdir()) == []
    assert cdb.exists() == (case == "cdb only")
