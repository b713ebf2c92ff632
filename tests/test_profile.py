"""`im2win-ort profile`: the time of a whole network, op type by op type, from ORT's profiler, in
ORT at ENABLE_ALL and rewritten to com.im2win::Conv."""

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from im2win_ort._ir_version import make_model
from im2win_ort.measure.profile import node_times


def _network(path):
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32)
    w2 = (rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "p1"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 16, 16])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "im2win_ort", "profile", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_profile_breakdown(tmp_path):
    model = _network(tmp_path / "net.onnx")
    done = _cli(model, "--batch", 2, "--runs", 3, "--warmup", 1, "--json", tmp_path / "p.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for label in ("all convolutions", "everything else", "sum of the nodes", "executor (run - nodes)"):
        assert f"| {label} |" in done.stdout
    result = json.loads((tmp_path / "p.json").read_text())
    ours, theirs = result["im2win"], result["ort_all"]
    assert ours["ops"]["Conv"]["nodes"] == 2  # both convs on com.im2win::Conv, Relu and Add fused
    assert "Relu" not in ours["ops"] and "Add" not in ours["ops"]
    assert ours["ops"]["MaxPool"]["nodes"] == 1
    # conv, MaxPool, conv: one channels-last region; its first conv reads the 3-channel x channels-first
    # (input_layout NCHW), so the one Transpose is at its exit
    nhwc = result["im2win_nhwc"]
    assert nhwc["ops"]["Conv"]["nodes"] == 2 and nhwc["ops"]["MaxPool"]["nodes"] == 1
    assert nhwc["ops"]["Transpose"]["nodes"] == 1
    assert "| channels-last regions |" in done.stdout
    for side in (ours, theirs, nhwc):
        assert 0 < side["nodes_ms"] <= side["run_ms"] * 1.05 and side["median_wall_ms"] > 0


def test_profile_errors(tmp_path):
    for args, message in (((tmp_path / "none.onnx",), "none.onnx"),
                          ((_network(tmp_path / "n.onnx"), "--runs", 0), "--runs must be >= 1")):
        done = _cli(*args, cwd=tmp_path)
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_node_times_keep_only_the_last_runs():
    trace = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
             {"cat": "Node", "name": "a_kernel_time", "ts": 10, "dur": 50, "args": {"op_name": "Conv"}},
             {"cat": "Session", "name": "model_run", "ts": 200, "dur": 80},
             {"cat": "Node", "name": "a_kernel_time", "ts": 210, "dur": 30, "args": {"op_name": "Conv"}},
             {"cat": "Node", "name": "b_kernel_time", "ts": 250, "dur": 10, "args": {"op_name": "Relu"}}]
    times = node_times(trace, runs=1)
    assert times["ops"] == {"Conv": {"ms": 0.03, "nodes": 1}, "Relu": {"ms": 0.01, "nodes": 1}}
    assert times["run_ms"] == 0.08 and abs(times["nodes_ms"] - 0.04) < 1e-12
