"""Plans chosen on the CPU that runs them: the session entry im2win.plan (measure, the default, times
each layer's tile families the first time its shape runs; heuristic; or a pinned family). Every mode
gives the same answer bit for bit (both families sum each output in the same order), a residual Z
that Y overwrites in place survives the timing runs, weights the rewriter packed for one family
still run on the other, and a bad mode is a clear error."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from helpers import DOMAIN, ISAS, conv_model, reference_conv
from im2win_ort import _kernels
from im2win_ort._ir_version import make_model

MODES = ("measure", "heuristic", "positions", "channels")
# x shape, w shape, attributes: shapes both tile families can run (M a multiple of 16)
LAYERS = {
    "3x3": ([1, 32, 14, 14], [32, 32, 3, 3], dict(pads=[1, 1, 1, 1])),
    "3x3_s2": ([2, 24, 15, 13], [48, 24, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "1x1_direct": ([1, 40, 9, 11], [32, 40, 1, 1], {}),
    "5x5_grouped": ([1, 16, 12, 12], [32, 8, 5, 5], dict(pads=[2, 2, 2, 2], group=2)),
}


def _inputs(x_shape, w_shape, attrs, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    z = rng.standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
    return x, w, b, z


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_tile_families_agree_bit_for_bit(name, isa):
    x_shape, w_shape, attrs = LAYERS[name]
    x, w, b, z = _inputs(x_shape, w_shape, attrs)
    kw = dict(attrs, isa=isa, activation="Relu")
    positions = _kernels.conv(x, w, b, z, tiles="positions", **kw)
    for vectors in (0, 1, 2):  # the planner's width, one vector of channels (AVX2: 8), two
        channels = _kernels.conv(x, w, b, z, tiles="channels", channel_vectors=vectors, **kw)
        np.testing.assert_array_equal(positions, channels, err_msg=f"{vectors} vectors of channels")
    want = np.maximum(reference_conv(x, w, b, z, **attrs), 0)
    np.testing.assert_allclose(positions, want, rtol=1e-4, atol=1e-4)


def _session(model, mode, threads=2):
    so = im2win_ort.session_options(threads, plan=mode)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_plan_mode_gives_the_same_answer(name):
    x_shape, w_shape, attrs = LAYERS[name]
    x, w, b, z = _inputs(x_shape, w_shape, attrs)
    model = conv_model(["N", *x_shape[1:]], w, b, DOMAIN, with_z=True, **attrs)
    outputs = {}
    for mode in MODES:
        sess = _session(model, mode)
        first = sess.run(None, {"X": x, "Z": z})[0]  # measure: timed here
        again = sess.run(None, {"X": x, "Z": z})[0]  # the plan kept for the session
        np.testing.assert_array_equal(first, again, err_msg=mode)
        outputs[mode] = first
    for mode in MODES[1:]:
        np.testing.assert_array_equal(outputs[mode], outputs["measure"], err_msg=mode)
    np.testing.assert_allclose(outputs["measure"], reference_conv(x, w, b, z, **attrs), rtol=1e-4, atol=1e-4)


def test_measuring_keeps_a_residual_computed_in_the_graph():
    """Z comes from an Add inside the graph and has no other reader, so ORT may give Y Z's buffer
    (the op allows it): every timing run reads a copy of Z, and the answer is the one Z gives."""
    x_shape, w_shape, attrs = LAYERS["3x3"]
    x, w, b, z = _inputs(x_shape, w_shape, attrs)
    nodes = [helper.make_node("Add", ["Zin", "Zin"], ["Z"]),
             helper.make_node("Conv", ["X", "W", "B", "Z"], ["Y"], domain=DOMAIN, **attrs)]
    graph = helper.make_graph(
        nodes, "residual_in_place",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape),
         helper.make_tensor_value_info("Zin", TensorProto.FLOAT, list(z.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    want = reference_conv(x, w, b, 2 * z, **attrs)
    for threads in (1, 3):
        got = _session(model, "measure", threads).run(None, {"X": x, "Zin": z})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_weights_the_rewriter_packed_run_under_every_mode(mode):
    x_shape, w_shape, attrs = LAYERS["3x3"]
    x, w, b, _ = _inputs(x_shape, w_shape, attrs)
    rewritten = im2win_ort.rewrite(conv_model(["N", *x_shape[1:]], w, b, **attrs))
    layouts = [a.s.decode() for n in rewritten.graph.node for a in n.attribute if a.name == "weight_layout"]
    assert layouts and layouts[0] != "OIHW"  # packed for one family; the other mode must repack
    got = _session(rewritten, mode).run(None, {"X": x})[0]
    np.testing.assert_allclose(got, reference_conv(x, w, b, **attrs), rtol=1e-4, atol=1e-4)


def test_a_bad_plan_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="plan must be one of"):
        im2win_ort.session_options(plan="fastest")
    so = ort.SessionOptions()
    so.add_session_config_entry(im2win_ort._library.PLAN_ENTRY, "fastest")
    with pytest.raises(Exception, match="im2win.plan takes measure, heuristic, positions or channels"):
        so.register_custom_ops_library(im2win_ort.get_library_path())


def test_measure_plan_reports_each_candidate():
    x_shape, w_shape, attrs = LAYERS["3x3"]
    got = _kernels.measure_plan(x_shape, w_shape, threads=2, **attrs)
    families = [c["tile_family"] for c in got["candidates"]]
    # Positions, then channel tiles of each width the ISA has (M = 32 fits both; generic has none).
    assert families[0] == "positions" and set(families[1:]) <= {"channels"}
    assert len(families) == 1 + {"avx512": 2, "avx2": 2}.get(_kernels.selected_isa(), 0)
    assert all(c["seconds"] > 0 for c in got["candidates"])
    fastest = min(got["candidates"], key=lambda c: c["seconds"])
    assert (got["tile_family"], got["tile"]) == (fastest["tile_family"], fastest["tile"])
    # One family only: M not whole channel blocks, or depthwise.
    assert len(_kernels.measure_plan([1, 8, 10, 10], [12, 8, 3, 3])["candidates"]) == 1
    assert _kernels.measure_plan([1, 32, 8, 8], [32, 1, 3, 3], group=32)["tile_family"] == "depthwise"


def test_measure_plan_refuses_sizes_it_cannot_hold():
    with pytest.raises(_kernels.ConvError, match="at most 2\\^28 floats"):
        _kernels.measure_plan([1 << 20, 64, 64, 64], [64, 64, 3, 3])


def test_cache_sizes_bound_the_panel_budget():
    caches = _kernels.cache_sizes()
    assert caches["l2_bytes"] > 0
    assert 0 < caches["panel_budget_bytes"] <= min(512 << 10, caches["l2_bytes"] // 2)


def test_plans_for_another_cpus_l2_are_this_l2s_when_forced(tmp_path):
    """workspace_bytes(l2_bytes=...) plans as a CPU with that L2 would: the plan a process forced to that
    L2 by IM2WIN_L2_BYTES makes (what the op runs); values outside what an x86 core has are refused
    by the argument and ignored by the variable."""
    import subprocess
    import sys

    shape = ([1, 128, 56, 56], [128, 128, 3, 3])
    script = ("import json, sys; from im2win_ort import _kernels; "
              "print(json.dumps([_kernels.cache_sizes()['l2_bytes'], "
              f"_kernels.workspace_bytes({shape[0]}, {shape[1]}, pads=[1, 1, 1, 1], threads=4)]))")
    for l2 in (512 << 10, 1 << 20, 2 << 20):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, IM2WIN_L2_BYTES=str(l2)), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        forced_l2, forced = json.loads(done.stdout)
        assert forced_l2 == l2
        assert forced == _kernels.workspace_bytes(*shape, pads=[1, 1, 1, 1], threads=4, l2_bytes=l2)
    # What the OS reports (this process's own L2 may be forced: CI reruns these tests so).
    unforced = {k: v for k, v in os.environ.items() if k != "IM2WIN_L2_BYTES"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=unforced,
                          cwd=tmp_path)
    native = json.loads(done.stdout)[0]
    for bad in ("1", "abc", "1048576x", str(1 << 30), ""):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, IM2WIN_L2_BYTES=bad), cwd=tmp_path)
        assert done.returncode == 0 and json.loads(done.stdout)[0] == native, (bad, done.stdout, done.stderr)
    for bad in (-1, 1000, 1 << 30):
        with pytest.raises(_kernels.ConvError, match="l2_bytes must be 0"):
            _kernels.workspace_bytes(*shape, l2_bytes=bad)
    with pytest.raises(_kernels.ConvError, match="unknown ISA"):
        _kernels.workspace_bytes(*shape, isa="avx1024")


def test_the_timed_choice_goes_to_ort_log(tmp_path):
    """At ORT's INFO level a session says what it timed and what it runs (the plan is otherwise
    invisible from outside the op)."""
    import subprocess
    import sys

    x_shape, w_shape, attrs = LAYERS["3x3"]
    _, w, b, _ = _inputs(x_shape, w_shape, attrs)
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model(x_shape, w, b, DOMAIN, node_name="c3", **attrs).SerializeToString())
    script = (
        "import numpy as np, onnxruntime as ort, im2win_ort\n"
        "so = im2win_ort.session_options(1, plan='measure')\n"
        "so.log_severity_level = 1\n"
        f"s = ort.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])\n"
        f"s.run(None, {{'X': np.ones({x_shape}, np.float32)}})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "com.im2win::Conv node 'c3': plan timed for X [1,32,14,14]: positions 6x" in done.stderr
    assert "; runs " in done.stderr


@pytest.mark.parametrize("plan", ["measure", "heuristic"])
def test_the_rewriter_chooses_the_packed_family_by_plan(plan):
    x_shape, w_shape, attrs = LAYERS["3x3"]
    x, w, b, _ = _inputs(x_shape, w_shape, attrs)
    out, _ = im2win_ort.rewrite_with_report(conv_model(["N", *x_shape[1:]], w, b, **attrs), plan=plan)
    (layout,) = [a.s.decode() for n in out.graph.node for a in n.attribute if a.name == "weight_layout"]
    if plan == "heuristic":
        family = _kernels.workspace_bytes(x_shape, w_shape, **attrs)["tile_family"]
        assert layout == {"positions": "im2win.positions6", "channels": "im2win.channels16"}[family]
    else:
        assert layout in ("im2win.positions6", "im2win.channels16")
    got = _session(out, "measure").run(None, {"X": x})[0]
    np.testing.assert_allclose(got, reference_conv(x, w, b, **attrs), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="plan must be one of measure, heuristic"):
        im2win_ort.rewrite_with_report(conv_model(["N", *x_shape[1:]], w, b, **attrs), plan="fastest")


def test_1x1_convs_time_reading_x_in_place_against_a_panel():
    """A 1x1, stride-1, unpadded conv can read X in place or copy its rows into a panel first; the
    rule copies for many channels of large planes, and timing tries both (weights untouched, so
    also for weights the rewriter packed)."""
    big, small = ([1, 256, 28, 28], [64, 256, 1, 1]), ([1, 32, 14, 14], [32, 32, 1, 1])
    assert not _kernels.workspace_bytes(*big)["tile"].endswith("direct")
    assert _kernels.workspace_bytes(*small)["tile"].endswith("direct")
    tiles = [c["tile"] for c in _kernels.measure_plan(*small)["candidates"]]
    assert any(t.endswith(" direct") for t in tiles) and any(not t.endswith(" direct") for t in tiles)
    x_shape, w_shape = big
    x, w, b, _ = _inputs(x_shape, w_shape, {})
    rewritten = im2win_ort.rewrite(conv_model(["N", *x_shape[1:]], w, b))
    want = reference_conv(x, w, b)
    outputs = [_session(rewritten, mode).run(None, {"X": x})[0] for mode in ("measure", "heuristic")]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_allclose(outputs[0], want, rtol=1e-4, atol=1e-4)


def test_im2win_plan_environment_is_the_default_for_sessions_that_do_not_say(tmp_path):
    import subprocess
    import sys

    script = (
        "import onnxruntime as ort, im2win_ort\n"
        "so = ort.SessionOptions()\n"
        "so.register_custom_ops_library(im2win_ort.get_library_path())\n")
    env = {**__import__("os").environ, "IM2WIN_PLAN": "fastest"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert done.returncode != 0 and "unknown plan mode 'fastest'" in done.stderr
    env["IM2WIN_PLAN"] = "heuristic"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_plan_command_times_each_layer_with_measure(tmp_path):
    import json
    import subprocess
    import sys

    import onnx

    x_shape, w_shape, attrs = LAYERS["3x3"]
    _, w, b, _ = _inputs(x_shape, w_shape, attrs)
    onnx.save(conv_model(["N", *x_shape[1:]], w, b, node_name="c3", **attrs), str(tmp_path / "m.onnx"))
    done = subprocess.run([sys.executable, "-m", "im2win_ort", "plan", str(tmp_path / "m.onnx"), "--measure",
                           "--json", str(tmp_path / "plan.json")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tile families timed on this CPU" in done.stdout and "| c3 |" in done.stdout
    (layer,) = json.loads((tmp_path / "plan.json").read_text())["layers"]
    assert layer["measured"] and all(seconds > 0 for seconds in layer["measured"].values())
    assert f"{layer['tile_family']} {layer['tile']}" in layer["measured"]
