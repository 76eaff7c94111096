"""Builds qmailkit's two small C extensions (see pyproject.toml for the rest):
the cdb writer and the vpasswd scanner, the hot loops of ``cdb make`` and
mkvalidrcptto.

Both are optional: without a C compiler and Python's headers the install
still succeeds, and qmailkit does the same work in Python (cdbx writes the
cdbs), more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qmailkit.cdb.backends._native",
            ["src/qmailkit/cdb/backends/_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "qmailkit.qmail._vpasswd",
            ["src/qmailkit/qmail/_vpasswd.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
