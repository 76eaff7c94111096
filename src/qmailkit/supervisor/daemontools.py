"""daemontools (svscan/supervise): an 18-byte ``supervise/status``.

Layout: TAI64N of the last change (12 bytes), pid (4 bytes little-endian, 0
when down), paused flag (1 byte), wanted state (``u``/``d``).
"""

from __future__ import annotations

from qmailkit.supervisor import ServiceStatus, Supervisor


class Daemontools(Supervisor):
    kind = "daemontools"

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        if len(raw) < 18:
            return ServiceStatus(service, True, False, None, None, normally_up, None)
        pid = int.from_bytes(raw[12:16], "little")
        up = pid != 0
        return ServiceStatus(
            path=service,
            supervised=True,
            up=up,
            pid=pid or None,
            seconds=self.seconds_since(raw[:12]),
            normally_up=normally_up,
            want=self._want(up, raw[17]),
            paused=bool(raw[16]),
        )
