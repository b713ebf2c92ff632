"""The graph rewriter: each fold and fusion in isolation (and where it must not happen), constant
folding, what is left to ORT and why, preservation of the rest of the model, idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from im2win_ort import rewrite_with_report
from im2win_ort._ir_version import make_model
from im2win_ort.rewriter.validate import compare, random_inputs

RNG = np.random.default_rng(7)


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def weights(m=8, c=4, k=3):
    return [init("W", RNG.standard_normal((m, c, k, k)) * 0.3), init("B", RNG.standard_normal(m) * 0.1)]


def model(nodes, inits, x_shape=("N", 4, 9, 9), outputs=(("y", ("N", 8, 9, 9)),), opset=17, extra_inputs=()):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in extra_inputs]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs]
    graph = helper.make_graph(nodes, "g", inputs, outs, initializer=inits)
    m = make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def conv(inputs=("x", "W", "B"), out="c", name="conv", **attrs):
    attrs.setdefault("pads", [1, 1, 1, 1])
    return helper.make_node("Conv", list(inputs), [out], name=name, **attrs)


def rewritten_and_checked(m, tolerance=1e-4, **options):
    """Rewrites m, checks the result with onnx's checker and against ORT on m; returns (model, report)."""
    out, report = rewrite_with_report(m, **options)
    onnx.checker.check_model(out)
    for d in compare(m, out, random_inputs(m, symbolic_dim=2)):
        assert d.ok(tolerance), f"{d.name}: relative error {d.max_rel:.3g}"
    return out, report


def ops(m):
    return [(n.domain, n.op_type) for n in m.graph.node]


def im2win_nodes(m):
    return [n for n in m.graph.node if n.domain == "com.im2win"]


def attribute(node, name):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


# --- conversion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [1, 6, 11, 17, onnx.defs.onnx_opset_version()])
def test_conv_of_every_opset_is_replaced(opset):
    m = model([conv(out="y", strides=[1, 1], dilations=[1, 1])], weights(), opset=opset)
    if opset > 17:  # onnx's newest opset may be newer than the installed onnxruntime
        try:
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as e:
            pytest.skip(f"onnxruntime {ort.__version__} does not run opset {opset} ({str(e)[-120:]})")
    out, report = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv")] and report.replaced == ["conv"]
    assert any(o.domain == "com.im2win" and o.version == 1 for o in out.opset_import)


def test_fused_conv_from_ort_optimized_models_is_replaced():
    node = helper.make_node("FusedConv", ["x", "W", "B"], ["y"], name="fc", domain="com.microsoft",
                            pads=[1, 1, 1, 1], activation="LeakyRelu", activation_params=[0.2])
    m = make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, ["N", 4, 9, 9])],
                                     [helper.make_tensor_value_info("y", 1, ["N", 8, 9, 9])], weights()),
                   opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    out, report = rewritten_and_checked(m)
    (n,) = im2win_nodes(out)
    assert attribute(n, "activation") == b"LeakyRelu" and attribute(n, "activation_params") == pytest.approx([0.2])


def test_conv_without_bias_and_1d():
    m = model([conv(("x", "W"), out="y", pads=[2, 1], strides=[2])],
              [init("W", RNG.standard_normal((8, 4, 5)))], x_shape=("N", 4, 20), outputs=(("y", ("N", 8, 10)),))
    out, _ = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv")]


def test_left_to_ort_with_reasons():
    double_w = numpy_helper.from_array(RNG.standard_normal((8, 4, 3, 3)), "Wd")
    w3d = init("W3", RNG.standard_normal((8, 4, 3, 3, 3)))
    nodes = [helper.make_node("Conv", ["xd", "Wd"], ["yd"], name="double_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x3", "W3"], ["y3"], name="conv3d", pads=[1] * 6)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xd", TensorProto.DOUBLE, [1, 4, 5, 5]),
                                           helper.make_tensor_value_info("x3", 1, [1, 4, 5, 5, 5])],
                              [helper.make_tensor_value_info("yd", TensorProto.DOUBLE, [1, 8, 5, 5]),
                               helper.make_tensor_value_info("y3", 1, [1, 8, 5, 5, 5])], [double_w, w3d])
    m = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, report = rewrite_with_report(m)
    assert ops(out) == ops(m) and not report.replaced
    reasons = dict(report.left)
    assert "DOUBLE" in reasons["double_conv"] and "float32 only" in reasons["double_conv"]
    assert "spatial rank 3" in reasons["conv3d"]


