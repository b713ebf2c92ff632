"""com.im2win::Conv against ORT's own Conv (the oracle) on randomized shapes and attributes.

Every case is one Conv (+ residual Add + activation in the reference, fused in ours). Cases are
packed 50 to a model so that the sweep of 500+ cases per ISA path stays fast. The same cases run
on every ISA this CPU offers, forced through IM2WIN_ISA, and on each tile family, forced
through IM2WIN_TILES (channel tiles apply where a group has whole blocks of 16 output channels),
with 1 and 2 intra-op threads.

Tolerance: |ours - ORT| <= 1e-4 * max(1, max|ORT output|) per case, elementwise. Both sides
accumulate C/group*kh*kw float32 products (at most a few hundred here) with inputs ~N(0, 1) and
weights scaled by 1/sqrt(fan-in), so outputs are O(1) and float32 reordering error is ~1e-6.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from im2win_ort import _kernels
from im2win_ort._ir_version import make_model

CASES_PER_MODEL = 50
# The sanitizer run (test_sanitizers.py) asks for more: IM2WIN_SWEEP_CASES, IM2WIN_SWEEP_SEED.
RANDOM_CASES = int(os.environ.get("IM2WIN_SWEEP_CASES", "520"))
SWEEP_SEED = int(os.environ.get("IM2WIN_SWEEP_SEED", "20261124"))
ACTIVATIONS = ["", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "HardSwish"]


def random_case(rng: np.random.Generator) -> dict:
    rank = 1 if rng.random() < 0.2 else 2
    group = int(rng.choice([1, 1, 1, 2, 3]))
    cg = int(rng.integers(1, 9))
    # Multiples of 16 output channels per group make channel tiles possible.
    mg = int(rng.choice([16, 32, 48])) if rng.random() < 0.3 else int(rng.integers(1, 15))
    depthwise = rng.random() < 0.15
    if depthwise:
        group, cg, mg = int(rng.integers(1, 17)), 1, int(rng.choice([1, 1, 2, 3]))
    kernel = [int(rng.integers(1, 6)) for _ in range(rank)]
    strides = [int(rng.integers(1, 5)) for _ in range(rank)]
    dilations = [int(rng.choice([1, 1, 2, 3])) for _ in range(rank)]
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    if auto_pad.startswith("SAME"):
        dilations = [1] * rank  # ORT's Conv refuses dilation with SAME_*; the NumPy tests cover it
    pads = [int(rng.integers(0, 5)) for _ in range(2 * rank)] if auto_pad == "NOTSET" else None
    spatial = []
    for i in range(rank):
        dilated = (kernel[i] - 1) * dilations[i] + 1
        # Smallest input that still gives a non-empty output.
        if auto_pad == "NOTSET":
            low = max(1, dilated - pads[i] - pads[i + rank])
        else:
            low = dilated if auto_pad == "VALID" else 1
        spatial.append(int(rng.integers(low, low + 20)))
    case = dict(
        x_shape=[int(rng.integers(1, 4)), group * cg] + spatial,
        w_shape=[group * mg, cg] + kernel,
        group=group,
        strides=strides,
        dilations=dilations,
        auto_pad=auto_pad,
        pads=pads,
        bias=bool(rng.random() < 0.7),
        residual=bool(rng.random() < 0.25),
        activation=str(rng.choice(ACTIVATIONS)) if rng.random() < 0.5 else "",
    )
    return case


def edge(x_shape, w_shape, **kw) -> dict:
    rank = len(x_shape) - 2
    case = dict(x_shape=x_shape, w_shape=w_shape, group=1, strides=[1] * rank, dilations=[1] * rank,
                auto_pad="NOTSET", pads=None, bias=True, residual=False, activation="")
    case.update(kw)
    return case


EDGE_CASES = {
    "output_width_1": edge([2, 3, 5, 7], [4, 3, 3, 7]),
    "output_1x1": edge([1, 8, 3, 3], [5, 8, 3, 3]),
    "kernel_larger_than_input_padded": edge([1, 2, 3, 3], [3, 2, 5, 5], pads=[2, 2, 2, 2]),
    "kernel_larger_than_input_asym_pads": edge([1, 2, 2, 4], [3, 2, 4, 6], pads=[1, 3, 2, 0]),
    "stride_larger_than_kernel": edge([1, 4, 17, 19], [6, 4, 2, 2], strides=[5, 3]),
    "stride_larger_than_kernel_1x1": edge([2, 3, 9, 9], [7, 3, 1, 1], strides=[4, 4]),
    "dilation_3": edge([1, 3, 15, 16], [8, 3, 3, 3], dilations=[3, 3]),
    "dilation_3_stride_2_padded": edge([1, 3, 15, 16], [8, 3, 3, 3], dilations=[3, 3], strides=[2, 2],
                                       pads=[3, 3, 3, 3]),
    "group_equals_C": edge([2, 8, 10, 10], [8, 1, 3, 3], group=8, pads=[1, 1, 1, 1]),
    "depthwise_multiplier_2": edge([1, 5, 9, 9], [10, 1, 3, 3], group=5, strides=[2, 2]),
    "C_1": edge([3, 1, 12, 12], [7, 1, 3, 3]),
    "M_1": edge([1, 6, 12, 12], [1, 6, 3, 3]),
    "kernel_1x1": edge([2, 16, 7, 9], [13, 16, 1, 1]),
    "pads_larger_than_kernel": edge([1, 3, 6, 6], [4, 3, 2, 2], pads=[5, 4, 3, 6]),
    "rectangular_kernel": edge([1, 3, 11, 13], [5, 3, 1, 7], pads=[0, 3, 0, 3]),
    "per_axis_stride_dilation": edge([1, 3, 20, 21], [5, 3, 3, 2], strides=[1, 3], dilations=[2, 1]),
    "conv1d": edge([2, 4, 31], [6, 4, 5], strides=[2], pads=[2, 1]),
    "conv1d_dilated": edge([1, 3, 40], [4, 3, 3], dilations=[3], strides=[3]),
    "same_upper_stride_2": edge([1, 3, 10, 11], [4, 3, 3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    "same_lower_even_kernel": edge([1, 3, 10, 11], [4, 3, 4, 4], auto_pad="SAME_LOWER"),
    "valid_padding": edge([1, 3, 10, 11], [4, 3, 3, 4], auto_pad="VALID", strides=[2, 3]),
    "wide_row_many_tiles": edge([1, 3, 4, 300], [7, 3, 3, 3], pads=[1, 1, 1, 1]),
    "many_channels": edge([1, 130, 6, 6], [20, 130, 3, 3], pads=[1, 1, 1, 1]),
    "channel_blocks_short_rows": edge([2, 40, 7, 7], [48, 40, 3, 3], pads=[1, 1, 1, 1], residual=True,
                                      activation="Relu"),
    "channel_blocks_grouped": edge([1, 8, 9, 13], [64, 4, 3, 3], group=2, strides=[2, 1]),
    "channel_blocks_wide": edge([1, 5, 3, 70], [32, 5, 1, 3], dilations=[1, 2]),
    # Depthwise with the channels in the vector lanes (C a multiple of the vector length).
    "depthwise_lanes_stride2": edge([2, 32, 15, 17], [32, 1, 3, 3], group=32, strides=[2, 2], pads=[1, 1, 1, 1],
                                    residual=True, activation="HardSwish"),
    "depthwise_lanes_small_dilated": edge([1, 48, 7, 7], [48, 1, 3, 3], group=48, dilations=[2, 2],
                                          pads=[2, 2, 2, 2], activation="Clip"),
    "depthwise_lanes_wide_5x5": edge([1, 16, 5, 41], [16, 1, 5, 5], group=16, pads=[2, 1, 2, 3], strides=[1, 3]),
    # A block's last, short run of outputs spans rows and its repeated offsets happen to span 15.
    "depthwise_lanes_short_tail": edge([2, 16, 13, 28], [16, 1, 3, 5], group=16, strides=[1, 2],
                                       dilations=[1, 2]),
    # Rows of exactly 16 outputs: every run lies in one row.
    "depthwise_lanes_rows_of_16": edge([1, 32, 18, 18], [32, 1, 3, 3], group=32, residual=True,
                                       activation="Relu"),
    # 1x1, stride 1, no padding reads X in place; the last tile reads a padded copy.
    "direct_1x1_positions_tail": edge([2, 5, 3, 7], [7, 5, 1, 1]),
    "direct_1x1_channels_tail": edge([1, 24, 5, 7], [32, 24, 1, 1], residual=True, activation="Clip"),
    "direct_1x1_grouped": edge([1, 12, 4, 9], [96, 4, 1, 1], group=3),
    # Planes shorter than a tile: the last tile of a channel reads on into the next channels,
    # group and image (in X), and only the very last one of X takes a copy.
    "direct_1x1_tiny_planes": edge([2, 40, 1, 3], [32, 40, 1, 1], residual=True),
    "direct_1x1_tiny_planes_grouped": edge([3, 48, 1, 5], [96, 16, 1, 1], group=3),
    # Window rows without extra columns: position tiles store into Y with the epilogue themselves.
    "flat_rows_1x1_strided": edge([1, 8, 9, 13], [10, 8, 1, 1], strides=[2, 2], residual=True,
                                  activation="Relu"),
    "flat_rows_kernel_3x1": edge([2, 4, 7, 9], [6, 4, 3, 1], pads=[1, 0, 1, 0], residual=True, activation="Clip"),
    "flat_rows_sigmoid_after": edge([1, 6, 5, 11], [7, 6, 1, 1], residual=True, activation="Sigmoid"),
    "direct_1x1_conv1d": edge([3, 6, 37], [16, 6, 1]),
    "residual_and_relu": edge([2, 4, 8, 8], [6, 4, 3, 3], pads=[1, 1, 1, 1], residual=True, activation="Relu"),
    "no_bias": edge([1, 3, 8, 8], [5, 3, 3, 3], bias=False),
}


def _attrs(case: dict) -> dict:
    attrs = dict(group=case["group"], strides=case["strides"], dilations=case["dilations"],
                 kernel_shape=case["w_shape"][2:])
    if case["auto_pad"] != "NOTSET":
        attrs["auto_pad"] = case["auto_pad"]
    elif case["pads"]:
        attrs["pads"] = case["pads"]
    return attrs


def _activation_nodes(act: str, src: str, dst: str, prefix: str):
    """The reference's activation as standard ONNX nodes, and the fused op's activation_params."""
    if act == "Clip":
        lo, hi = numpy_helper.from_array(np.float32(-0.5), f"{prefix}lo"), numpy_helper.from_array(
            np.float32(0.75), f"{prefix}hi")
        return [helper.make_node("Clip", [src, lo.name, hi.name], [dst])], [lo, hi], [-0.5, 0.75]
    if act == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [src], [dst], alpha=0.3)], [], [0.3]
    if act == "HardSigmoid":
        return [helper.make_node("HardSigmoid", [src], [dst], alpha=0.3, beta=0.4)], [], [0.3, 0.4]
    return [helper.make_node(act, [src], [dst])], [], []


def build_models(cases: list[dict], rng: np.random.Generator):
    """One reference model (ONNX Conv [+ Add] [+ activation]) and one im2win model for all cases."""
    inputs, outputs, inits, ref_nodes, our_nodes, feeds = [], [], [], [], [], {}
    for i, case in enumerate(cases):
        x = rng.standard_normal(case["x_shape"]).astype(np.float32)
        fan_in = int(np.prod(case["w_shape"][1:]))
        w = (rng.standard_normal(case["w_shape"]) / np.sqrt(fan_in)).astype(np.float32)
        feeds[f"x{i}"] = x
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, list(x.shape)))
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        conv_inputs = [f"x{i}", f"w{i}"]
        if case["bias"]:
            inits.append(numpy_helper.from_array(rng.standard_normal(w.shape[0]).astype(np.float32), f"b{i}"))
            conv_inputs.append(f"b{i}")
        attrs = _attrs(case)
        conv_out = f"conv{i}"
        ref_nodes.append(helper.make_node("Conv", conv_inputs, [conv_out], name=f"ref{i}", **attrs))
        ours_inputs = list(conv_inputs)
        if case["residual"]:
            # Z is a graph input of Y's shape; the reference adds it before the activation.
            y_shape = _expected_shape(case)
            feeds[f"z{i}"] = rng.standard_normal(y_shape).astype(np.float32)
            inputs.append(helper.make_tensor_value_info(f"z{i}", TensorProto.FLOAT, y_shape))
            ref_nodes.append(helper.make_node("Add", [conv_out, f"z{i}"], [f"sum{i}"]))
            conv_out = f"sum{i}"
            if not case["bias"]:
                ours_inputs.append("")
            ours_inputs.append(f"z{i}")
        act = case["activation"]
        params = []
        if act:
            nodes, act_inits, params = _activation_nodes(act, conv_out, f"y{i}", f"a{i}")
            ref_nodes += nodes
            inits += act_inits
        else:
            ref_nodes.append(helper.make_node("Identity", [conv_out], [f"y{i}"]))
        node = helper.make_node("Conv", ours_inputs, [f"y{i}"], name=f"im2win{i}", domain=im2win_ort.DOMAIN,
                                activation=act, **attrs)
        if params:
            node.attribute.append(helper.make_attribute("activation_params", params))
        our_nodes.append(node)
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, _expected_shape(case)))

    def model(nodes, domains):
        graph = helper.make_graph(nodes, "sweep", inputs, outputs, initializer=inits)
        opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
        return make_model(graph, opset_imports=opsets)

    return model(ref_nodes, []), model(our_nodes, [im2win_ort.DOMAIN]), feeds


def _expected_shape(case: dict) -> list[int]:
    """Y's shape by ONNX's rules, computed independently of the library."""
    x, w = case["x_shape"], case["w_shape"]
    rank = len(x) - 2
    out = []
    for i in range(rank):
        k = (w[2 + i] - 1) * case["dilations"][i] + 1
        s = case["strides"][i]
        if case["auto_pad"].startswith("SAME"):
            out.append(-(-x[2 + i] // s))
        else:
            p = (case["pads"][i] + case["pads"][i + rank]) if case["pads"] else 0
            out.append((x[2 + i] + p - k) // s + 1)
    return [x[0], w[0]] + out


def run_cases(cases: list[dict], isa: str, threads: int, seed: int, monkeypatch, tiles: str = "auto"):
    rng = np.random.default_rng(seed)
    ref_model, our_model, feeds = build_models(cases, rng)
    onnx.checker.check_model(ref_model)
    ref_opts = ort.SessionOptions()
    ref_opts.intra_op_num_threads = threads
    ref = ort.InferenceSession(ref_model.SerializeToString(), ref_opts, providers=["CPUExecutionProvider"])
    monkeypatch.setenv("IM2WIN_ISA", isa)
    monkeypatch.setenv("IM2WIN_TILES", tiles)
    ours = ort.InferenceSession(our_model.SerializeToString(), im2win_ort.session_options(threads),
                                providers=["CPUExecutionProvider"])
    want = ref.run(None, feeds)
    got = ours.run(None, feeds)
    for case, w_out, g_out in zip(cases, want, got):
        assert list(g_out.shape) == _expected_shape(case) == list(w_out.shape), case
        tol = 1e-4 * max(1.0, float(np.max(np.abs(w_out))) if w_out.size else 1.0)
        err = float(np.max(np.abs(g_out - w_out))) if w_out.size else 0.0
        assert err <= tol, f"{isa}: max abs error {err:.3g} > {tol:.3g} for {case}"


ISAS = _kernels.available_isas()
_rng = np.random.default_rng(SWEEP_SEED)
RANDOM = [random_case(_rng) for _ in range(RANDOM_CASES)]
CHUNKS = [RANDOM[i:i + CASES_PER_MODEL] for i in range(0, RANDOM_CASES, CASES_PER_MODEL)]


TILES = ["auto", "positions", "channels"]


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("chunk", range(len(CHUNKS)))
def test_random_sweep(isa, tiles, chunk, monkeypatch):
    run_cases(CHUNKS[chunk], isa, threads=1 + chunk % 2, seed=chunk, monkeypatch=monkeypatch, tiles=tiles)


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case(isa, tiles, name, monkeypatch):
    run_cases([EDGE_CASES[name]], isa, threads=2, seed=7, monkeypatch=monkeypatch, tiles=tiles)


@pytest.mark.parametrize("isa", ISAS)
def test_batch_zero(isa, monkeypatch):
    """ONNX allows an empty batch: the output is empty with the right shape."""
    case = edge([0, 3, 8, 8], [4, 3, 3, 3])
    _, our_model, feeds = build_models([case], np.random.default_rng(0))
    monkeypatch.setenv("IM2WIN_ISA", isa)
    sess = ort.InferenceSession(our_model.SerializeToString(), im2win_ort.session_options(2),
                                providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, feeds)
    assert y.shape == (0, 4, 6, 6)


def test_sweep_covers_the_named_features():
    """The random sweep really exercises what it claims to (guards against a generator regression)."""
    assert len(RANDOM) >= 500
    assert any(c["group"] > 1 and c["w_shape"][1] == 1 for c in RANDOM)  # depthwise
    assert any(len(c["x_shape"]) == 3 for c in RANDOM)  # 1-D
    assert {c["auto_pad"] for c in RANDOM} == {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"}
    assert any(max(c["dilations"]) == 3 for c in RANDOM)
    assert any(max(c["strides"]) > max(c["w_shape"][2:]) for c in RANDOM)
    assert {c["activation"] for c in RANDOM} == set(ACTIVATIONS)
    assert any(c["residual"] for c in RANDOM) and any(not c["bias"] for c in RANDOM)
    assert sum(c["w_shape"][0] // c["group"] % 16 == 0 for c in RANDOM) >= 100  # channel tiles
