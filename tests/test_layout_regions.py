"""Channels-last regions of a rewritten model (rewriter/layout_regions.py): connected convs switched to
NHWC, Transposes only at the regions' borders, every graph output and outside reader unchanged, and
the model answering as ORT answers the original."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from helpers import ONNX_OPSET, make_session
from im2win_ort._ir_version import make_model
from im2win_ort.rewriter.layout_regions import to_channels_last
from im2win_ort.rewriter.weight_layout import NHWC_LAYOUT, WINOGRAD_LAYOUTS, nhwc_packable


def _graph_model(nodes, inits, outputs, x_shape=(1, 8, 10, 10)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(o, TensorProto.INT64 if o == "idx" else TensorProto.FLOAT,
                                                             None) for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def _w(rng, m, c, k):
    return (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)


def _check_nhwc_weights(model, rewritten):
    """NHWC convs whose W the channels-last order permutes carry it packed (im2win.nhwc16) or as
    Winograd's U, the others OIHW; the model holds no more weights than the original (one copy
    each; a U counted as the W it is made from)."""
    inits = {t.name: t for t in rewritten.graph.initializer}
    after = 0
    for node in rewritten.graph.node:
        if node.op_type == "Conv" and any(a.name == "layout" for a in node.attribute):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            w = inits.get(node.input[1])
            layout = attrs.get("weight_layout", b"OIHW").decode()
            if layout in WINOGRAD_LAYOUTS:
                assert list(w.dims[2:]) == [WINOGRAD_LAYOUTS[layout] + 2] * 2, node
                after += w.dims[0] * w.dims[1] * 9
                continue
            packable = w is not None and nhwc_packable(list(w.dims), attrs.get("group", 1))
            assert layout == (NHWC_LAYOUT if packable else "OIHW"), node
        if node.op_type == "Conv" and node.input[1] in inits and not node.input[1].endswith("_dw_W"):
            after += np.prod(inits[node.input[1]].dims)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    before = sum(np.prod(t.dims) for t in model.graph.initializer if t.name in conv_weights)
    assert after <= before


def _check(model, transposes, regions, min_convs=2):
    x = np.random.default_rng(9).standard_normal([d.dim_value for d in
                                                  model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    rewritten = im2win_ort.rewrite(model)
    report = to_channels_last(rewritten, min_convs=min_convs)
    assert report.transposes == transposes and len(report.regions) == regions, report
    kinds = [n.op_type for n in rewritten.graph.node]
    assert kinds.count("Transpose") == transposes, kinds
    _check_nhwc_weights(model, rewritten)
    assert [o.name for o in rewritten.graph.output] == [o.name for o in model.graph.output]
    for threads in (1, 3):
        got = make_session(rewritten, threads=threads).run(None, {"x": x})
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))
    return rewritten, report


def test_a_residual_block_is_one_region_with_two_transposes():
    rng = np.random.default_rng(0)
    inits = {"w1": _w(rng, 4, 8, 1), "w2": _w(rng, 4, 4, 3), "w3": _w(rng, 8, 4, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2"], ["b"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Conv", ["br", "w3"], ["c"]), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    _check(_graph_model(nodes, inits, ["y"]), transposes=2, regions=1)


def test_an_image_reaches_the_convs_that_alone_read_it_channels_first():
    """A value of at most 4 channels (an image) that only convs read as X enters the region with
    no Transpose: they take it channels-first (input_layout NCHW); read by anything else, or with
    more channels, it is transposed as before."""
    rng = np.random.default_rng(3)
    inits = {"w1": _w(rng, 16, 3, 3), "w2": _w(rng, 16, 16, 3), "w0": _w(rng, 16, 3, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["a"], ["ar"]), helper.make_node("Conv", ["ar", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w0"], ["c"], strides=[2, 2]), helper.make_node("Add", ["b", "c"], ["y"])]
    rewritten, _ = _check(_graph_model(nodes, inits, ["y"], x_shape=(2, 3, 11, 11)), transposes=1, regions=1)
    readers = [n for n in rewritten.graph.node if "x" in n.input]
    assert len(readers) == 2 and all(n.op_type == "Conv" for n in readers)
    for n in readers:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["layout"] == b"NHWC" and attrs["input_layout"] == b"NCHW", n
    # Also read by a pool of the region: transposed once, for all of its readers.
    inits["w3"] = _w(rng, 3, 16, 1)
    nodes[-1:] = [helper.make_node("Add", ["b", "c"], ["s"]), helper.make_node("Conv", ["s", "w3"], ["t"]),
                  helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
                  helper.make_node("Add", ["t", "p"], ["y"])]
    rewritten, _ = _check(_graph_model(nodes, inits, ["y"], x_shape=(2, 3, 11, 11)), transposes=2, regions=1)
    assert not any(a.name == "input_layout" for n in rewritten.graph.node for a in n.attribute)


def test_values_read_outside_leave_the_region_transposed_back_under_their_names():
    """An inner value that is also a graph output, or read by a non-conv node, keeps its NCHW
    meaning there; a strided conv, a grouped one and a depthwise one join the region."""
    rng = np.random.default_rng(1)
    inits = {"w1": _w(rng, 8, 8, 3), "w2": _w(rng, 8, 1, 3), "w3": _w(rng, 16, 4, 3), "w4": _w(rng, 8, 16, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Sigmoid", ["a"], ["side"]),
             helper.make_node("Conv", ["b", "w3"], ["c"], pads=[1, 1, 1, 1], group=2),
             helper.make_node("Conv", ["c", "w4"], ["y"])]
    # a: read by Sigmoid (outside) -> one Transpose back; b: graph output -> one; y: graph output -> one.
    _check(_graph_model(nodes, inits, ["y", "b", "side"]), transposes=4, regions=1)


@pytest.mark.parametrize("static", [True, False])
def test_a_global_average_pool_reads_the_region_as_a_matmul(static):
    """A region's output that only GlobalAveragePools read leaves it with no Transpose: each pool is
    the mean of the H x W positions as a MatMul of the channels-last value, reshaped to N x C x 1 x 1
    (H and W static; else the Transpose and the pool stay). The answers are ORT's, at batch 1 and 3."""
    rng = np.random.default_rng(4)
    inits = {"w1": _w(rng, 16, 8, 3), "w2": _w(rng, 24, 16, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2"], ["b"]), helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("GlobalAveragePool", ["br"], ["p"]), helper.make_node("Flatten", ["p"], ["y"]),
             helper.make_node("GlobalAveragePool", ["br"], ["q"])]
    model = _graph_model(nodes, inits, ["y", "q"], x_shape=("N", 8, 10, 10) if static else ("N", 8, "H", "W"))
    rewritten = im2win_ort.rewrite(model, layout="nhwc", plan="heuristic")
    kinds = [n.op_type for n in rewritten.graph.node]
    if static:  # (x's own Transpose into the region stays: 8 channels)
        assert kinds.count("Transpose") == 1 and "GlobalAveragePool" not in kinds and kinds.count("MatMul") == 2, kinds
    else:
        assert kinds.count("Transpose") == 2 and kinds.count("GlobalAveragePool") == 2, kinds
    for batch in (1, 3):
        x = rng.standard_normal((batch, 8, 10, 10)).astype(np.float32)
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        got = make_session(rewritten).run(None, {"x": x})
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _winograd_network(rng, fc_floats=0):
    """Four 3x3 convs of 32-48 channels (one on 20x20, three on 10x10 after a pool) and a 1x1; with
    fc_floats, a MatMul at the end by a constant of that many floats (the largest tensor)."""
    inits = {"w1": _w(rng, 32, 32, 3), "w2": _w(rng, 48, 32, 3), "w3": _w(rng, 48, 48, 3), "w4": _w(rng, 32, 48, 3),
             "w5": _w(rng, 16, 32, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("MaxPool", ["ar"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "w3"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["cr"]),
             helper.make_node("Conv", ["cr", "w4"], ["d"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["d", "w5"], ["y"])]
    outputs = ["y"]
    if fc_floats:
        inits["fc"] = (rng.standard_normal((1600, fc_floats // 1600)) / 40).astype(np.float32)
        inits["shape"] = np.array([0, -1], np.int64)
        nodes += [helper.make_node("Reshape", ["y", "shape"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["z"])]
        outputs = ["z"]
    return _graph_model(nodes, inits, outputs, x_shape=("N", 32, 20, 20))


def _weight_layouts(model):
    return [next((a.s.decode() for a in n.attribute if a.name == "weight_layout"), "OIHW")
            for n in model.graph.node if n.op_type == "Conv"]


def test_winograd_convs_store_w_as_u_where_that_saves_memory():
    """The convs the op runs with Winograd (3x3, stride 1, 32 channels and more, output size known)
    store W as U for the tile the op takes (F(4x4, 3x3) from 16 outputs a side); "original" and
    algorithm "direct" keep W; "auto" keeps W where loading would peak above the runs (a tensor
    larger than all U); the answers are ORT's."""
    rng = np.random.default_rng(21)
    wino = ["im2win.winograd4"] + ["im2win.winograd2"] * 3 + [NHWC_LAYOUT]
    plain = [NHWC_LAYOUT] * 5
    for fc_floats, auto in ((0, wino), (320000, plain)):
        model = _winograd_network(rng, fc_floats)
        x = rng.standard_normal((2, 32, 20, 20)).astype(np.float32)
        ort_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (want,) = ort_session.run(None, {"x": x})
        for options, layouts in ((dict(), auto), (dict(winograd_weights="transformed"), wino),
                                 (dict(winograd_weights="original"), plain), (dict(algorithm="direct"), plain)):
            rewritten, report = im2win_ort.rewrite_with_report(model, layout="nhwc", plan="heuristic", **options)
            assert _weight_layouts(rewritten) == layouts, options
            assert ("4 W stored as Winograd's U" in report.channels_last) == (layouts == wino), report.channels_last
            _check_nhwc_weights(model, rewritten)
            (got,) = make_session(rewritten).run(None, {"x": x})
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
            if not options:
                why = "loading would peak higher than the runs"
                assert (why in report.channels_last) == (auto == plain), report.channels_last
    with pytest.raises(ValueError, match="winograd_weights must be one of auto, transformed, original"):
        im2win_ort.rewrite(model, layout="nhwc", winograd_weights="u")


def test_a_lone_conv_and_separate_chains():
    """A conv with no conv neighbour stays NCHW (min_convs 2); chains split by a non-conv node are
    regions of their own, each with its own borders."""
    rng = np.random.default_rng(2)
    inits = {"w1": _w(rng, 8, 8, 3), "w2": _w(rng, 8, 8, 3), "w3": _w(rng, 8, 8, 3)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "w3"], ["y"], pads=[1, 1, 1, 1])]
    nodes[1] = helper.make_node("Softmax", ["a"], ["p"], axis=1)  # not a region op: a border
    rewritten, report = _check(_graph_model(nodes, inits, ["y"]), transposes=2, regions=1)
    assert [name for name, _ in report.kept_nchw] and "1 conv" in report.kept_nchw[0][1]
    _check(_graph_model(nodes, inits, ["y"]), transposes=4, regions=2, min_convs=1)


def test_pools_between_convs_join_their_region():
    """MaxPool and AveragePool between convs run channels-last too (com.im2win's pools): VGG's and
    DenseNet's shape, one region; a pool whose Indices output is read stays ONNX's, a border."""
    rng = np.random.default_rng(5)
    inits = {"w1": _w(rng, 8, 8, 3), "w2": _w(rng, 8, 8, 3), "w3": _w(rng, 8, 8, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("MaxPool", ["ar"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["b"], ["q"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
             helper.make_node("Conv", ["q", "w3"], ["y"])]
    rewritten, report = _check(_graph_model(nodes, inits, ["y"]), transposes=2, regions=1)
    assert report.pools == 2 and "2 pool(s)" in report.summary()
    assert sorted(n.op_type for n in rewritten.graph.node if n.domain == im2win_ort.DOMAIN) == \
        ["AveragePool", "Conv", "Conv", "Conv", "MaxPool"]
    nodes[2] = helper.make_node("MaxPool", ["ar"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2])
    _, report = _check(_graph_model(nodes, inits, ["y", "idx"]), transposes=2, regions=1)
    assert report.pools == 1


def _bn(rng, name, c, inits):
    inits.update({f"{name}_s": (rng.random(c) + 0.5).astype(np.float32),
                  f"{name}_b": rng.standard_normal(c).astype(np.float32),
                  f"{name}_m": rng.standard_normal(c).astype(np.float32),
                  f"{name}_v": (rng.random(c) + 0.5).astype(np.float32)})
    return [f"{name}_s", f"{name}_b", f"{name}_m", f"{name}_v"]


def test_a_dense_block_is_one_region_through_concat_batchnorm_and_relu():
    """DenseNet's pre-activation block: Concat -> BatchNormalization -> Relu -> 1x1 conv -> BN -> Relu ->
    3x3 conv -> Concat. The Concats run on axis 3, each BatchNormalization becomes a depthwise 1x1
    channels-last com.im2win::Conv with the Relu after it folded in, and the region has two borders."""
    rng = np.random.default_rng(8)
    inits = {"w1": _w(rng, 16, 8, 1), "w2": _w(rng, 4, 16, 3), "w3": _w(rng, 16, 12, 1), "w4": _w(rng, 4, 16, 3)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1])]
    inits["w0"] = _w(rng, 8, 8, 3)
    nodes += [helper.make_node("BatchNormalization", ["c0", *_bn(rng, "n1", 8, inits)], ["n1"], epsilon=1e-3),
              helper.make_node("Relu", ["n1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w1"], ["c1"]),
              helper.make_node("BatchNormalization", ["c1", *_bn(rng, "n2", 16, inits)], ["n2"]),
              helper.make_node("Relu", ["n2"], ["r2"]),
              helper.make_node("Conv", ["r2", "w2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("Concat", ["c0", "c2"], ["cat"], axis=1),
              helper.make_node("BatchNormalization", ["cat", *_bn(rng, "n3", 12, inits)], ["n3"]),
              helper.make_node("Relu", ["n3"], ["r3"]),
              helper.make_node("Conv", ["r3", "w3"], ["c3"]),
              helper.make_node("Relu", ["c3"], ["r4"]),
              helper.make_node("Conv", ["r4", "w4"], ["c4"], pads=[1, 1, 1, 1]),
              helper.make_node("Concat", ["cat", "c4"], ["y"], axis=-3)]
    rewritten, report = _check(_graph_model(nodes, inits, ["y"]), transposes=2, regions=1)
    # n2 and its Relu were folded into the 1x1 conv before them by the rewrite; two BN, their two
    # Relus and the two Concats remain for the region.
    assert report.other_ops == 6 and "6 other op(s)" in report.summary()
    ops = [(n.domain, n.op_type) for n in rewritten.graph.node]
    assert ("", "BatchNormalization") not in ops and ("", "Relu") not in ops
    assert ops.count((im2win_ort.DOMAIN, "Conv")) == 5 + 2
    assert [next(a.i for a in n.attribute if a.name == "axis") for n in rewritten.graph.node
            if n.op_type == "Concat"] == [3, 3]
    names = {t.name for t in rewritten.graph.initializer}
    assert not names & {f"{n}_{p}" for n in ("n1", "n2", "n3") for p in "sbmv"}  # the BN parameters are gone
    if importlib.util.find_spec("onnxruntime_extensions") is not None:  # the Python backend runs it too
        model = _graph_model(nodes, inits, ["y"])
        x = np.random.default_rng(3).standard_normal((1, 8, 10, 10)).astype(np.float32)
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        (got,) = im2win_ort.InferenceSession(rewritten, backend="python").run(None, {"x": x})
        np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-4)


def test_what_cannot_run_channels_last_is_a_border():
    """A Concat off the channel axis, and a BatchNormalization whose parameters are computed, stay
    ONNX's, outside the region, with a transpose where the region's value leaves for them."""
    rng = np.random.default_rng(9)
    inits = {"w1": _w(rng, 8, 8, 3), "w2": _w(rng, 8, 8, 3), "w3": _w(rng, 8, 8, 3)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["b", "b"], ["c"], axis=2),
             helper.make_node("Conv", ["c", "w3"], ["y"], pads=[1, 1, 1, 1])]
    _, report = _check(_graph_model(nodes, inits, ["y"]), transposes=2, regions=1)
    assert [why for _, why in report.kept_nchw] == ["a region of 1 conv(s)"]
    inits["w3"] = _w(rng, 8, 16, 3)
    params = _bn(rng, "n", 16, inits)
    nodes[2:] = [helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
                 helper.make_node("ReduceMean", ["c"], ["s"], axes=[0, 2, 3], keepdims=0),
                 helper.make_node("BatchNormalization", ["c", "s", *params[1:]], ["n"]),
                 helper.make_node("Conv", ["n", "w3"], ["y"], pads=[1, 1, 1, 1])]
    rewritten, report = _check(_graph_model(nodes, inits, ["y"]), transposes=2, regions=1)
    assert report.other_ops == 1  # the Concat; the BatchNormalization stays ONNX's
    assert [n.op_type for n in rewritten.graph.node if n.domain == ""].count("BatchNormalization") == 1


def test_nothing_to_do_leaves_the_model_as_it_was():
    rng = np.random.default_rng(3)
    model = _graph_model([helper.make_node("Conv", ["x", "w1"], ["y"])], {"w1": _w(rng, 4, 8, 1)}, ["y"])
    rewritten = im2win_ort.rewrite(model)
    before = rewritten.SerializeToString()
    report = to_channels_last(rewritten)
    assert report.regions == [] and rewritten.SerializeToString() == before


def test_rewrite_cli_layout_nhwc(tmp_path):
    """im2win-ort rewrite --layout nhwc writes a model whose regions run channels-last, validated
    against ORT; a layout it does not know is refused."""
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    inits = {"w1": _w(rng, 8, 8, 3), "w2": _w(rng, 8, 8, 3)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    onnx.save(_graph_model(nodes, inits, ["y"]), str(tmp_path / "m.onnx"))
    done = subprocess.run([sys.executable, "-m", "im2win_ort", "rewrite", str(tmp_path / "m.onnx"), "-o",
                           str(tmp_path / "out.onnx"), "--layout", "nhwc", "--validate", "--report"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "channels-last: 1 region(s), 2 conv(s), 0 pool(s), 0 other op(s), 2 transpose(s)" in done.stdout
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.op_type for n in out.graph.node] == ["Transpose", "Conv", "Conv", "Transpose"]
    bad = subprocess.run([sys.executable, "-m", "im2win_ort", "rewrite", str(tmp_path / "m.onnx"), "--layout", "nchwc"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode != 0 and "--layout" in bad.stderr
    with pytest.raises(ValueError, match="layout must be one of"):
        im2win_ort.rewrite(_graph_model(nodes, inits, ["y"]), layout="NHWC")


def test_the_python_backend_runs_channels_last_regions():
    """backend="python" runs a model rewritten with channels-last regions, pools included (ONNX's pool
    between two Transposes), as ORT runs the original."""
    pytest.importorskip("onnxruntime_extensions")
    rng = np.random.default_rng(6)
    inits = {"w1": _w(rng, 16, 8, 3), "w2": _w(rng, 8, 16, 3)}  # w1 stored in the channels-last order
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p", "w2"], ["y"], pads=[1, 1, 1, 1])]
    model = _graph_model(nodes, inits, ["y"])
    x = np.random.default_rng(1).standard_normal((1, 8, 10, 10)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    rewritten = im2win_ort.rewrite(model, layout="nhwc")
    (got,) = im2win_ort.InferenceSession(rewritten, backend="python").run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _two_regions():
    """Two chains of two convs, split by a Softmax (not a region op): two regions, and a side output
    read from inside the first."""
    rng = np.random.default_rng(7)
    inits = {f"w{i}": _w(rng, 8, 8, 3) for i in range(1, 5)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["a"], ["side"]),
             helper.make_node("Softmax", ["b"], ["s"], axis=1),
             helper.make_node("Conv", ["s", "w3"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "w4"], ["y"], pads=[1, 1, 1, 1])]
    return _graph_model(nodes, inits, ["y", "side"], x_shape=("N", 8, 10, 10))


def test_a_chooser_decides_region_by_region():
    """to_channels_last asks `choose` about each region of enough convs: None converts it, a reason
    keeps its convs NCHW with that reason."""
    rewritten = im2win_ort.rewrite(_two_regions())
    asked = []

    def choose(model, members, convs):
        asked.append(([model.graph.node[i].name for i in members], convs))
        return None if len(asked) == 1 else "kept for the test"

    report = to_channels_last(rewritten, choose=choose)
    assert [convs for _, convs in asked] == [2, 2]
    assert len(report.regions) == 1 and report.regions[0] == asked[0][0]
    assert [why for _, why in report.kept_nchw] == ["kept for the test"] * 2
    assert report.transposes == 3  # into the first region; out of it to Sigmoid and to Softmax


def test_a_region_cut_out_as_a_model_of_its_own():
    """region_model: the region's nodes, the initializers they read, the values entering it as inputs
    at static shapes (a symbolic batch is 1), the values read outside as outputs; it runs in ORT
    as the same nodes do in the whole model. A symbolic non-batch dim cannot be measured."""
    from im2win_ort.rewriter.graph_rewrite import _value_types
    from im2win_ort.rewriter.layout_choice import region_model

    original = _two_regions()
    types = _value_types(original)
    rewritten = im2win_ort.rewrite(original)
    members = [i for i, n in enumerate(rewritten.graph.node) if n.op_type == "Conv"][:2]
    region = region_model(rewritten, members, types)
    assert [v.name for v in region.graph.input] == ["x"]
    assert [d.dim_value for d in region.graph.input[0].type.tensor_type.shape.dim] == [1, 8, 10, 10]
    assert [v.name for v in region.graph.output] == ["a", "b"]  # a: read by Sigmoid; b: by Softmax
    read = {name for i in members for name in rewritten.graph.node[i].input[1:] if name}
    assert sorted(t.name for t in region.graph.initializer) == sorted(read) and len(read) == 2  # packed W
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10)).astype(np.float32)
    a, b = make_session(region).run(None, {"x": x})
    (side,) = make_session(rewritten).run(["side"], {"x": x})  # Sigmoid(a) in the whole model
    assert a.shape == b.shape == (1, 8, 10, 10)
    np.testing.assert_allclose(1 / (1 + np.exp(-a)), side, rtol=1e-5, atol=1e-6)
    types["x"] = helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", 8, "H", 10])
    assert "not static" in region_model(rewritten, members, types)


def test_layout_auto_keeps_a_region_channels_last_only_where_it_timed_faster():
    """layout="auto" times each region both ways and converts the ones NHWC ran faster in; the
    report names every timing, the model keeps ORT's answers either way. With plan="heuristic"
    it keeps NCHW (no timing)."""
    model = _two_regions()
    rewritten, report = im2win_ort.rewrite_with_report(model, layout="auto", threads=2)
    timings = [line for line in report.channels_last.splitlines() if line.startswith("region of")]
    assert len(timings) == 2 and all("at 2 thread(s)" in t for t in timings), report.channels_last
    chosen = [t.rsplit(": ", 1)[1] for t in timings]
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    layouts = [next((a.s.decode() for a in n.attribute if a.name == "layout"), "NCHW") for n in convs]
    assert layouts == [chosen[0]] * 2 + [chosen[1]] * 2
    x = np.random.default_rng(2).standard_normal((2, 8, 10, 10)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w in zip(make_session(rewritten).run(None, {"x": x}), want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    heuristic, report = im2win_ort.rewrite_with_report(model, layout="auto", plan="heuristic")
    assert not any(a.name == "layout" for n in heuristic.graph.node for a in n.attribute)
    assert "keeps NCHW" in report.channels_last
    with pytest.raises(ValueError, match="threads"):
        im2win_ort.rewrite(model, layout="auto", threads=0)


def test_rewrite_cli_layout_auto_is_the_default(tmp_path):
    """The CLI times the regions by default (--layout auto) at --threads; a bad --threads is refused
    before anything is written."""
    import subprocess
    import sys

    onnx.save(_two_regions(), str(tmp_path / "m.onnx"))
    done = subprocess.run([sys.executable, "-m", "im2win_ort", "rewrite", str(tmp_path / "m.onnx"), "-o",
                           str(tmp_path / "out.onnx"), "--validate", "--report"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("region of 2 conv(s)") == 2 and "at 1 thread(s)" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "im2win_ort", "rewrite", str(tmp_path / "m.onnx"), "-o",
                          str(tmp_path / "bad.onnx"), "--threads", "0"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 1 and "--threads must be at least 1" in bad.stderr
    assert not (tmp_path / "bad.onnx").exists()


def test_layout_auto_does_not_time_a_region_its_shapes_make_huge():
    """Sizes from a model are untrusted: a region whose inputs would take over a GiB is not timed
    (it keeps NCHW, the report says why), and nothing is allocated for it."""
    from im2win_ort.rewriter.layout_choice import time_region

    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Conv", ["a", "w2"], ["y"])]
    region = _graph_model(nodes, {"w1": _w(rng, 8, 8, 1), "w2": _w(rng, 8, 8, 1)}, ["y"],
                          x_shape=(1, 8, 20000, 20000))
    region = im2win_ort.rewrite(region, plan="heuristic")
    assert time_region(region) == "its inputs would take 11.9 GiB"


REGION_FUZZ_EXAMPLES = int(os.environ.get("IM2WIN_REGION_FUZZ_EXAMPLES", "30"))


@st.composite
def _random_network(draw):
    """A random graph of the ops a region takes: convs (1x1, 3x3, depthwise, strided), BatchNormalization,
    Relu, Concat of two values of one size, MaxPool; each value's channels and size tracked."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    c0, size = draw(st.sampled_from([3, 8])), draw(st.sampled_from([6, 9, 12]))
    values = [("x", c0, size)]
    nodes, inits = [], {}
    for i in range(draw(st.integers(2, 9))):
        name, c, hw = values[draw(st.integers(0, len(values) - 1))]
        out = f"v{i}"
        kind = draw(st.sampled_from(["conv", "conv", "conv3", "dw", "bn", "relu", "concat", "pool"]))
        if kind in ("conv", "conv3", "dw"):
            k = 1 if kind == "conv" else 3
            m, group = (c, c) if kind == "dw" else (draw(st.sampled_from([4, 8, 16])), 1)
            stride = draw(st.sampled_from([1, 1, 2])) if hw >= 4 else 1
            inits[f"w{i}"] = (rng.standard_normal((m, c // group, k, k)) / np.sqrt(c * k * k / group)).astype(np.float32)
            nodes.append(helper.make_node("Conv", [name, f"w{i}"], [out], group=group, strides=[stride, stride],
                                          pads=[k // 2] * 4))
            values.append((out, m, (hw + 2 * (k // 2) - k) // stride + 1))
        elif kind == "bn":
            nodes.append(helper.make_node("BatchNormalization", [name, *_bn(rng, f"n{i}", c, inits)], [out]))
            values.append((out, c, hw))
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [name], [out]))
            values.append((out, c, hw))
        elif kind == "concat":
            same = [v for v in values if v[2] == hw]
            other = same[draw(st.integers(0, len(same) - 1))]
            nodes.append(helper.make_node("Concat", [name, other[0]], [out], axis=1))
            values.append((out, c + other[1], hw))
        elif hw >= 2:
            nodes.append(helper.make_node("MaxPool", [name], [out], kernel_shape=[2, 2], strides=[2, 2]))
            values.append((out, c, hw // 2))
    outputs = [v[0] for v in values[1:] if v[0] not in {i for n in nodes for i in n.input}] or [values[-1][0]]
    return _graph_model(nodes, inits, outputs, x_shape=(2, c0, size, size))


@settings(max_examples=REGION_FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck), database=None)
@given(_random_network())
def test_random_networks_agree_with_ort_in_both_layouts(model):
    """Random graphs of convs, BatchNormalization, Relu, Concat and MaxPool, rewritten in both layouts,
    answer as ORT answers the original (1 and 2 threads)."""
    x = np.random.default_rng(4).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for layout in ("nchw", "nhwc"):
        rewritten = im2win_ort.rewrite(model, layout=layout, plan="heuristic")
        _check_nhwc_weights(model, rewritten)
        for threads in (1, 2):
            got = make_session(rewritten, threads=threads).run(None, {"x": x})
            for g, w in zip(got, want):
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))
