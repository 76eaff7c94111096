"""Property: whatever a config value contains, it reaches the program as exactly one argument
or one environment value, under sh, dash (and bash --posix), and the logged command line reads
back as the same argv."""

from __future__ import annotations

import pwd
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.services_render import SHELLS, make_standins, run_script, toml_str

from qmailkit.services import config, render

NASTY = list("'\"$`\\ \n\t;|&*?[]{}()<>~#=%!-:,.@") + ["$(id)", "`id`", "${X}", "'\\''", "\r"]

text = st.lists(
    st.one_of(
        st.sampled_from(NASTY),
        st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
    ),
    max_size=16,
).map("".join)
line_text = text.filter(lambda s: "\n" not in s and "\r" not in s)
# file names go into exported paths, each logged as one line: no line break (A19)
filename = line_text.filter(
    lambda s: s not in ("", ".", "..") and "/" not in s and len(s.encode()) < 200
)
zone = st.from_regex(r"[a-z][a-z0-9]{0,8}\.(org|net)", fullmatch=True)
env_name = st.from_regex(r"QK_T_[A-Z0-9_]{0,6}", fullmatch=True)

# what the shells add to the environment themselves
SHELL_NOISE = {"PWD", "SHLVL", "OLDPWD", "_"}

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _files(d: Path, names: list[str]) -> list[str]:
    paths = []
    for i, name in enumerate(names):
        sub = d / f"f{i}"
        sub.mkdir()
        p = sub / name
        p.write_text("x")
        p.chmod(0o755)
        paths.append(str(p))
    return paths


@SETTINGS
@given(
    hostname=line_text.filter(bool),
    greeting=line_text,
    names=st.lists(filename, min_size=4, max_size=4),
    rbl=st.lists(st.tuples(zone, line_text), max_size=2),  # one SMTP line each
    env=st.dictionaries(env_name, line_text, max_size=3),  # logged as NAME="value": one line
    auth_set=st.dictionaries(env_name, line_text, max_size=2),
    ssl=st.booleans(),
    softlimit=st.sampled_from([0, 50000000]),
    port=st.integers(1, 65535),
)
def test_smtpd_values_arrive_intact(
    *, hostname, greeting, names, rbl, env, auth_set, ssl, softlimit, port
):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bindir = d / "bin"
        make_standins(bindir)
        cert, rules, checkpw, true = _files(d, names)
        (d / "qmail" / "control").mkdir(parents=True)
        (d / "qmail" / "control" / "rcpthosts").write_text("")
        zones = [f"{z}:{msg}" if msg else z for z, msg in rbl]
        cfg_text = "\n".join(
            [
                "[system]",
                f"qmail_home = {toml_str(str(d / 'qmail'))}",
                f'path = [{toml_str(str(bindir))}, "/usr/bin", "/bin"]',
                "[services.mx]",
                'type = "qmail-smtpd"',
                'ip = "0"',
                f"port = {port}",
                'user = "nobody"',
                f"hostname = {toml_str(hostname)}",
                f"greeting = {toml_str(greeting)}",
                f"tls_cert = {toml_str(cert)}",
                f"ssl = {'true' if ssl else 'false'}",
                f"rules = {toml_str(rules)}",
                f"checkpassword = {toml_str(checkpw)}",
                f"checkpassword_true = {toml_str(true)}",
                f"rbl_block = [{', '.join(toml_str(z) for z in zones)}]",
                'fixcrio = ""',
                f"softlimit = {softlimit}",
                "env = {" + ", ".join(f"{k} = {toml_str(v)}" for k, v in env.items()) + "}",
                "auth_set = {"
                + ", ".join(f"{k} = {toml_str(v)}" for k, v in auth_set.items())
                + "}",
                "",
            ]
        )
        cfg = config.loads(cfg_text, str(d / "q.toml"))
        r = render.render(cfg)["mx"]
        script = d / "run"
        script.write_bytes(r.files["run"][0])

        uid = str(pwd.getpwnam("nobody").pw_uid)
        gid = str(pwd.getpwnam("nobody").pw_gid)
        expect = ["softlimit", "-m", str(softlimit)] if softlimit else []
        expect += ["sslserver", "-e"] if ssl else ["tcpserver"]
        expect += [
            "-vR",
            "-l",
            hostname,
            "-c",
            "50",
            "-u",
            uid,
            "-g",
            gid,
            "-x",
            rules,
            "0",
            str(port),
        ]
        if zones:
            expect += ["rblsmtpd", "-t0"]
            for z in zones:
                expect += ["-r", z]
        expect += ["qmail-smtpd", hostname, checkpw, true]
        # the whole environment the program gets: what the original exported by default
        want_env = {
            "QK_DUMP": str(d / "dump"),
            "PATH": f"{bindir}:/usr/bin:/bin",
            "GREETDELAY": "5",
            "DROP_PRE_GREET": "1",
            "FORCE_TLS": "0",
            "DENY_TLS": "0",
            "MFCHECK": "3",
            "QMAILSMTPD_LOG_MAIL": "1",
            "QMAILSMTPD_LOG_RCPT": "1",
            "REQUIRE_AUTH": "0",
            "ALLOW_INSECURE_AUTH": "0",
            "VALIDRCPTTO_CDB": str(d / "qmail/control/validrcptto.cdb"),
            "VALIDRCPTTO_LIMIT": "10",
            "VALIDRCPTTO_LOG": "2",
            "SPFBEHAVIOR": "3",
            "SPF_LOG": "1",
            "SPF_BLOCK_PLUS_ALL": "1",
        }
        if greeting:  # only non-empty values are exported, as in the original
            want_env["SMTPGREETING"] = greeting
        if ssl:
            want_env.update(CERTFILE=cert, KEYFILE="", DHFILE="", SSL="1")
        else:
            want_env.update(TLS_SERVER_CERT=cert, SSL="0")
        want_env.update({f"AUTH_SET_{k}": v for k, v in auth_set.items()})
        want_env.update(env)
        for shell in SHELLS:
            run = run_script(shell, script, d)
            assert run.rc == 0, (shell, run.output)
            assert run.argv == expect[1:], shell
            assert run.logged_command() == expect, shell
            got = {k: v for k, v in run.env.items() if k not in SHELL_NOISE}
            assert got == want_env, shell
            for k, v in want_env.items():
                if k not in ("QK_DUMP", "PATH"):
                    assert f'{k}="{v}"\n' in run.output, (shell, k)


