"""ORT sessions that run com.im2win::Conv nodes, on the compiled library or in pure Python.

    sess = im2win_ort.InferenceSession("model.onnx")                    # native kernels
    sess = im2win_ort.InferenceSession("model.onnx", backend="python")  # im2win_ort.reference

backend="python" needs no compiled code: each com.im2win::Conv node runs im2win_ort.reference.conv
as a Python custom op of onnxruntime-extensions. Such ops live in onnxruntime-extensions' own
domain (ai.onnx.contrib), take a fixed list of required inputs and scalar attributes only, so the
session runs a rewritten copy of the model (the caller's model is never modified) in which every
com.im2win::Conv node
  - moves to that domain, as one of four op types by which of its optional inputs B, Z it has;
  - carries each of its attributes as a string of the same name (lists comma-separated, "" when
    the attribute is absent, i.e. ONNX's default), plus its node name and a session token.
An exception that escapes a Python op of onnxruntime-extensions 0.15 terminates the process, so the
op never raises: it records the error under the session's token and returns an empty tensor, and
the session's run methods raise the recorded error (a ValueError naming the node) instead.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from typing import Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import AttributeProto, helper

from . import reference
from ._library import DOMAIN, OP_TYPE, PLAN_ENTRY, THREADS_ENTRY, check_plan_mode, get_library_path

BACKENDS = ("native", "python")
PYTHON_OP_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions' domain for Python custom ops
# Python op type for each (has B, has Z).
PYTHON_OP_TYPES = {(False, False): "Im2winConv", (True, False): "Im2winConvB",
                   (False, True): "Im2winConvZ", (True, True): "Im2winConvBZ"}
# The op's attributes and the ONNX attribute type of each.
_A = AttributeProto
_ATTRIBUTE_TYPES = {"auto_pad": _A.STRING, "dilations": _A.INTS, "group": _A.INT, "kernel_shape": _A.INTS,
                    "pads": _A.INTS, "strides": _A.INTS, "activation": _A.STRING, "activation_params": _A.FLOATS,
                    "weight_layout": _A.STRING, "layout": _A.STRING, "input_layout": _A.STRING,
                    "algorithm": _A.STRING}
_NODE_NAME = "im2win_node"
_SESSION = "im2win_session"
_INSTALL_HINT = ("backend='python' needs onnxruntime-extensions; install it with "
                 "`pip install onnxruntime-extensions` (or `pip install \"im2win-ort[python-backend]\"`)")

ModelLike = Union[str, os.PathLike, bytes, onnx.ModelProto]


def _tell_pool_size(so) -> None:
    """Tells the op the intra-op pool's size (THREADS_ENTRY) when the options fix it and do not say it."""
    try:
        so.get_session_config_entry(THREADS_ENTRY)
        return  # already said
    except Exception:
        pass
    if so.intra_op_num_threads > 0:
        so.add_session_config_entry(THREADS_ENTRY, str(so.intra_op_num_threads))


