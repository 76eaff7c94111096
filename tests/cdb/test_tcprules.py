"""qmailkit.tcprules and ``qmailkit tcprules``: against ucspi-tcp's tcprules,
tcprulescheck and a real tcpserver."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port, need, wait_for

from qmailkit import tcprules
from qmailkit.errors import InputError

QMAILKIT = [sys.executable, "-m", "qmailkit"]


def qk(*args, input: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*QMAILKIT, *map(str, args)], input=input, capture_output=True, check=False
    )


def real_tcprules(tmp_path: Path, source: bytes) -> tuple[int, bytes | None]:
    (prog,) = need("tcprules")
    cdb, tmp = tmp_path / "real.cdb", tmp_path / "real.tmp"
    cdb.unlink(missing_ok=True)
    proc = subprocess.run([prog, cdb, tmp], input=source, capture_output=True, check=False)
    return proc.returncode, cdb.read_bytes() if cdb.exists() else None


# -- generated rules --------------------------------------------------------------------------


def _ip(rng: random.Random, parts: int = 4) -> str:
    return ".".join(str(rng.choice([1, 10, 127, 192, rng.randrange(256)])) for _ in range(parts))


def _address(rng: random.Random) -> str:
    kind = rng.randrange(11)
    if kind == 0:
        return ""
    if kind == 1:
        return _ip(rng, rng.randrange(1, 4)) + "."
    if kind == 2:
        low, high = rng.randrange(0, 300), rng.randrange(0, 300)
        return f"{_ip(rng, 3)}.{low}-{high}"
    if kind == 3:
        return f"{_ip(rng, 1)}.{rng.randrange(20)}-{rng.randrange(30)}."
    if kind == 4:
        return rng.choice(["=mx.example.com", "=.example.com", "=.com", "=", "=localhost"])
    if kind == 5:
        return f"{rng.choice(['joe', 'root', ''])}@{_ip(rng)}"
    if kind == 6:
        return f"joe@={rng.choice(['mx.example.com', 'localhost'])}"
    if kind == 7:
        return f"{_ip(rng, 3)}.0{rng.randrange(10)}-{rng.randrange(256)}"
    return _ip(rng)


def _rule(rng: random.Random) -> str:
    text = _address(rng) + ":" + rng.choice(["allow", "deny", "allow", "allow"])
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        quote = rng.choice(['"', '"', "'", "/", "|", "x"])
        alphabet = [c for c in "ab c:,=.-\"'/|0123456789" if c != quote]
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
        name = rng.choice(["RELAYCLIENT", "RBLSMTPD", "X", "SMTPAUTH", "QMAILQUEUE", "A_1"])
        text += f",{name}={quote}{value}{quote}"
    return text + rng.choice(["", "", " ", "\t", " \t "])


def generated_rules(seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.05:
            lines.append("# a comment: with colon")
        elif roll < 0.08:
            lines.append(rng.choice(["", "   ", "\t"]))
        elif roll < 0.1:
            lines.append("a line without a colon")
        else:
            lines.append(_rule(rng))
    return ("\n".join(lines) + rng.choice(["\n", ""])).encode()


@pytest.mark.parametrize("seed", range(8))
def test_cdb_is_byte_identical_to_tcprules(tmp_path, seed):
    source = generated_rules(seed, 10 + seed * 40)
    rc, expected = real_tcprules(tmp_path, source)
    assert rc == 0 and expected is not None
    ours = tmp_path / "ours.cdb"
    proc = qk("tcprules", ours, tmp_path / "ours.tmp", input=source)
    assert proc.returncode == 0, proc.stderr
    assert ours.read_bytes() == expected
    assert not (tmp_path / "ours.tmp").exists()
    # the library, with our own temp name and with the given one
    (tmp_path / "rules").write_bytes(source)
    for tmp in (None, tmp_path / "lib.tmp"):
        tcprules.compile_file(tmp_path / "rules", tmp_path / "lib.cdb", tmp)
        assert (tmp_path / "lib.cdb").read_bytes() == expected
    assert sorted(os.listdir(tmp_path)) == [  # and the lock files of cdb.install
        ".lib.cdb.lock",
        ".ours.cdb.lock",
        "lib.cdb",
        "ours.cdb",
        "real.cdb",
        "rules",
    ]


def test_known_encodings(tmp_path):
    rules = tcprules.parse(
        b'127.0.0.1:allow,RELAYCLIENT="",X="a b"\n'
        b"10.1-3.:deny,Y=/z/\n"
        b"1.2.3.250-300:allow\n"
        b"1.2.3.9-7:allow\n"
        b"# comment\n"
        b"\n"
        b"junk\n"
        b":deny\n",
        "rules",
    )
    assert [(r.line, r.keys, r.data) for r in rules.rules] == [
        (1, (b"127.0.0.1",), b"+RELAYCLIENT=\0+X=a b\0"),
        (2, (b"10.1.", b"10.2.", b"10.3."), b"D\0+Y=z\0"),
        (3, tuple(b"1.2.3.%d" % n for n in range(250, 256)), b""),
        (4, (), b""),  # an empty range, as tcprules makes it
        (8, (b"",), b"D\0"),
    ]
    assert rules.ignored == [(7, b"junk")]


BAD = [
    (b"1.2.3.4:alow\n", 1, "expected 'allow' or 'deny' after ':', found 'alow'"),
    (b"# ok\n1.2.3.4:allow\n\n5.6.7.8:allowed\n", 4, "expected ',VAR=\"value\"' after 'allow'"),
    (b'1:allow ,X="y"\n', 1, "expected ',VAR=\"value\"' after 'allow', found ' ,X=\"y\"'"),
    (b"1:allow,X\n", 1, "no '=' in ',X'"),
    (b"1:allow,X=\n", 1, "no value after 'X='"),
    (b'1:allow,X="abc\n', 1, "the value of X has no closing '\"'"),
    (b"1.2.x-3:allow\n", 1, "bad address range '1.2.x-3'"),
    (b"1.2.3.4-5-6:deny\n", 1, "bad address range '1.2.3.4-5-6'"),
    (b"a:b:allow\n", 1, "expected 'allow' or 'deny' after ':', found 'b:allow'"),
    (b"1.2.3.4:allow\r\n", 1, "expected ',VAR=\"value\"' after 'allow', found '\\r'"),
]


@pytest.mark.parametrize("source,line,what", BAD)
def test_bad_rule_names_line_exits_100_and_keeps_old_cdb(tmp_path, source, line, what):
    rc, _ = real_tcprules(tmp_path, source)
    assert rc == 100  # tcprules refuses it too, with the same exit code
    ours = tmp_path / "ours.cdb"
    ours.write_bytes(b"old")
    proc = qk("tcprules", ours, tmp_path / "ours.tmp", input=source)
    assert proc.returncode == 100
    message = proc.stderr.decode()
    assert message.startswith(f"qmailkit tcprules: fatal: standard input:{line}: {what}"), message
    assert ours.read_bytes() == b"old"
    assert not (tmp_path / "ours.tmp").exists()
    if source.endswith(b"\r\n"):
        assert "DOS line endings" in message


def test_compile_file_error_names_the_file(tmp_path):
    (tmp_path / "tcp.smtp").write_bytes(b"127.:allow\n10.:maybe\n")
    with pytest.raises(InputError) as caught:
        tcprules.compile_file(tmp_path / "tcp.smtp", tmp_path / "tcp.smtp.cdb")
    assert str(caught.value).startswith(f"{tmp_path}/tcp.smtp:2: expected 'allow' or 'deny'")
    assert os.listdir(tmp_path) == ["tcp.smtp"]


def test_ignored_lines_are_reported_on_stderr(tmp_path):
    proc = qk("tcprules", tmp_path / "r.cdb", tmp_path / "r.tmp", input=b"oops\n127.:allow\n")
    assert proc.returncode == 0
    assert proc.stderr == (
        b"qmailkit tcprules: warning: standard input:1: no ':' in this line, ignored: oops\n"
    )


def test_usage_errors(tmp_path):
    assert qk("tcprules", tmp_path / "only-one.cdb").returncode == 100
    proc = qk("tcprules", "check", tmp_path / "x.cdb")
    assert proc.returncode == 100
    assert (
        b"qmailkit tcprules check: usage: the following arguments are required: IP" in proc.stderr
    )


# -- explaining matches -----------------------------------------------------------------------


def tcprulescheck_output(cdb: Path, ip: str, host: str | None, info: str | None) -> str:
    (prog,) = need("tcprulescheck")
    env = {"PATH": os.environ["PATH"], "TCPREMOTEIP": ip}
    if host is not None:
        env["TCPREMOTEHOST"] = host
    if info is not None:
        env["TCPREMOTEINFO"] = info
    return subprocess.run([prog, cdb], env=env, capture_output=True, text=True, check=True).stdout


def tcprulescheck_style(match: tcprules.Match) -> str:
    if match.key is None:
        return "default:\nallow connection\n"
    lines = [f"rule {match.key.decode()}:"]
    if match.allow:
        lines += [f"set environment variable {n.decode()}={v.decode()}" for n, v in match.env]
    lines.append("allow connection" if match.allow else "deny connection")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_explain_agrees_with_tcprulescheck(tmp_path, seed):
    rng = random.Random(seed)
    source = generated_rules(seed, 150)
    # no default rule, so that some lookups fall through to "default"
    source = b"\n".join(line for line in source.split(b"\n") if not line.startswith(b":"))
    (tmp_path / "rules").write_bytes(source)
    rules = tcprules.compile_file(tmp_path / "rules", tmp_path / "rules.cdb")
    addresses = [k.decode() for r in rules.rules for k in r.keys if k[:1].isdigit()]
    for _ in range(60):
        ip = rng.choice(addresses) if rng.random() < 0.5 else _ip(rng)
        ip = ip.rstrip(".") if ip.count(".") == 3 else _ip(rng)
        host = rng.choice([None, "mx.example.com", "localhost", "a.b.com"])
        info = rng.choice([None, None, "joe", "root"]) if host or rng.random() < 0.5 else None
        expected = tcprulescheck_output(tmp_path / "rules.cdb", ip, host, info)
        from_cdb = tcprules.explain(tmp_path / "rules.cdb", ip, host, info)
        from_rules = tcprules.explain(rules, ip, host, info)
        assert tcprulescheck_style(from_cdb) == expected, (ip, host, info)
        assert (from_rules.key, from_rules.data) == (from_cdb.key, from_cdb.data)
        if from_rules.rule is not None:
            assert from_rules.key in from_rules.rule.keys
            line_text = source.split(b"\n")[from_rules.rule.line - 1]
            assert line_text.rstrip(b" \t") == from_rules.rule.text


def test_lookup_order():
    assert tcprules.lookup_keys("1.2.3.4", "mx.example.com", "joe") == [
        b"joe@1.2.3.4", b"joe@=mx.example.com", b"1.2.3.4", b"=mx.example.com",
        b"1.2.3.", b"1.2.", b"1.", b"=.example.com", b"=.com", b"=", b"",
    ]  # fmt: skip
    assert tcprules.lookup_keys("10.0.0.1") == [b"10.0.0.1", b"10.0.0.", b"10.0.", b"10.", b""]


def test_check_command_names_the_source_line(tmp_path):
    rules = tmp_path / "tcp.smtp"
    rules.write_bytes(b'# trusted\n127.:allow,RELAYCLIENT=""\n10.:deny\n')
    tcprules.compile_file(rules, tmp_path / "tcp.smtp.cdb")
    proc = qk("tcprules", "check", tmp_path / "tcp.smtp.cdb", "127.0.0.1")
    assert proc.returncode == 0
    assert proc.stdout.decode() == (
        "rule 127.:\nset environment variable RELAYCLIENT=\nallow connection\n"
        f'from {rules}:2: 127.:allow,RELAYCLIENT=""\n'
    )
    proc = qk("tcprules", "check", "--rules", rules, tmp_path / "tcp.smtp.cdb", "10.9.9.9")
    assert proc.stdout.decode() == f"rule 10.:\ndeny connection\nfrom {rules}:3: 10.:deny\n"
    proc = qk("tcprules", "check", tmp_path / "tcp.smtp.cdb", "192.168.1.1", "mx.example.com")
    assert proc.stdout.decode() == (
        f"default:\nallow connection\nno line of {rules} matches: tcpserver allows the connection\n"
    )
    # the source changed but was not compiled: say so
    rules.write_bytes(b"127.:deny\n")
    proc = qk("tcprules", "check", tmp_path / "tcp.smtp.cdb", "127.0.0.1")
    assert proc.returncode == 0
    assert proc.stdout == b"rule 127.:\nset environment variable RELAYCLIENT=\nallow connection\n"
    assert b"does not match" in proc.stderr and b"recompile" in proc.stderr
    # a broken rules source: the cdb's answer, and a warning
    rules.write_bytes(b"127.:allow\n10.:maybe\n")
    proc = qk("tcprules", "check", tmp_path / "tcp.smtp.cdb", "127.0.0.1")
    assert proc.returncode == 0 and proc.stdout.startswith(b"rule 127.:\n")
    assert f"cannot say which line matched: {rules}:2: expected".encode() in proc.stderr
    # a broken cdb or a non-address
    (tmp_path / "bad.cdb").write_bytes(b"short")
    assert qk("tcprules", "check", tmp_path / "bad.cdb", "1.2.3.4").returncode == 100
    assert qk("tcprules", "check", tmp_path / "tcp.smtp.cdb", "not-an-ip").returncode == 100


# -- a real tcpserver honours our cdb ----------------------------------------------------------


@pytest.fixture
def tcpserver(tmp_path):
    """A tcpserver on 127.0.0.1 with -x RULES.cdb whose child prints its environment."""
    (prog,) = need("tcpserver")
    port = free_port()
    cdb = tmp_path / "rules.cdb"
    tcprules.compile_rules(tcprules.parse(b":allow\n"), cdb)
    proc = subprocess.Popen(
        [prog, "-R", "-H", "-l", "localhost", "-x", str(cdb), "127.0.0.1", str(port),
         "sh", "-c", "env; echo END"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip

    def connect() -> dict[str, str] | None:
        """The child's environment, or None when tcpserver dropped the connection."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        if not data:
            return None
        assert data.endswith(b"END\n")
        return dict(line.split("=", 1) for line in data.decode().splitlines()[:-1])

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(listening, 10, what="tcpserver to listen")
    yield cdb, connect
    proc.terminate()
    proc.wait(timeout=10)


