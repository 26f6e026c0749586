"""The compiled pieces, both `optional`: where one cannot be built (no compiler, no Python headers) the install goes on
and the same work is done in Python instead.

- bench.clients._stamped: the timed read's hot path (Linux only: recvmsg with the kernel's receive time);
- bench.clients._sse: a finished stream's usual decode (server-sent events split, OpenAI chunks read)."""

import sys

from setuptools import Extension, setup

stamped = [Extension("bench.clients._stamped", ["bench/clients/_stamped.c"], optional=True)]
setup(
    ext_modules=(stamped if sys.platform.startswith("linux") else [])
    + [Extension("bench.clients._sse", ["bench/clients/_sse.c"], optional=True)]
)