def InferenceSession(model: ModelLike, backend: str = "native", threads: int | None = None, rewrite: bool = True,
                     plan: str | None = None, **kwargs):
    """An onnxruntime.InferenceSession that runs model's com.im2win::Conv nodes.

    model: a path, serialized bytes or an onnx.ModelProto (left unchanged).
    rewrite: when the model still has ONNX Conv nodes, run it rewritten (im2win_ort.rewrite) so they
        run on com.im2win::Conv; False runs the model as given.
    backend: "native" registers the compiled custom-op library (get_library_path()); "python" runs
        each com.im2win::Conv node with im2win_ort.reference through onnxruntime-extensions.
    threads: intra_op_num_threads (None keeps ORT's default).
    plan: how the op chooses each layer's plan, the session entry im2win.plan: "measure" (the
        default), "heuristic", "positions" or "channels" (native backend).
    kwargs go to onnxruntime.InferenceSession (sess_options, providers, ...); a given
    sess_options gets the custom ops registered on it; providers default to the CPU.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    so = kwargs.pop("sess_options", None) or ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    if plan is not None:
        so.add_session_config_entry(PLAN_ENTRY, check_plan_mode(plan))
    kwargs.setdefault("providers", ["CPUExecutionProvider"])
    if rewrite:
        model, all_convs_ours = _rewritten_if_needed(model)
        if backend == "native" and all_convs_ours:
            kwargs.setdefault("disabled_optimizers", NCHWC_FREE)
    if backend == "native":
        _tell_pool_size(so)
        so.register_custom_ops_library(get_library_path())
        if not isinstance(model, (str, os.PathLike, bytes)):
            model = model.SerializeToString()
        return ort.InferenceSession(os.fspath(model) if isinstance(model, os.PathLike) else model, so, **kwargs)

    extensions = _register_python_ops()
    so.register_custom_ops_library(extensions.get_library_path())
    token = f"s{next(_tokens)}"
    return PythonBackendSession(_to_python_backend(_load(model), token).SerializeToString(), token, so, **kwargs)


class PythonBackendSession(ort.InferenceSession):
    """An onnxruntime.InferenceSession whose run methods raise the errors of its Python ops.

    (A run that overlaps a failing run of the same session, in another thread, raises that error too.)
    """

    def __init__(self, model_bytes: bytes, token: str, sess_options, **kwargs):
        self._im2win_token = token
        weakref.finalize(self, _errors.pop, token, None)
        super().__init__(model_bytes, sess_options, **kwargs)

    def _checked(self, run, *args, **kwargs):
        mark = next(_sequence)
        try:
            result = run(*args, **kwargs)
        except Exception as e:  # a later node may fail on the empty tensor a failed op returned
            _raise_recorded(self._im2win_token, mark, e)
            raise
        _raise_recorded(self._im2win_token, mark)
        return result

    def run(self, *args, **kwargs):
        return self._checked(super().run, *args, **kwargs)

    def run_with_ort_values(self, *args, **kwargs):
        return self._checked(super().run_with_ort_values, *args, **kwargs)

    def run_with_iobinding(self, *args, **kwargs):
        return self._checked(super().run_with_iobinding, *args, **kwargs)

    def run_with_ortvaluevector(self, *args, **kwargs):
        return self._checked(super().run_with_ortvaluevector, *args, **kwargs)

    def run_async(self, output_names, input_feed, callback, user_data, run_options=None):
        mark, token = next(_sequence), self._im2win_token

        def done(results, data, err):
            error = _recorded(token, mark)
            callback(None if error else results, data, str(error) if error else err)

        return super().run_async(output_names, input_feed, done, user_data, run_options)


# Errors recorded by the Python ops: session token -> recent (sequence number, exception).
_errors: dict = {}
_errors_lock = threading.Lock()
_sequence = itertools.count(1)
_tokens = itertools.count()


def _record(token: str, error: Exception) -> None:
    with _errors_lock:
        recent = _errors.setdefault(token, [])
        recent.append((next(_sequence), error))
        del recent[:-8]


def _recorded(token: str, mark: int):
    """The first error recorded for token after sequence number mark, or None."""
    with _errors_lock:
        return next((e for seq, e in _errors.get(token, []) if seq > mark), None)


def _raise_recorded(token: str, mark: int, cause: Exception | None = None) -> None:
    error = _recorded(token, mark)
    if error is not None:
        raise type(error)(str(error)) from cause


def _to_python_backend(model: onnx.ModelProto, token: str) -> onnx.ModelProto:
    """A copy of model whose com.im2win::Conv nodes are the Python custom ops (see the module doc);
    their errors are recorded under token."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    used = _map_graph(out.graph, token)
    for function in out.functions:
        if _map_nodes(function.node, token):
            _add_opset(function.opset_import)
            used = True
    if used:
        _add_opset(out.opset_import)
    return out


def _load(model) -> onnx.ModelProto:
    from .rewriter.model_io import load_model

    return load_model(model)


def _has_onnx_conv(graph) -> bool:
    for node in graph.node:
        if (node.op_type == "Conv" and node.domain in ("", "ai.onnx")) or \
                (node.op_type == "FusedConv" and node.domain == "com.microsoft"):
            return True
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            if any(_has_onnx_conv(g) for g in subs):
                return True
    return False


# With every Conv on com.im2win::Conv, ORT's NCHWc transformer only wraps pools (and Adds, ...) in
# reorders to and from its blocked layout (measured, 1 thread: VGG-16 -3%, ResNet-50 -3% without it).
NCHWC_FREE = ["NchwcTransformer"]


def _rewritten_if_needed(model: ModelLike) -> tuple[ModelLike, bool]:
    """The model rewritten to com.im2win::Conv when it has ONNX Conv nodes, else as given; and
    whether every Conv is then ours (none left to ORT)."""
    from .rewriter import rewrite

    proto = _load(model)
    if not _has_onnx_conv(proto.graph):
        return model, True
    rewritten = rewrite(proto)
    return rewritten, not _has_onnx_conv(rewritten.graph)


def _add_opset(opset_import) -> None:
    if not any(o.domain == PYTHON_OP_DOMAIN for o in opset_import):
        opset_import.append(helper.make_opsetid(PYTHON_OP_DOMAIN, 1))


def _pools_through_onnx(graph) -> None:
    """com.im2win's channels-last MaxPool / AveragePool as ONNX's pool between two Transposes: the
    same answer, with no compiled code."""
    nodes = []
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type not in ("MaxPool", "AveragePool"):
            nodes.append(node)
            continue
        rank = len(next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])) + 2
        to_nchw, to_nhwc = [0, rank - 1, *range(1, rank - 1)], [0, *range(2, rank), 1]
        x_nchw, y_nchw = f"{node.output[0]}__pool_x_nchw", f"{node.output[0]}__pool_y_nchw"
        attrs = [a for a in node.attribute if a.name != "layout"]
        pool = helper.make_node(node.op_type, [node.input[0]], [y_nchw], name=node.name)
        pool.input[0] = x_nchw
        pool.attribute.extend(attrs)
        nodes += [helper.make_node("Transpose", [node.input[0]], [x_nchw], perm=to_nchw), pool,
                  helper.make_node("Transpose", [y_nchw], [node.output[0]], perm=to_nhwc)]
    del graph.node[:]
    graph.node.extend(nodes)


