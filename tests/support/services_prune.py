"""Helpers for the apply --prune tests: a small config with stand-in services."""

from __future__ import annotations

from pathlib import Path

from qmailkit.demo import standins
from qmailkit.services import config as cfgmod


class Site:
    """A sandbox with stand-in programs and a config of qmail-send services (no ports)."""

    def __init__(self, pub: Path, kind: str = "runit", root: Path | None = None) -> None:
        self.pub, self.kind = pub, kind
        self.bin = pub / "bin"
        standins.install(self.bin, pub / "records")
        (pub / "qmail" / "control").mkdir(parents=True)
        self.scan_dir = pub / "scan"
        self.scan_dir.mkdir()
        self.root = root or pub / "services"

    def write(self, *names: str, delivery: str = "./Maildir/") -> Path:
        """The config with one qmail-send service per name."""
        text = f"""
[supervisor]
kind = "{self.kind}"
scan_dir = "{self.scan_dir}"
service_root = "{self.root}"
log_user = "nobody"
log_size = 4096
log_count = 3

[system]
qmail_home = "{self.pub}/qmail"
path = ["{self.bin}", "/usr/bin", "/bin"]
"""
        for name in names:
            text += f'\n[services.{name}]\ntype = "qmail-send"\ndefault_delivery = "{delivery}"\n'
        path = self.pub / "qmailkit.toml"
        path.write_text(text)
        return path

    def config(self, *names: str):
        return cfgmod.load(self.write(*names))

    def dir(self, name: str) -> Path:
        return self.root / name


def retired_dirs(root: Path, name: str) -> list[Path]:
    return sorted(root.glob(f".retired-{name}-*"))


def tree_of(top: Path) -> dict[str, bytes | None]:
    """Every path under ``top`` with its content (None for directories), FIFOs left out."""
    out: dict[str, bytes | None] = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        if p.is_symlink():
            out[rel] = b"-> " + str(p.readlink()).encode()
        elif p.is_dir():
            out[rel] = None
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out
