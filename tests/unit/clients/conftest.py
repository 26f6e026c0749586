"""The timed read's two paths, for the tests that read real sockets."""

import pytest

from bench.clients import http


@pytest.fixture(params=["compiled", "python"])
def read_path(request, monkeypatch):
    """Each test runs on both paths. The compiled one must be there on Linux: the install builds it (setup.py)."""
    if not http.KERNEL_STAMPS:
        pytest.skip("the timed read is Linux's (kernel receive times)")
    if request.param == "compiled":
        assert http._stamped is not None, "bench.clients._stamped was not built: pip install -e . compiles it"
    else:
        monkeypatch.setattr(http, "_stamped", None)
    return request.param
