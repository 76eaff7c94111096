"""The service types: config type name → module.

Every type module is a ``ServiceType``: it declares ``OPTIONS`` (name →
``config.Option``), ``PROFILES`` (profile → default overrides; empty for none),
``DEFAULT_PROFILE``, ``validate(service, system)`` (returns ``(option, message,
hint)`` or None), ``build(service, config)`` returning a ``render.Built``, and
``policy(service)``: what makes the service dangerous (``policy.Finding``s).
Adding a type is one module plus one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from qmailkit.services.types import (
    courier,
    courierauthd,
    courierpassd,
    pop3d,
    send,
    smtpd,
    vpopmaild,
)

if TYPE_CHECKING:
    from qmailkit.services.config import Config, Option, Service, System
    from qmailkit.services.policy import Finding
    from qmailkit.services.render import Built

#: what validate returns for a bad setting: (option, message, hint)
Problem = tuple[str, str, str]


class ServiceType(Protocol):
    @property
    def OPTIONS(self) -> Mapping[str, Option]: ...

    @property
    def PROFILES(self) -> Mapping[str, Mapping[str, object]]: ...

    @property
    def DEFAULT_PROFILE(self) -> str | None: ...

    def validate(self, svc: Service, system: System) -> Problem | None: ...

    def build(self, svc: Service, config: Config) -> Built: ...

    def policy(self, svc: Service) -> list[Finding]: ...


TYPES: dict[str, ServiceType] = {
    "qmail-send": send,
    "qmail-smtpd": smtpd,
    "courier-imap": courier,
    "qmail-pop3d": pop3d,
    "courierpassd": courierpassd,
    "vpopmaild": vpopmaild,
    "courierauthd": courierauthd,
}
