"""python -m im2win_ort.measure.layouts runs end to end on tiny inputs (so it never rots): NCHW,
channels-last and ORT timed side by side, their answers checked against each other."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers import ONNX_OPSET
from im2win_ort._ir_version import make_model
from im2win_ort.measure import layouts


def test_layers_and_models(tmp_path, capsys):
    out = tmp_path / "layers.json"
    assert layouts.main(["--layers", "tiny", "--threads", "1", "--runs", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["layer"] == "tiny" and row["error"] < 1e-4 and result["machine"]["isa"]
    for config in layouts.CONFIGS:
        assert row[config]["seconds"] > 0
    assert row["ORT ALL"]["vs_ort_all"] == 1.0

    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 8 for _ in range(2))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), str(tmp_path / "m.onnx"))
    out = tmp_path / "models.json"
    assert layouts.main(["--models", str(tmp_path / "m.onnx"), "--threads", "1,2", "--runs", "2",
                         "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["threads"] for r in rows] == [1, 2]
    assert all(r["max_rel_err"] < 1e-4 and "1 region(s), 2 conv(s)" in r["regions"] for r in rows)
    assert "im2win NHWC" in capsys.readouterr().out


def test_bottleneck(tmp_path):
    out = tmp_path / "bottleneck.json"
    assert layouts.main(["--threads", "1", "--runs", "1", "--size", "8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == [name for name, *_ in layouts.LAYERS] + ["bottleneck (3 convs)"]
    assert all(r["max_rel_err"] < 1e-4 and r["im2win NHWC"]["gflops"] > 0 for r in rows)


def test_bad_arguments(capsys):
    assert layouts.main(["--threads", "0"]) == 1
    assert layouts.main(["--layers", "nosuchset"]) == 1
    assert "unknown layer set" in capsys.readouterr().err
