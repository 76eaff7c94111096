"""Builds qmailkit's one C extension, the fast cdb writer (see pyproject.toml for the rest).

It is optional: without a C compiler and Python's headers the install still
succeeds, and qmailkit writes cdbs with cdbx, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qmailkit.cdb._native",
            ["src/qmailkit/cdb/_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