@SETTINGS
@given(
    hostname=line_text.filter(bool),
    names=st.lists(filename, min_size=2, max_size=2),
    maildir=line_text.filter(bool),
    ip=st.sampled_from(["0", "127.0.0.1", "::1", "mail.example.org"]),
)
def test_pop3d_values_arrive_intact(hostname, names, maildir, ip):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bindir = d / "bin"
        make_standins(bindir)
        cert, checkpw = _files(d, names)
        cfg = config.loads(
            "\n".join(
                [
                    "[system]",
                    f'path = [{toml_str(str(bindir))}, "/usr/bin", "/bin"]',
                    "[services.pop]",
                    'type = "qmail-pop3d"',
                    'profile = "pop3s"',
                    f"ip = {toml_str(ip)}",
                    f"hostname = {toml_str(hostname)}",
                    f"tls_cert = {toml_str(cert)}",
                    f"checkpassword = {toml_str(checkpw)}",
                    f"maildir = {toml_str(maildir)}",
                    "",
                ]
            ),
            str(d / "q.toml"),
        )
        script = d / "run"
        script.write_bytes(render.render(cfg)["pop"].files["run"][0])
        expect = [
            "sslserver",
            "-e",
            "-vRH",
            "-l",
            hostname,
            "-c",
            "40",
            ip,
            "995",
            "qmail-popup",
            hostname,
            checkpw,
            "qmail-pop3d",
            maildir,
        ]
        for shell in SHELLS:
            run = run_script(shell, script, d)
            assert run.rc == 0, (shell, run.output)
            assert run.argv == expect[1:], shell
            assert run.logged_command() == expect, shell
            assert (run.env["CERTFILE"], run.env["KEYFILE"], run.env["DHFILE"]) == (cert, "", "")


@SETTINGS
@given(delivery=text.filter(bool), env=st.dictionaries(env_name, line_text, max_size=3))
def test_send_delivery_arrives_intact(delivery, env):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bindir = d / "bin"
        make_standins(bindir)
        cfg = config.loads(
            "\n".join(
                [
                    "[system]",
                    f'path = [{toml_str(str(bindir))}, "/usr/bin", "/bin"]',
                    "[services.send]",
                    'type = "qmail-send"',
                    f"default_delivery = {toml_str(delivery)}",
                    "env = {" + ", ".join(f"{k} = {toml_str(v)}" for k, v in env.items()) + "}",
                    "",
                ]
            ),
            str(d / "q.toml"),
        )
        script = d / "run"
        script.write_bytes(render.render(cfg)["send"].files["run"][0])
        for shell in SHELLS:
            run = run_script(shell, script, d)
            assert run.rc == 0, (shell, run.output)
            assert run.argv == [delivery], shell
            assert run.logged_command() == ["qmail-start", delivery], shell
            got = {k: v for k, v in run.env.items() if k not in SHELL_NOISE}
            assert got == {"QK_DUMP": str(d / "dump"), "PATH": f"{bindir}:/usr/bin:/bin", **env}
