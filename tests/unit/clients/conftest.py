"""The two paths of the client's compiled pieces: the timed read (for the tests that read real sockets) and a
finished stream's decode."""

import os

import pytest

from bench.clients import http, openai


def _required_or_skip(module: str) -> None:
    """scripts/test.sh requires the compiled pieces (BENCH_REQUIRE_COMPILED=1): there a missing one fails its tests."""
    if os.environ.get("BENCH_REQUIRE_COMPILED") == "1":
        pytest.fail(
            f"{module} was not built (BENCH_REQUIRE_COMPILED=1): it needs a C compiler and Python's headers; "
            "pip install -v -e . shows why it failed"
        )
    pytest.skip(f"{module} was not built here (no C compiler or Python headers): its Python twin does the work")


@pytest.fixture
def compiled_read():
    """bench.clients._stamped, built at install (setup.py) where a C compiler and Python's headers are. scripts/test.sh
    requires it (BENCH_REQUIRE_COMPILED=1); elsewhere its tests skip without it."""
    if not http.KERNEL_STAMPS:
        pytest.skip("the timed read is Linux's (kernel receive times)")
    if http._stamped is None:
        _required_or_skip("bench.clients._stamped")
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


@pytest.fixture(params=["compiled", "python"])
def decode_path(request, monkeypatch):
    """Each test runs on both paths of a finished stream's decode: bench.clients._sse (compiled at install, where
    it could be) and the Python it stands in for (split_sse's quick path, OpenAIDialect.read's loop)."""
    if request.param == "compiled":
        if http._sse is None:
            _required_or_skip("bench.clients._sse")
    else:
        monkeypatch.setattr(http, "_sse", None)
        monkeypatch.setattr(openai, "_sse", None)
    return request.param
