"""The one compiled piece: bench.clients._stamped, the timed read's hot path (Linux). `optional`: where it cannot be
built (no compiler, no Python headers) the install goes on and bench.clients.http reads in Python instead."""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("bench.clients._stamped", ["bench/clients/_stamped.c"], optional=True)]
    if sys.platform.startswith("linux")
    else []
)
