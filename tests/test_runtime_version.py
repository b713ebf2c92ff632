"""The library refuses, with a clear message, a runtime older than the ORT API it was built for.

A real ORT runtime is wrapped in an OrtApiBase that claims to be ONNX Runtime 1.20 and offers no API
version above 20; RegisterCustomOps must return an error status naming both versions.
"""

import ctypes
import glob
import os
import shutil
import subprocess

import onnxruntime
import pytest

import im2win_ort

GET_API = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
GET_VERSION = ctypes.CFUNCTYPE(ctypes.c_char_p)


class OrtApiBase(ctypes.Structure):
    _fields_ = [("GetApi", GET_API), ("GetVersionString", GET_VERSION)]


def _real_api_base():
    libs = glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*"))
    if not libs:
        pytest.skip("this onnxruntime wheel ships no libonnxruntime.so to wrap")
    ort_lib = ctypes.CDLL(libs[0])
    ort_lib.OrtGetApiBase.restype = ctypes.POINTER(OrtApiBase)
    return ort_lib.OrtGetApiBase().contents


# ctypes warns about any callback that returns c_void_p; the returned pointers are ORT's own.
@pytest.mark.filterwarnings("ignore:memory leak in callback function")
def test_older_runtime_is_refused_with_a_clear_message():
    real = _real_api_base()
    newest_offered = 20

    @GET_API
    def get_api(version):
        return real.GetApi(version) if version <= newest_offered else None

    @GET_VERSION
    def get_version():
        return b"1.20.0"

    fake = OrtApiBase(get_api, get_version)
    lib = ctypes.CDLL(im2win_ort.get_library_path())
    lib.RegisterCustomOps.restype = ctypes.c_void_p
    lib.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.POINTER(OrtApiBase)]
    status = lib.RegisterCustomOps(None, ctypes.byref(fake))
    assert status, "RegisterCustomOps accepted a runtime older than its API version"

    # OrtApi begins with CreateStatus, GetErrorCode, GetErrorMessage.
    api = ctypes.cast(real.GetApi(1), ctypes.POINTER(ctypes.c_void_p))
    get_error_message = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(api[2])
    message = get_error_message(status).decode()
    assert "ONNX Runtime 1.20.0" in message
    assert "API version" in message and "upgrade onnxruntime" in message


def test_library_exports_only_register_custom_ops():
    """Only RegisterCustomOps is exported (linker script), so the library cannot clash with others."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("binutils' nm is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", im2win_ort.get_library_path()], check=True,
                         capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.split()[1:2] == ["T"]}
    assert exported == {"RegisterCustomOps"}