def _map_graph(graph, token: str) -> bool:
    """Maps the com.im2win::Conv nodes of graph and of its subgraphs; True when there were any."""
    _pools_through_onnx(graph)
    used = _map_nodes(graph.node, token)
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used = _map_graph(sub, token) or used
    return used


def _map_nodes(nodes, token: str) -> bool:
    used = False
    for node in nodes:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        where = f"{DOMAIN}::{OP_TYPE} node {node.name!r}"
        if not 2 <= len(node.input) <= 4 or len(node.output) != 1:
            raise ValueError(f"{where}: takes inputs X, W, [B], [Z] and one output Y, got "
                             f"{len(node.input)} inputs and {len(node.output)} outputs")
        has_b = len(node.input) > 2 and node.input[2] != ""
        has_z = len(node.input) > 3 and node.input[3] != ""
        strings = {name: "" for name in _ATTRIBUTE_TYPES}
        values = {}
        for attr in node.attribute:
            if attr.name not in _ATTRIBUTE_TYPES:
                raise ValueError(f"{where}: unknown attribute {attr.name!r}")
            if attr.type != _ATTRIBUTE_TYPES[attr.name]:
                raise ValueError(f"{where}: attribute {attr.name!r} must be of type "
                                 f"{_type_name(_ATTRIBUTE_TYPES[attr.name])}, got {_type_name(attr.type)}")
            value = helper.get_attribute_value(attr)
            value = values[attr.name] = value.decode() if isinstance(value, bytes) else value
            strings[attr.name] = ",".join(map(repr, value)) if isinstance(value, list) else str(value)
        try:
            reference.check_attributes(**values)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        inputs = list(node.input[:2]) + ([node.input[2]] if has_b else []) + ([node.input[3]] if has_z else [])
        del node.input[:]
        node.input.extend(inputs)
        del node.attribute[:]
        node.attribute.extend(helper.make_attribute(k, v) for k, v in strings.items())
        node.attribute.append(helper.make_attribute(_NODE_NAME, node.name))
        node.attribute.append(helper.make_attribute(_SESSION, token))
        node.domain, node.op_type = PYTHON_OP_DOMAIN, PYTHON_OP_TYPES[has_b, has_z]
        used = True
    return used


def _type_name(t: int) -> str:
    return AttributeProto.AttributeType.Name(t)


def _decode(attrs: dict) -> tuple[str, dict]:
    """The node name and reference.conv's keyword arguments from the string attributes."""
    kwargs = {
        "auto_pad": attrs["auto_pad"] or "NOTSET",
        "group": int(attrs["group"] or 1),
        "activation": attrs["activation"],
        "activation_params": [float(v) for v in attrs["activation_params"].split(",") if v],
        "weight_layout": attrs["weight_layout"] or "OIHW",
        "layout": attrs["layout"] or "NCHW",
        "input_layout": attrs["input_layout"],
        "algorithm": attrs["algorithm"] or "auto",
    }
    for name in ("dilations", "kernel_shape", "pads", "strides"):
        kwargs[name] = [int(v) for v in attrs[name].split(",")] if attrs[name] else None
    return attrs[_NODE_NAME], kwargs


_registered = False
_lock = threading.Lock()


def _register_python_ops():
    """Registers the four Python op types with onnxruntime-extensions (once per process)."""
    global _registered
    try:
        import onnxruntime_extensions as ext
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    with _lock:
        if not _registered:
            for (has_b, has_z), op_type in PYTHON_OP_TYPES.items():
                _define_op(ext, op_type, has_b, has_z)
            _registered = True
    return ext


def _define_op(ext, op_type: str, has_b: bool, has_z: bool) -> None:
    n_inputs = 2 + has_b + has_z
    attrs = {name: ext.PyCustomOpDef.dt_string for name in list(_ATTRIBUTE_TYPES) + [_NODE_NAME, _SESSION]}

    @ext.onnx_op(op_type=op_type, inputs=[ext.PyCustomOpDef.dt_float] * n_inputs,
                 outputs=[ext.PyCustomOpDef.dt_float], attrs=attrs)
    def compute(x, w, *optional, **attributes):
        token = attributes.pop(_SESSION)
        try:
            node, kwargs = _decode(attributes)
            b = optional[0] if has_b else None
            z = optional[-1] if has_z else None
            return reference.conv(x, w, b, z, **kwargs)
        except Exception as e:  # noqa: BLE001 -- raising here would terminate the process
            kind = ValueError if isinstance(e, ValueError) else RuntimeError
            _record(token, kind(f"{DOMAIN}::{OP_TYPE} node {attributes.get(_NODE_NAME)!r}: {e}"))
            return np.zeros((0,), np.float32)