def test_policy_keeps_pointwise_and_depthwise_on_ort():
    nodes = [conv(("x", "Wp"), out="p", name="pointwise", pads=[0, 0, 0, 0]),
             conv(("p", "Wd"), out="y", name="depthwise", group=8)]
    inits = [init("Wp", RNG.standard_normal((8, 4, 1, 1))), init("Wd", RNG.standard_normal((8, 1, 3, 3)))]
    m = model(nodes, inits)
    _, report = rewritten_and_checked(m, skip_pointwise=True, skip_depthwise=True)
    assert not report.replaced
    assert "pointwise" in dict(report.left)["pointwise"] and "depthwise" in dict(report.left)["depthwise"]
    _, report = rewritten_and_checked(m)
    assert report.replaced == ["pointwise", "depthwise"]


# --- folds and fusions ----------------------------------------------------------------------------

def bn_inits():
    return [init("s", RNG.random(8) + 0.5), init("t", RNG.standard_normal(8)), init("mu", RNG.standard_normal(8)),
            init("var", RNG.random(8) + 0.5)]


def test_batch_norm_folds_into_weights():
    m = model([conv(), helper.make_node("BatchNormalization", ["c", "s", "t", "mu", "var"], ["y"], name="bn",
                                        epsilon=1e-3)], weights() + bn_inits())
    out, report = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv")] and report.fused == ["BatchNormalization 'bn' into 'conv'"]
    assert {"W", "B", "s", "t", "mu", "var"}.isdisjoint({t.name for t in out.graph.initializer})


@pytest.mark.parametrize("op,const", [("Mul", (8, 1, 1)), ("Mul", ()), ("Div", (1, 8, 1, 1)), ("Add", (8, 1, 1)),
                                      ("Sub", (1,)), ("Add", ())])
def test_constant_scale_and_shift_fold(op, const):
    value = RNG.random(const) + 0.5 if const else np.float32(1.5)
    m = model([conv(), helper.make_node(op, ["c", "k"], ["y"], name="op")], weights() + [init("k", value)])
    out, report = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv")] and len(report.fused) == 1


def test_scale_that_is_not_per_channel_is_not_folded():
    m = model([conv(), helper.make_node("Mul", ["c", "k"], ["y"], name="mul")],
              weights() + [init("k", RNG.random((1, 1, 9, 9)))])
    out, report = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv"), ("", "Mul")] and not report.fused


@pytest.mark.parametrize("act,attrs,params", [("Relu", {}, None), ("Sigmoid", {}, None), ("Tanh", {}, None),
                                              ("HardSwish", {}, None), ("LeakyRelu", {"alpha": 0.3}, [0.3]),
                                              ("LeakyRelu", {}, [0.01]),
                                              ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, [0.3, 0.4])])
def test_activation_fuses(act, attrs, params):
    m = model([conv(), helper.make_node(act, ["c"], ["y"], name="act", **attrs)], weights())
    out, report = rewritten_and_checked(m)
    (n,) = im2win_nodes(out)
    assert ops(out) == [("com.im2win", "Conv")] and attribute(n, "activation") == act.encode()
    if params:
        assert attribute(n, "activation_params") == pytest.approx(params)


def test_clip_with_constant_bounds_fuses_and_old_clip_attributes_too():
    m = model([conv(), helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="relu6")],
              weights() + [init("lo", 0.0), init("hi", 6.0)])
    out, _ = rewritten_and_checked(m)
    assert attribute(im2win_nodes(out)[0], "activation_params") == pytest.approx([0.0, 6.0])
    m6 = model([conv(), helper.make_node("Clip", ["c"], ["y"], name="clip", min=-1.0, max=2.0)], weights(), opset=6)
    out, _ = rewritten_and_checked(m6)
    assert attribute(im2win_nodes(out)[0], "activation_params") == pytest.approx([-1.0, 2.0])
    m_max = model([conv(), helper.make_node("Clip", ["c", "", "hi"], ["y"], name="clip")], weights() + [init("hi", 1.0)])
    out, _ = rewritten_and_checked(m_max)
    assert ops(out) == [("com.im2win", "Conv")]


