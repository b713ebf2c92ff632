"""im2win convolution (Lu, Chu, Liu, HPEC 2022) for ONNX Runtime.

``get_library_path()`` names the custom-op library that registers ``com.im2win::Conv``::

    so = onnxruntime.SessionOptions()
    so.register_custom_ops_library(im2win_ort.get_library_path())

``rewrite(model)`` moves a model's Conv nodes to it; ``InferenceSession(model, backend="native" |
"python")`` rewrites if needed and does the registration for you, or runs the op in pure
Python (``im2win_ort.reference``, the NumPy im2win) through onnxruntime-extensions.
"""

from . import reference
from ._library import DOMAIN, OP_TYPE, get_library_path, session_options
from .rewriter import RewriteReport, rewrite, rewrite_with_report
from .session import InferenceSession

__all__ = ["DOMAIN", "OP_TYPE", "InferenceSession", "RewriteReport", "get_library_path", "reference", "rewrite",
           "rewrite_with_report", "session_options"]
__version__ = "0.1.0"
