"""A small file system of the tests' own: a tmpfs mounted for one test (root only: CI runs as root)."""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """Mount a tmpfs with `options` (e.g. "size=64k", "ro,size=64k") at the new folder `path` and unmount it
    afterwards; skips the test, saying why, where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip(f"a tmpfs ({options}) needs root to mount")
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode != 0:
        pytest.skip(f"mount -t tmpfs -o {options} failed here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
