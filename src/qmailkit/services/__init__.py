"""Supervised services from one config file: load it (``config``), render the service
directories (``render``), and apply/status/check them against the running system.

Service types live in ``qmailkit.services.types``, one module each.
"""