def test_real_tcpserver_honours_our_rules(tcpserver, tmp_path):
    cdb, connect = tcpserver

    def use(source: bytes) -> None:
        tcprules.compile_rules(tcprules.parse(source), cdb)

    use(b'127.0.0.1:allow,RELAYCLIENT="",X="a b"\n:deny\n')
    env = connect()
    assert env is not None
    assert env["RELAYCLIENT"] == "" and env["X"] == "a b"
    assert env["TCPREMOTEIP"] == "127.0.0.1" and env["PROTO"] == "TCP"

    use(b"127.0.0.1-3:deny\n:allow\n")
    assert connect() is None

    use(b"127.:allow,RBLSMTPD='-no thanks',Q=|x=y|\n127.1.:deny\n")
    env = connect()
    assert env is not None and env["RBLSMTPD"] == "-no thanks" and env["Q"] == "x=y"

    use(b"127.0.:deny\n127.:allow\n")  # the longer prefix wins
    assert connect() is None

    use(b"10.:deny\n:allow,DEFAULTED=/yes/\n")
    env = connect()
    assert env is not None and env["DEFAULTED"] == "yes" and "RELAYCLIENT" not in env

    use(b'127.0.0.0-255:allow,RANGE="1"\n:deny\n')
    env = connect()
    assert env is not None and env["RANGE"] == "1"
    # and what tcpserver did is what explain says
    match = tcprules.explain(cdb, "127.0.0.1")
    assert (match.key, match.allow, match.env) == (b"127.0.0.1", True, ((b"RANGE", b"1"),))