def test_clip_with_run_time_bounds_stays():
    m = model([conv(), helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip")], weights(),
              extra_inputs=(("lo", ()), ("hi", ())))
    out, _ = rewrite_with_report(m)
    assert ops(out) == [("com.im2win", "Conv"), ("", "Clip")]


def test_residual_add_becomes_z_then_activation():
    nodes = [conv(), helper.make_node("Add", ["x2", "c"], ["s"], name="res"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    m = model(nodes, weights(), extra_inputs=(("x2", ("N", 8, 9, 9)),))
    out, report = rewritten_and_checked(m)
    (n,) = im2win_nodes(out)
    assert n.input[0] == "x" and n.input[3] == "x2" and attribute(n, "activation") == b"Relu"
    assert report.fused == ["Add 'res' into 'conv'", "Relu 'relu' into 'conv'"]


def test_residual_produced_later_is_sorted_before_use():
    nodes = [conv(), helper.make_node("Neg", ["x"], ["nx"], name="neg"),
             conv(("nx", "W", "B"), out="d", name="other"), helper.make_node("Add", ["c", "d"], ["y"], name="res")]
    out, _ = rewritten_and_checked(model(nodes, weights()))
    assert [n.name for n in out.graph.node][-1] == "conv"  # the fused node now reads "d"


def test_broadcast_add_is_not_a_residual():
    m = model([conv(), helper.make_node("Add", ["c", "r"], ["y"], name="add")], weights(),
              extra_inputs=(("r", (1, 8, 1, 9)),))
    out, _ = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv"), ("", "Add")]


def test_no_fusion_through_a_shared_value_or_a_graph_output():
    shared = model([conv(), helper.make_node("Relu", ["c"], ["y"], name="relu"),
                    helper.make_node("Neg", ["c"], ["y2"], name="neg")], weights(),
                   outputs=(("y", ("N", 8, 9, 9)), ("y2", ("N", 8, 9, 9))))
    out, report = rewritten_and_checked(shared)
    assert not report.fused and len(out.graph.node) == 3
    exposed = model([conv(), helper.make_node("Relu", ["c"], ["y"], name="relu")], weights(),
                    outputs=(("y", ("N", 8, 9, 9)), ("c", ("N", 8, 9, 9))))
    out, report = rewritten_and_checked(exposed)
    assert not report.fused and [o.name for o in out.graph.output] == ["y", "c"]


def test_nothing_folds_after_the_activation_and_bn_in_training_mode_stays():
    m = model([conv(), helper.make_node("Relu", ["c"], ["r"], name="relu"),
               helper.make_node("Mul", ["r", "k"], ["y"], name="mul")], weights() + [init("k", 2.0)])
    out, _ = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv"), ("", "Mul")]
    trained = model([conv(), helper.make_node("BatchNormalization", ["c", "s", "t", "mu", "var"], ["y"], name="bn",
                                              training_mode=1)], weights() + bn_inits())
    out, _ = rewrite_with_report(trained)
    assert ("", "BatchNormalization") in ops(out)


def test_shared_weights_are_not_changed_for_the_other_user():
    nodes = [conv(out="c1", name="a"), helper.make_node("Mul", ["c1", "k"], ["y"], name="mul"),
             conv(out="y2", name="b")]
    m = model(nodes, weights() + [init("k", 3.0)], outputs=(("y", ("N", 8, 9, 9)), ("y2", ("N", 8, 9, 9))))
    out, _ = rewritten_and_checked(m, prepack=False)
    b = next(n for n in out.graph.node if n.name == "b")
    assert list(b.input[1:]) == ["W", "B"]


# --- constant folding of weights ----------------------------------------------------------------

def test_weights_from_constant_subgraphs_are_folded():
    w = RNG.standard_normal((8, 4, 3, 3))
    q = np.clip(np.round(w / 0.02), -127, 127).astype(np.int8)
    nodes = [helper.make_node("Constant", [], ["wq"], value=numpy_helper.from_array(q)),
             helper.make_node("DequantizeLinear", ["wq", "scale"], ["W"], name="dq"),
             helper.make_node("Constant", [], ["b16"], value=numpy_helper.from_array(RNG.standard_normal(8).astype(np.float16))),
             helper.make_node("Cast", ["b16"], ["B"], to=TensorProto.FLOAT, name="cast"),
             conv(out="y")]
    m = model(nodes, [init("scale", 0.02)])
    out, report = rewritten_and_checked(m)
    assert ops(out) == [("com.im2win", "Conv")] and set(report.folded) == {"W", "B"}


# --- the rest of the model is kept ----------------------------------------------------------------

def test_everything_else_is_preserved():
    nodes = [helper.make_node("Neg", ["x"], ["n"], name="neg", doc_string="kept"), conv(("n", "W", "B"), out="y")]
    m = model(nodes, weights())
    m.doc_string = "model doc"
    m.producer_name = "tests"
    helper.set_model_props(m, {"author": "im2win", "purpose": "test"})
    m.graph.value_info.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, ["N", 4, 9, 9]))
    m.functions.append(helper.make_function("local", "Twice", ["a"], ["b"],
                                            [helper.make_node("Add", ["a", "a"], ["b"])],
                                            [helper.make_opsetid("", 17)]))
    out, _ = rewritten_and_checked(m)
    assert [(i.name, i.type) for i in out.graph.input] == [(i.name, i.type) for i in m.graph.input]
    assert [(o.name, o.type) for o in out.graph.output] == [(o.name, o.type) for o in m.graph.output]
    assert out.doc_string == "model doc" and out.producer_name == "tests"
    assert {p.key: p.value for p in out.metadata_props} == {"author": "im2win", "purpose": "test"}
    assert out.functions == m.functions and out.graph.value_info == m.graph.value_info
    assert out.graph.node[0] == m.graph.node[0]
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("com.im2win", 1)}


