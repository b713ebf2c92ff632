"""Fuzzing com.im2win::Conv against ORT's own Conv, the oracle, with hostile attributes and shapes.

Hypothesis draws one Conv node at a time: small real tensors, and attributes that are valid, at
the int64 extremes (0, -1, 2^31, 2^62, INT64_MAX, INT64_MIN...), of the wrong length or of the
wrong type (floats, strings). Each node runs as ONNX's Conv in ORT and as com.im2win::Conv; the
rule is that the op either refuses with an error naming the node where ORT refuses, or agrees
with ORT. An output too large to hold (extreme pads) is not run by either; the op must still not
crash on creating it.

The run is seeded (derandomized) so CI sees the same cases every time; IM2WIN_FUZZ_EXAMPLES sets
how many (default 1000 per ISA path; README's Robustness section gives the long run), and
IM2WIN_FUZZ_SEED a different seed. Counts are printed at the end (pytest -s).
"""

from __future__ import annotations

import collections
import os

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from helpers import ISAS, conv_output_shape, reference_conv
from im2win_ort import DOMAIN, session_options

EXAMPLES = int(os.environ.get("IM2WIN_FUZZ_EXAMPLES", "1000"))
SEED = int(os.environ.get("IM2WIN_FUZZ_SEED", "20261126"))
NODE = "fz"
EXTREMES = [0, -1, -(2**63), 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1]
# Outputs above this many floats are not run (extreme pads ask for terabytes, in ORT as in ours).
RUNNABLE_ELEMENTS = 1 << 22
OURS_ONLY = ("com.im2win::Conv addresses", "32-bit offsets", "is smaller than the dilated kernel size")
ORT_LACKS_SAME_DILATED = "Dilation not supported for AutoPadType"
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _hostile_value(draw, valid: list[int]):
    """An ints attribute made hostile: one entry extreme, the wrong length, or the wrong type."""
    kind = draw(st.sampled_from(["extreme", "extreme", "extreme", "length", "floats", "string", "empty"]))
    if kind == "extreme":
        out = list(valid)
        out[draw(st.integers(0, len(out) - 1))] = draw(st.sampled_from(EXTREMES))
        return out
    if kind == "length":
        return valid + [1] if draw(st.booleans()) else valid[:-1]
    if kind == "floats":
        return [float(v) for v in valid]
    return "1,1" if kind == "string" else []


