"""pytest fixtures shared by the im2win-ort tests; plain helpers live in helpers.py."""

import onnxruntime as ort
import pytest

from helpers import ISAS, L2_CLASSES

# Errors are checked through exceptions; ORT's own log lines about them are noise.
ort.set_default_logger_severity(4)


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Each ISA this CPU can run, forced through IM2WIN_ISA (read when a kernel is created)."""
    monkeypatch.setenv("IM2WIN_ISA", request.param)
    return request.param


@pytest.fixture(params=list(L2_CLASSES.values()), ids=list(L2_CLASSES))
def l2(request):
    """The L2 size (bytes) of each CPU class a plan is checked for, whatever this machine's."""
    return request.param
