"""im2win convolution (Lu, Chu, Liu, HPEC 2022) for ONNX Runtime.

``get_library_path()`` names the custom-op library that registers ``com.im2win::Conv``::

    so = onnxruntime.SessionOptions()
    so.register_custom_ops_library(im2win_ort.get_library_path())
"""

from ._library import DOMAIN, OP_TYPE, get_library_path, session_options

__all__ = ["DOMAIN", "OP_TYPE", "get_library_path", "session_options"]
__version__ = "0.1.0"
