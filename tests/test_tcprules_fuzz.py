"""Differential test: on arbitrary rule text, qmailkit.tcprules accepts exactly
what ucspi-tcp's tcprules accepts, and writes the same bytes."""

from __future__ import annotations

import subprocess

from conftest import need
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmailkit import tcprules
from qmailkit.errors import InputError

FRAGMENTS = [
    "1", "2", "0", "25", "300", ".", "-", ":", "=", "@", ",", '"', "'", "/", " ", "\t", "#",
    "\r", "allow", "deny", "X", "host", "127.0.0.", "1.2.3.4-7", ',X="v"', ",A=/b c/", "\n",
]  # fmt: skip

rule_text = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(source=rule_text)
def test_accepts_and_writes_exactly_what_tcprules_does(tmp_path, source):
    (prog,) = need("tcprules")
    data = source.encode()
    real_cdb = tmp_path / "real.cdb"
    real_cdb.unlink(missing_ok=True)
    real = subprocess.run(
        [prog, real_cdb, tmp_path / "real.tmp"], input=data, capture_output=True, check=False
    )
    ours_cdb = tmp_path / "ours.cdb"
    ours_cdb.unlink(missing_ok=True)
    try:
        tcprules.compile_rules(tcprules.parse(data, "rules"), ours_cdb)
    except InputError as err:
        assert err.exit_code == 100 and err.line is not None
        assert real.returncode == 100, (source, str(err))
        assert not ours_cdb.exists()
        # the line we blame is the line tcprules prints
        line = data.split(b"\n")[err.line - 1].rstrip(b" \t")
        assert real.stderr == b"tcprules: fatal: unable to parse this line: " + line + b"\n"
        return
    assert real.returncode == 0, (source, real.stderr)
    assert ours_cdb.read_bytes() == real_cdb.read_bytes(), source
