"""The service types: config type name → module.

A type module declares ``OPTIONS`` (name → ``config.Option``), optionally ``PROFILES``
(profile → default overrides), ``DEFAULT_PROFILE`` and ``validate(service, system)``
(returns ``(option, message, hint)`` or None), and ``build(service, config)``
returning a ``render.Built``.  Adding a type is one module plus one line here.
"""

from __future__ import annotations

from types import ModuleType

from qmailkit.services.types import (
    courier,
    courierauthd,
    courierpassd,
    pop3d,
    send,
    smtpd,
    vpopmaild,
)

TYPES: dict[str, ModuleType] = {
    "qmail-send": send,
    "qmail-smtpd": smtpd,
    "courier-imap": courier,
    "qmail-pop3d": pop3d,
    "courierpassd": courierpassd,
    "vpopmaild": vpopmaild,
    "courierauthd": courierauthd,
}