def test_subgraphs_of_if_are_rewritten():
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Conv", ["x", "W"], [f"{name}_c"], name=f"{name}_conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", [f"{name}_c"], [f"{name}_y"], name=f"{name}_relu")],
        name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["N", 8, 9, 9])])
    nodes = [helper.make_node("If", ["flag"], ["y"], name="if", then_branch=branch("then"),
                              else_branch=branch("else"))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 4, 9, 9]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", 1, ["N", 8, 9, 9])], weights()[:1])
    m = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, report = rewrite_with_report(m)
    onnx.checker.check_model(out)
    assert sorted(report.replaced) == ["else_conv", "then_conv"] and len(report.fused) == 2
    x = RNG.standard_normal((1, 4, 9, 9)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        want = ort.InferenceSession(m.SerializeToString()).run(None, feeds)[0]
        got = im2win_ort.InferenceSession(out, rewrite=False).run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_rewrite_is_idempotent_and_leaves_its_argument_alone():
    m = model([conv(), helper.make_node("BatchNormalization", ["c", "s", "t", "mu", "var"], ["r"], name="bn"),
               helper.make_node("Relu", ["r"], ["y"], name="relu")], weights() + bn_inits())
    before = m.SerializeToString()
    once, _ = rewrite_with_report(m)
    twice, report = rewrite_with_report(once)
    assert m.SerializeToString() == before
    assert twice.SerializeToString() == once.SerializeToString()
    assert not report.replaced and not report.fused


def test_inference_session_rewrites_when_needed():
    m = model([conv(), helper.make_node("Relu", ["c"], ["y"], name="relu")], weights())
    sess = im2win_ort.InferenceSession(m)
    x = RNG.standard_normal((2, 4, 9, 9)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-4)


# --- pre-packed weights ---------------------------------------------------------------------------

@pytest.mark.parametrize("m_out,size", [(8, 9), (32, 5), (32, 30)])  # positions; channels (short rows); either
def test_weights_are_stored_packed_and_run_in_place(m_out, size):
    from im2win_ort import _kernels
    from im2win_ort.rewriter.weight_layout import unpack

    w = RNG.standard_normal((m_out, 4, 3, 3)).astype(np.float32) * 0.3
    m = model([conv(("x", "W"), out="y")], [init("W", w)], x_shape=("N", 4, size, size),
              outputs=(("y", ("N", m_out, size, size)),))
    out, _ = rewritten_and_checked(m, plan="heuristic")
    (n,) = im2win_nodes(out)
    layout = attribute(n, "weight_layout").decode()
    family = _kernels.workspace_bytes([1, 4, size, size], [m_out, 4, 3, 3], pads=[1, 1, 1, 1])["tile_family"]
    assert layout == {"positions": "im2win.positions6", "channels": "im2win.channels16"}[family]
    stored = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == n.input[1]))
    np.testing.assert_array_equal(unpack(stored, layout), w)
    assert [t.name for t in out.graph.initializer] == [n.input[1]]  # one copy: the OIHW one is gone


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_packed_weights_for_another_tile_family_still_run(isa, monkeypatch):
    """A model packed for one CPU's choice runs right where the op chooses otherwise (repacked per run)."""
    if isa not in __import__("im2win_ort")._kernels.available_isas():
        pytest.skip(f"{isa} not available")
    m = model([conv(("x", "W"), out="y")], [init("W", RNG.standard_normal((32, 4, 3, 3)))], x_shape=("N", 4, 5, 5),
              outputs=(("y", ("N", 32, 5, 5)),))
    out, _ = rewrite_with_report(m)
    monkeypatch.setenv("IM2WIN_ISA", isa)
    monkeypatch.setenv("IM2WIN_TILES", "positions")
    for d in compare(m, out, random_inputs(m, symbolic_dim=2)):
        assert d.ok(1e-4)


def test_python_backend_reads_packed_weights():
    pytest.importorskip("onnxruntime_extensions")
    m = model([conv(), helper.make_node("Relu", ["c"], ["y"], name="relu")], weights())
    out, _ = rewrite_with_report(m)
    assert attribute(im2win_nodes(out)[0], "weight_layout") is not None
    x = RNG.standard_normal((2, 4, 9, 9)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    got = im2win_ort.InferenceSession(out, backend="python", rewrite=False).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
