"""im2win_ort.InferenceSession: backend="python" (im2win_ort.reference as an onnxruntime-extensions
Python op) against backend="native" and against the same network on ORT's own Conv."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from helpers import ONNX_OPSET, assert_close, conv_model, run_model
from im2win_ort import DOMAIN, session
from im2win_ort._ir_version import make_model

# name, input, M, kernel, ONNX Conv attributes, bias, residual input, activation, activation_params
LAYERS = [
    ("c1", "x", 8, [3, 3], {"pads": [1, 1, 1, 1]}, True, None, "Relu", []),
    ("c2", "c1", 8, [3, 3], {"group": 8, "strides": [2, 2], "pads": [1, 0, 1, 2]}, True, None, "Clip", [0.0, 0.6]),
    ("c3", "c2", 8, [1, 1], {}, False, "c2", "HardSwish", []),
    ("c4", "c3", 8, [3, 3], {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, True, "c3", "LeakyRelu", [0.2]),
    ("c5", "c4", 5, [2, 3], {"strides": [1, 2], "auto_pad": "SAME_LOWER"}, True, None, "HardSigmoid", [0.3, 0.4]),
    ("d1", "x1d", 4, [5], {"strides": [2], "pads": [2, 1]}, True, None, "Tanh", []),
    ("d2", "d1", 4, [3], {"auto_pad": "SAME_UPPER"}, False, "d1", "Sigmoid", []),
    ("d3", "d2", 6, [1], {}, False, None, "", []),
]
CHANNELS = {"x": 4, "x1d": 3}
OUTPUTS = ["c3", "c5", "d3"]


def onnx_activation(act: str, params: list, src: str, dst: str):
    """The activation as standard ONNX nodes (and the initializers Clip needs)."""
    if act == "Clip":
        bounds = [numpy_helper.from_array(np.float32(p), f"{dst}.{n}") for p, n in zip(params, ("lo", "hi"))]
        return [helper.make_node("Clip", [src, bounds[0].name, bounds[1].name], [dst])], bounds
    names = {"LeakyRelu": ["alpha"], "HardSigmoid": ["alpha", "beta"]}.get(act, [])
    return [helper.make_node(act or "Identity", [src], [dst], **dict(zip(names, params)))], []


def network(seed: int = 0):
    """LAYERS as an ORT model (Conv, Add, activation nodes) and as a com.im2win model."""
    rng = np.random.default_rng(seed)
    channels, inits, ort_inits, ort_nodes, im2win_nodes = dict(CHANNELS), [], [], [], []
    for name, src, m, kernel, attrs, bias, residual, act, params in LAYERS:
        cg = channels[src] // attrs.get("group", 1)
        w = (rng.standard_normal((m, cg, *kernel)) / np.sqrt(cg * np.prod(kernel))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.w"))
        inputs = [src, f"{name}.w"]
        if bias:
            inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(m)).astype(np.float32), f"{name}.b"))
            inputs.append(f"{name}.b")
        channels[name] = m
        out = f"{name}.conv"
        ort_nodes.append(helper.make_node("Conv", inputs, [out], name=f"{name}.conv", **attrs))
        if residual:
            ort_nodes.append(helper.make_node("Add", [out, residual], [f"{name}.sum"]))
            out = f"{name}.sum"
        nodes, act_inits = onnx_activation(act, params, out, name)
        ort_nodes += nodes
        ort_inits += act_inits
        optional = ([""] if residual and not bias else []) + ([residual] if residual else [])
        node = helper.make_node("Conv", inputs + optional, [name], name=name, domain=DOMAIN, activation=act, **attrs)
        if params:
            node.attribute.append(helper.make_attribute("activation_params", params))
        im2win_nodes.append(node)
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 13, 11]),
                    helper.make_tensor_value_info("x1d", TensorProto.FLOAT, ["N", 3, 21])]
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in OUTPUTS]

    def model(nodes, domains, extra_inits=()):
        graph = helper.make_graph(nodes, "net", graph_inputs, graph_outputs, initializer=inits + list(extra_inits))
        return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)] +
                          [helper.make_opsetid(d, 1) for d in domains])

    return model(ort_nodes, [], ort_inits), model(im2win_nodes, [DOMAIN])


def feeds(batch: int = 2, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": 2 * rng.standard_normal((batch, 4, 13, 11)).astype(np.float32),
            "x1d": 2 * rng.standard_normal((batch, 3, 21)).astype(np.float32)}


def test_python_backend_equals_native_and_ort():
    ort_model, im2win_model = network()
    f = feeds()
    want = run_model(ort_model, f, im2win=False)
    python = im2win_ort.InferenceSession(im2win_model, backend="python").run(None, f)
    native = im2win_ort.InferenceSession(im2win_model, backend="native").run(None, f)
    for name, p, n, w in zip(OUTPUTS, python, native, want):
        assert p.dtype == np.float32, name
        assert_close(p, w)
        assert_close(n, w)
        assert_close(p, n)


def test_model_given_as_proto_bytes_or_path_is_left_unchanged(tmp_path):
    _, model = network()
    before = model.SerializeToString()
    path = tmp_path / "net.onnx"
    onnx.save(model, path)
    f = feeds(batch=1)
    results = [im2win_ort.InferenceSession(m, backend="python").run(None, f)
               for m in (model, before, path, str(path))]
    assert model.SerializeToString() == before
    assert onnx.load(path).SerializeToString() == before
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            np.testing.assert_array_equal(a, b)


def test_mapped_copy():
    """Every com.im2win::Conv node becomes the Python op for its optional inputs."""
    _, model = network()
    mapped = session._to_python_backend(model, token="t")
    assert not [n for n in mapped.graph.node if n.domain == DOMAIN]
    op_types = {n.name: n.op_type for n in mapped.graph.node}
    assert op_types["c1"] == "Im2winConvB" and op_types["c3"] == "Im2winConvZ"
    assert op_types["c4"] == "Im2winConvBZ" and op_types["d3"] == "Im2winConv"
    assert list(next(n for n in mapped.graph.node if n.name == "c3").input) == ["c2", "c3.w", "c2"]
    assert any(o.domain == session.PYTHON_OP_DOMAIN for o in mapped.opset_import)


def test_threads_and_session_options():
    _, model = network()
    sess = im2win_ort.InferenceSession(model, backend="python", threads=2)
    assert sess.get_session_options().intra_op_num_threads == 2
    assert isinstance(sess, ort.InferenceSession)


def test_com_im2win_conv_inside_a_subgraph():
    w = np.random.default_rng(2).standard_normal((3, 2, 3, 3)).astype(np.float32)
    inner = conv_model(["N", 2, 6, 6], w, domain=DOMAIN, pads=[1, 1, 1, 1], activation="Relu").graph
    then_branch = helper.make_graph(list(inner.node), "then", [], list(inner.output),
                                    initializer=list(inner.initializer))
    else_branch = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "else", [],
                                    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph([node], "if", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                             helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                             helper.make_opsetid(DOMAIN, 1)])
    x = np.random.default_rng(3).standard_normal((1, 2, 6, 6)).astype(np.float32)
    (y,) = im2win_ort.InferenceSession(model, backend="python").run(None, {"cond": np.array(True), "X": x})
    assert_close(y, im2win_ort.reference.conv(x, w, pads=[1, 1, 1, 1], activation="Relu"))


# --- errors --------------------------------------------------------------------------------

def test_unknown_backend():
    _, model = network()
    with pytest.raises(ValueError, match="backend must be one of 'native', 'python', got 'cuda'"):
        im2win_ort.InferenceSession(model, backend="cuda")


def test_missing_onnxruntime_extensions(monkeypatch):
    _, model = network()
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # import fails
    with pytest.raises(ImportError, match="pip install onnxruntime-extensions"):
        im2win_ort.InferenceSession(model, backend="python")


def test_bad_attribute_fails_at_session_creation():
    model = conv_model(["N", 3, 8, 8], np.ones((4, 3, 3, 3), np.float32), domain=DOMAIN, node_name="bad",
                       activation="Clip", activation_params=[0.0])
    with pytest.raises(ValueError, match="node 'bad': activation Clip takes 2 activation_params, got 1"):
        im2win_ort.InferenceSession(model, backend="python")
    model.graph.node[0].attribute.append(helper.make_attribute("strides", 2))
    with pytest.raises(ValueError, match="node 'bad': attribute 'strides' must be of type INTS, got INT"):
        im2win_ort.InferenceSession(model, backend="python")


def test_run_time_error_names_the_node_and_the_session_survives():
    """A Python op must not raise (onnxruntime-extensions would abort the process): the session's
    run raises the error instead, even when later nodes accepted the failed op's placeholder."""
    w = np.ones((4, 3, 3, 3), np.float32)
    model = conv_model(["N", 3, 8, 8], w, domain=DOMAIN, with_z=True, node_name="res", pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["Y"], ["R"])
    model.graph.node.append(relu)
    model.graph.output[0].name = "R"
    sess = im2win_ort.InferenceSession(model, backend="python")
    x = np.ones((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"node 'res': Z must have Y's shape \(1, 4, 8, 8\), got \(1, 4, 7, 8\)"):
        sess.run(None, {"X": x, "Z": np.zeros((1, 4, 7, 8), np.float32)})
    (y,) = sess.run(None, {"X": x, "Z": np.zeros((1, 4, 8, 8), np.float32)})
    assert_close(y, im2win_ort.reference.conv(x, w, pads=[1, 1, 1, 1]))


def test_3d_refused():
    model = conv_model(["N", 2, 4, 4, 4], np.ones((3, 2, 2, 2, 2), np.float32), domain=DOMAIN, node_name="c3d")
    sess = im2win_ort.InferenceSession(model, backend="python")
    with pytest.raises(ValueError, match="node 'c3d': .*3-D convolution is not supported"):
        sess.run(None, {"X": np.ones((1, 2, 4, 4, 4), np.float32)})


def test_runs_without_compiled_code(tmp_path):
    """backend="python" needs none of the package's compiled files: a copy of its Python files runs."""
    package = pathlib.Path(im2win_ort.__file__).parent
    for source in package.rglob("*.py"):
        target = tmp_path / "im2win_ort" / source.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    script = (
        "import numpy as np, im2win_ort\n"
        "from im2win_ort.demo import build_models\n"
        "try:\n"
        "    im2win_ort.get_library_path()\n"
        "    raise SystemExit('the compiled library is present')\n"
        "except FileNotFoundError:\n"
        "    pass\n"
        "sess = im2win_ort.InferenceSession(build_models()[1], backend='python')\n"
        "print(sess.run(None, {'x': np.ones((1, 3, 56, 56), np.float32)})[0].shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(1, 64, 1, 1)" in done.stdout
