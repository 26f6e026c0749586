"""The timed read's two paths, for the tests that read real sockets."""

import os

import pytest

from bench.clients import http


@pytest.fixture
def compiled_read():
    """bench.clients._stamped, built at install (setup.py) where a C compiler and Python's headers are. scripts/test.sh
    requires it (BENCH_REQUIRE_COMPILED=1); elsewhere its tests skip without it."""
    if not http.KERNEL_STAMPS:
        pytest.skip("the timed read is Linux's (kernel receive times)")
    if http._stamped is None:
        if os.environ.get("BENCH_REQUIRE_COMPILED") == "1":
            pytest.fail(
                "bench.clients._stamped was not built (BENCH_REQUIRE_COMPILED=1): it needs a C compiler and Python's "
                "headers; pip install -v -e . shows why it failed"
            )
        pytest.skip("bench.clients._stamped was not built here (no C compiler or Python headers): reads are Python's")
    return http._stamped


@pytest.fixture(params=["compiled", "python"])
def read_path(request, monkeypatch):
    """Each test runs on both paths: the compiled read (see compiled_read) and its Python twin."""
    if request.param == "compiled":
        request.getfixturevalue("compiled_read")
    else:
        if not http.KERNEL_STAMPS:
            pytest.skip("the timed read is Linux's (kernel receive times)")
        monkeypatch.setattr(http, "_stamped", None)
    return request.param