@st.composite
def hostile_conv(draw):
    """Half the cases valid (attributes absent or valid), half with one or two attributes hostile."""
    rank = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    spatial = [draw(st.integers(1, 7)) for _ in range(rank)]
    x_shape = [draw(st.integers(0, 2)), group * cg] + spatial
    w_shape = [group * mg, cg] + kernel
    auto_pad = draw(st.sampled_from([None, None, None, "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    valid = {"strides": [draw(st.integers(1, 3)) for _ in range(rank)],
             "dilations": [draw(st.integers(1, 2)) for _ in range(rank)],
             "pads": [draw(st.integers(0, 2)) for _ in range(2 * rank)] if auto_pad in (None, "NOTSET") else None,
             "kernel_shape": list(kernel), "group": group, "auto_pad": auto_pad}
    attrs = {k: v for k, v in valid.items() if v is not None and draw(st.booleans())}
    attrs["group"] = group
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    if draw(st.booleans()):
        for name in draw(st.lists(st.sampled_from(sorted(valid)), min_size=1, max_size=2, unique=True)):
            if name == "group":
                attrs[name] = draw(st.sampled_from(EXTREMES + [group * cg + 1, float(group)]))
            elif name == "auto_pad":
                attrs[name] = draw(st.sampled_from(["BOGUS", "", 3]))
            else:
                attrs[name] = _hostile_value(draw, valid[name] or [0] * (2 * rank))
    return x_shape, w_shape, attrs, draw(st.booleans())


def _model(x_shape, w, b, attrs, domain):
    node = helper.make_node("Conv", ["X", "W"] + (["B"] if b is not None else []), ["Y"], name=NODE,
                            domain=domain)
    for key, value in attrs.items():  # an empty list has no type to infer: ints, as ONNX Conv's
        empty = isinstance(value, list) and not value
        node.attribute.append(helper.make_attribute(key, value, attr_type=AttributeProto.INTS if empty else None))
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    graph = helper.make_graph([node], "fuzz", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(DOMAIN, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString()


def _expected_elements(x_shape, w_shape, attrs) -> int | None:
    """Y's element count under ONNX's rules in Python integers (no overflow), or None if unknown."""
    try:
        options = {k: attrs[k] for k in ("strides", "dilations", "pads") if k in attrs}
        if "auto_pad" in attrs:
            options["auto_pad"] = attrs["auto_pad"]
        shape = conv_output_shape(x_shape, w_shape, **options)
        return int(np.prod([max(0, d) for d in shape], dtype=object))
    except Exception:
        return None


def _run(model: bytes, options, x) -> tuple[str, object]:
    try:
        sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several exception classes for a refused model
        return "refused", str(e)
    if x is None:
        return "created", None
    try:
        return "ran", sess.run(None, {"X": x})[0]
    except Exception as e:
        return "refused", str(e)


def check_case(x_shape, w_shape, attrs, bias, isa):
    rng = np.random.default_rng(abs(hash((tuple(x_shape), tuple(w_shape)))) % 2**32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / 3).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    elements = _expected_elements(x_shape, w_shape, attrs)
    runnable = elements is not None and elements <= RUNNABLE_ELEMENTS
    feed = x if runnable else None
    theirs, their_out = _run(_model(x_shape, w, b, attrs, ""), ort.SessionOptions(), feed)
    ours, our_out = _run(_model(x_shape, w, b, attrs, DOMAIN), session_options(), feed)
    counts = COUNTS[isa]
    counts["cases"] += 1
    if ours == "refused":
        assert f"com.im2win::Conv node '{NODE}'" in our_out or "[ShapeInferenceError]" in our_out, our_out
        if theirs == "created":  # too large to run: ORT checks some attributes only when it runs
            counts["too large to run, refused by ours"] += 1
            return
        counts["refused by both" if theirs == "refused" else "refused by ours only"] += 1
        if theirs != "refused":
            # Only the op's documented limits may refuse what ORT takes, and a kernel larger than
            # the padded input: ONNX has no output there, and ORT refuses it too except when the
            # stride exceeds the span, where its truncating division makes one output of padding.
            assert any(reason in our_out for reason in OURS_ONLY), (attrs, our_out)
            if os.environ.get("IM2WIN_FUZZ_VERBOSE"):
                print("refused by ours only:", x_shape, w_shape, attrs, our_out.splitlines()[0][-160:])
        return
    by_reference = theirs == "refused" and ORT_LACKS_SAME_DILATED in their_out and ours == "ran"
    if by_reference:
        # ONNX defines dilation with SAME_* padding and the op computes it; ORT's CPU Conv lacks it.
        their_out = reference_conv(x, w, b, **{k: v for k, v in attrs.items() if k != "kernel_shape"})
        theirs = "ran"
        counts["agreed with the NumPy reference (ORT lacks SAME_* with dilation)"] += 1
    assert theirs != "refused", f"ORT refuses {attrs} ({their_out}) but com.im2win::Conv took it"
    if ours == "ran":
        counts["agreed"] += not by_reference
        assert our_out.shape == their_out.shape, (attrs, our_out.shape, their_out.shape)
        scale = max(1.0, float(np.max(np.abs(their_out)))) if their_out.size else 1.0
        np.testing.assert_allclose(our_out, their_out, rtol=0, atol=1e-4 * scale)
    else:
        counts["created, too large to run"] += 1


@pytest.fixture(scope="module", autouse=True)
def _print_counts():
    yield
    for isa, counts in COUNTS.items():
        print(f"\nfuzz [{isa}]: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@pytest.mark.parametrize("isa", ISAS)
def test_hostile_conv_nodes_refused_or_agree_with_ort(isa, monkeypatch):
    monkeypatch.setenv("IM2WIN_ISA", isa)

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize="IM2WIN_FUZZ_SEED" not in os.environ,
              suppress_health_check=list(HealthCheck), database=None)
    @given(hostile_conv())
    def run(case):
        check_case(*case, isa)

    run()
