"""The one rule for tests that need a system package (a binary or command) that `make test` installs."""

from __future__ import annotations

import shutil

import pytest


def require_system_package(found, package: str):
    """`found` (a binary or command) or stop the test: a failure where `make test` could have
    installed `package` with apt-get (a missing install step must not pass as a skip), else a skip."""
    if found is None:
        if shutil.which("apt-get"):
            pytest.fail(f"{package} is not installed: `make test` installs it with apt-get")
        pytest.skip(f"{package} is not installed and there is no apt-get to install it")
    return found
