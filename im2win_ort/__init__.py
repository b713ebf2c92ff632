"""im2win convolution (Lu, Chu, Liu, HPEC 2022) for ONNX Runtime.

``get_library_path()`` names the custom-op library that registers ``com.im2win::Conv``::

    so = onnxruntime.SessionOptions()
    so.register_custom_ops_library(im2win_ort.get_library_path())

``rewrite(model)`` moves a model's Conv nodes to it; ``InferenceSession(model, backend="native" |
"python")`` rewrites if needed and does the registration for you, or runs the op in pure
Python (``im2win_ort.reference``, the NumPy im2win) through onnxruntime-extensions.
"""

from ._library import DOMAIN, OP_TYPE, get_library_path, session_options

# The rest loads on first use (PEP 562): a user who only needs get_library_path() for ORT's
# SessionOptions imports neither onnx, onnxruntime, numpy nor the rewriter (docs/deploying.md, "Size of
# the import").
_LAZY = {"reference": (".reference", None), "InferenceSession": (".session", "InferenceSession"),
         "RewriteReport": (".rewriter", "RewriteReport"), "rewrite": (".rewriter", "rewrite"),
         "rewrite_with_report": (".rewriter", "rewrite_with_report")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'im2win_ort' has no attribute '{name}'")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["DOMAIN", "OP_TYPE", "InferenceSession", "RewriteReport", "get_library_path", "reference", "rewrite",
           "rewrite_with_report", "session_options"]
__version__ = "0.3.3"
