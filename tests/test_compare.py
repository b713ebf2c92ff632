"""`im2win-ort compare` end to end on a small network, its per-layer workspace formulas, and its
error paths (one-line messages, exit status 1, no traceback)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from im2win_ort import _kernels, reference
from im2win_ort._ir_version import make_model
from im2win_ort.measure import compare

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # models/ lives beside the package; appended so it shadows nothing
try:
    import models

    HAVE_MODELS = hasattr(models, "build")
except ImportError:
    HAVE_MODELS = False


def small_net(dims=("N", 3, 16, 16)) -> onnx.ModelProto:
    """Conv+BN+Relu, Conv+BN, residual Add, Relu, a stride-2 Conv, a 1x1 Conv, global pool."""
    rng = np.random.default_rng(0)
    params, nodes = {}, []

    def conv(x, y, cin, cout, k, stride=1, pad=None, bn=True):
        pad = k // 2 if pad is None else pad
        params[f"{y}.w"] = rng.standard_normal((cout, cin, k, k)) / math.sqrt(cin * k * k)
        out = f"{y}.c" if bn else y
        nodes.append(helper.make_node("Conv", [x, f"{y}.w"], [out], name=f"{y}.conv", strides=[stride] * 2,
                                      pads=[pad] * 4))
        if bn:
            for p, v in (("s", rng.random(cout) + 0.5), ("b", rng.standard_normal(cout) * 0.1),
                         ("m", rng.standard_normal(cout) * 0.1), ("v", rng.random(cout) + 0.5)):
                params[f"{y}.{p}"] = v
            nodes.append(helper.make_node("BatchNormalization", [out] + [f"{y}.{p}" for p in "sbmv"], [y],
                                          name=f"{y}.bn"))
        return y

    a = conv("x", "a", 3, 8, 3)
    nodes.append(helper.make_node("Relu", [a], ["a.r"], name="a.relu"))
    b = conv("a.r", "b", 8, 8, 3)
    nodes.append(helper.make_node("Add", [b, "a.r"], ["res"], name="add"))
    nodes.append(helper.make_node("Relu", ["res"], ["res.r"], name="res.relu"))
    c = conv("res.r", "c", 8, 16, 3, stride=2)
    d = conv(c, "d", 16, 16, 1, bn=False)
    nodes.append(helper.make_node("GlobalAveragePool", [d], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["y"], name="flatten"))
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 16])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()])
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The end-to-end model: ResNet-18 of models/ at 1/8 width and 32x32 when models/ is there
    (so PyTorch is compared too when installed), else small_net()."""
    directory = tmp_path_factory.mktemp("net")
    if HAVE_MODELS:
        model, path = models.build("resnet18", width=0.125, resolution=32, num_classes=10), directory / "resnet18.onnx"
    else:
        model, path = small_net(), directory / "small.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def run(network, tmp_path_factory):
    """One run of the command (in this process; each configuration is a worker process anyway)."""
    out = tmp_path_factory.mktemp("report")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = compare.main([str(network), "--runs", "2", "--warmup", "1", "--batch", "1,2", "--threads", "1",
                             "--out", str(out)])
    return subprocess.CompletedProcess([], code, stdout.getvalue(), stderr.getvalue()), out


def test_end_to_end_writes_the_report(run):
    result, out = run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "batch 2" in result.stderr  # the progress bar named the steps
    for column in ("peak RSS MiB", "after load MiB", "latency ms", "max rel err"):
        assert column in result.stdout
    for label in ("ORT ENABLE_ALL", "ORT ENABLE_EXTENDED", "im2win (rewritten)",
                  "im2win channels-last (rewritten --layout nhwc)"):
        assert label in result.stdout
    for name in ("report.md", "report.json", "peak_rss.png", "latency.png", "workspace.png", "inputs-b1.npz",
                 "inputs-b2.npz"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert (out / name).stat().st_mode & 0o044  # readable like any file the user writes
    assert (out / "peak_rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary files left behind
    rewritten = onnx.load(str(next(out.glob("*.im2win.onnx"))))
    assert any(n.domain == "com.im2win" for n in rewritten.graph.node)
    channels_last = onnx.load(str(next(out.glob("*.im2win-nhwc.onnx"))))
    layouts = [next((a.s for a in n.attribute if a.name == "layout"), b"NCHW") for n in channels_last.graph.node
               if n.domain == "com.im2win" and n.op_type == "Conv"]
    assert layouts and set(layouts) == {b"NHWC"}  # the network's convs are one connected region
    assert not any(a.name == "layout" for n in rewritten.graph.node for a in n.attribute)
    markdown = (out / "report.md").read_text()
    assert "| configuration |" in markdown and "## Conv layers" in markdown and "![peak_rss.png]" in markdown


def test_report_holds_the_measurements(run):
    _, out = run
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    expected = {"ort_all", "ort_extended", "im2win", "im2win_nhwc"}
    # PyTorch runs for a network of models/ (found by its metadata) whenever torch is installed.
    with_torch = HAVE_MODELS and importlib.util.find_spec("torch") is not None
    assert ("network" in report["torch"]) == with_torch, report["torch"]
    if with_torch:
        assert report["torch"]["network"] == "resnet18" and report["torch"]["source"] == "model metadata"
        assert report["torch"]["options"] == {"width": 0.125, "resolution": 32, "num_classes": 10, "seed": 0}
        expected |= {"torch_onednn", "torch_im2col"}
    assert {(r["config"], r["batch"]) for r in results} == {(c, b) for c in expected for b in (1, 2)}
    for r in results:
        assert r["ok"], r
        assert r["threads"] == 1
        assert r["peak_rss_bytes"] >= r["rss_load_bytes"] > r["rss_base_bytes"] > 0
        assert r["peak_rss_bytes"] == max(r["peak_load_rss_bytes"], r["peak_run_rss_bytes"])
        assert r["latency_s"] > 0 and len(r["times_s"]) == 2
        assert r["max_rel_err"] <= 1e-3 and r["agrees"], r
        kind = compare.CONFIGS[r["config"]][1]
        # Each configuration's process holds its own runtime only (models/ builds the PyTorch
        # network's seeded weights with onnx).
        assert r["runtimes_imported"] == (["onnxruntime"] if kind == "ort" else ["onnx", "torch"])
        if kind == "ort":
            assert r["arena"] is True
        else:  # oneDNN on: PyTorch's default dispatch; off: its im2col path, NNPACK off as well
            assert r["versions"]["mkldnn"] == (r["config"] == "torch_onednn")
            if r["config"] == "torch_im2col":
                assert r["versions"]["nnpack"] is False
    for r in results:
        if r["config"] == "ort_all":
            assert r["max_abs_err"] == 0.0  # the reference itself
    shapes = report["settings"]["input_shapes"]
    assert {name: [2] + shape[1:] for name, shape in shapes["1"].items()} == shapes["2"]
    # Every worker read the same saved inputs.
    with np.load(out / "inputs-b2.npz") as data:
        assert next(iter(data.values())).shape[0] == 2


def test_per_layer_workspace_follows_the_formulas(run):
    _, out = run
    report = json.loads((out / "report.json").read_text())
    for batch, layers in report["layers"].items():
        assert layers and all("x_shape" in l for l in layers)
        for l in layers:
            n, c, h, w = l["x_shape"]
            _, _, kh, kw = l["w_shape"]
            _, _, ho, wo = l["y_shape"]
            top, left, bottom, right = l["pads"]
            assert n == int(batch)
            assert l["im2col_bytes"] == 4 * n * c * kh * kw * ho * wo
            assert l["im2win_bytes"] == 4 * n * c * ho * (w + left + right) * kh
            # ... which is the size of the NumPy reference's window tensor (N x C x Ho x Wp x Kh).
            t = reference.im2win(np.zeros(l["x_shape"], np.float32), [kh, kw], pads=l["pads"], strides=l["strides"])
            assert t.nbytes == l["im2win_bytes"]
            assert l["direct_bytes"] == 0
            ws = _kernels.workspace_bytes(l["x_shape"], l["w_shape"], strides=l["strides"], pads=l["pads"],
                                          dilations=l["dilations"], group=l["group"])
            assert l["ours_per_thread_bytes"] == ws["im2win_per_thread"] > 0
            assert l["im2col_bytes"] == n * l["group"] * ws["im2col"]
        totals = report["layer_totals"][batch]
        assert totals["im2col_bytes"]["max"] == max(l["im2col_bytes"] for l in layers)
    one, two = report["layers"]["1"], report["layers"]["2"]
    assert [2 * l["im2col_bytes"] for l in one] == [l["im2col_bytes"] for l in two]


def test_layer_workspace_of_a_known_layer():
    # cv9 of the paper: 64x56x56, 3x3, stride 1, pad 1, batch 4.
    l = compare.layer_workspace([4, 64, 56, 56], [64, 64, 3, 3], {"pads": [1, 1, 1, 1]})
    assert l["y_shape"] == [4, 64, 56, 56]
    assert l["im2col_bytes"] == 4 * 4 * 64 * 9 * 56 * 56
    assert l["im2win_bytes"] == 4 * 4 * 64 * 56 * 58 * 3
    assert l["ours_per_thread_bytes"] < l["im2win_bytes"] / 4  # bounded per thread, not the batch's tensor
    # SAME_UPPER with stride 2 pads as ORT does; a 1-D conv has H = Kh = Ho = 1.
    same = compare.layer_workspace([1, 3, 9, 9], [4, 3, 3, 3], {"auto_pad": b"SAME_UPPER", "strides": [2, 2]})
    assert same["y_shape"] == [1, 4, 5, 5] and same["pads"] == [1, 1, 1, 1]
    one_d = compare.layer_workspace([2, 3, 10], [4, 3, 3], {"pads": [1, 1]})
    assert one_d["im2win_bytes"] == 4 * 2 * 3 * 12 and one_d["im2col_bytes"] == 4 * 2 * 3 * 3 * 10
    three_d = compare.layer_workspace([1, 2, 4, 4, 4], [2, 2, 3, 3, 3], {})
    assert three_d["im2win_bytes"] is None and three_d["ours_per_thread_bytes"] is None and "ours_note" in three_d


@pytest.mark.skipif(not HAVE_MODELS, reason="models/ is not importable")
def test_pytorch_network_found_by_metadata_file_name_or_option(tmp_path):
    model = models.build("resnet18", width=0.125, resolution=32, num_classes=10)
    found = compare.torch_network(model, tmp_path / "anything.onnx", None, False)
    if importlib.util.find_spec("torch") is None:
        assert found == {"skipped": "torch is not installed"}
        return
    assert (found["network"], found["source"]) == ("resnet18", "model metadata")
    del model.metadata_props[:]
    found = compare.torch_network(model, tmp_path / "resnet18.onnx", None, False)
    assert (found["network"], found["source"]) == ("resnet18", "file name")
    assert found["options"] == {"resolution": 32, "num_classes": 10}  # what the graph shows
    found = compare.torch_network(model, tmp_path / "net.onnx", "ResNet-18", False)
    assert (found["network"], found["source"]) == ("resnet18", "--torch")
    assert "skipped" in compare.torch_network(model, tmp_path / "net.onnx", None, False)
    assert compare.torch_network(model, tmp_path / "resnet18.onnx", None, True) == {"skipped": "--no-torch"}


def test_symbolic_dims_from_input_shape_and_no_arena(tmp_path, capsys):
    path = tmp_path / "small.onnx"
    onnx.save(small_net(("batch", 3, "height", "width")), str(path))
    code = compare.main([str(path), "--input-shape", "x=Nx3x12x12", "--batch", "3", "--threads", "1,2", "--runs", "1",
                         "--warmup", "0", "--configs", "ort_all,im2win", "--no-arena", "--no-progress",
                         "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["settings"]["input_shapes"] == {"3": {"x": [3, 3, 12, 12]}}
    assert [(r["config"], r["threads"]) for r in report["results"]] == [("ort_all", 1), ("im2win", 1),
                                                                         ("ort_all", 2), ("im2win", 2)]
    assert all(r["arena"] is False and r["ok"] and r["agrees"] for r in report["results"])
    assert [l["x_shape"][2] for l in report["layers"]["3"]] == [12, 12, 12, 6]
    assert "skipped" in report["torch"]  # not a network of models/


def test_a_failing_configuration_is_reported(tmp_path, capsys):
    """A model ORT cannot run: every configuration fails, the report says why, exit status 1."""
    model = small_net()
    model.graph.node.insert(0, helper.make_node("NoSuchOp", ["x"], ["x2"], name="odd", domain="com.example"))
    model.graph.node[1].input[0] = "x2"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    code = compare.main([str(path), "--batch", "1", "--runs", "1", "--configs", "ort_all,im2win", "--no-progress",
                         "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    assert captured.err.strip().endswith("2 configuration(s) failed, 0 disagree with ORT ENABLE_ALL beyond 0.001; "
                                         "see the report")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [r["ok"] for r in report["results"]] == [False, False]
    assert all("NoSuchOp" in r["error"] for r in report["results"])
    assert "failed: " in captured.out and (tmp_path / "o" / "report.md").is_file()


def _error(argv, capsys) -> str:
    assert compare.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("im2win-ort compare: error: "), err
    return err


def test_missing_file(tmp_path, capsys):
    assert "no such file" in _error([str(tmp_path / "nope.onnx")], capsys)


def test_not_a_model(tmp_path, capsys):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    assert "not an ONNX model" in _error([str(path)], capsys)


def test_unknown_symbolic_dim_names_the_input_and_the_option(tmp_path, capsys):
    path = tmp_path / "small.onnx"
    onnx.save(small_net(("N", 3, "H", "W")), str(path))
    err = _error([str(path), "--out", str(tmp_path / "o")], capsys)
    assert "input 'x'" in err and "'H'" in err and "--input-shape x=Nx3xHxW" in err
    assert not (tmp_path / "o").exists()  # nothing written for bad input


@pytest.mark.parametrize("argv, message", [
    (["--input-shape", "y=Nx3x16x16"], "--input-shape names no input of the model: y"),
    (["--input-shape", "x=Nx3x16"], "3 dimensions given, the model's input has 4"),
    (["--input-shape", "x=Nx4x16x16"], "dimension 1 is 4, the model fixes it at 3"),
    (["--input-shape", "x=Nx3xfoox16"], "neither a positive integer nor N"),
    (["--batch", "0"], "--batch takes comma-separated positive integers"),
    (["--threads", "two"], "--threads takes comma-separated positive integers"),
    (["--configs", "ort_all,tvm"], "unknown configuration(s) tvm"),
    (["--torch", "lenet"], "unknown network 'lenet'"),
])
def test_bad_arguments(tmp_path, capsys, argv, message):
    path = tmp_path / "small.onnx"
    onnx.save(small_net(), str(path))
    if argv[0] == "--torch" and not HAVE_MODELS:
        pytest.skip("models/ is not importable")
    if argv[0] == "--torch":
        pytest.importorskip("torch")
    assert message in _error([str(path), "--out", str(tmp_path / "o")] + argv, capsys)


def test_fixed_batch(tmp_path, capsys):
    path = tmp_path / "fixed.onnx"
    onnx.save(small_net((1, 3, 16, 16)), str(path))
    err = _error([str(path), "--batch", "4"], capsys)
    assert "batch is fixed" in err and "input 'x' is 1x3x16x16" in err
    batches, plan = compare.plan_inputs(onnx.load(str(path)), None, {})
    assert batches == [1] and plan == {1: {"x": [1, 3, 16, 16]}}


def test_cli_error_has_no_traceback(tmp_path):
    """Through the command line: `python -m im2win_ort compare` with the package these tests import."""
    import im2win_ort

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(im2win_ort.__file__).resolve().parent.parent)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    result = subprocess.run([sys.executable, "-m", "im2win_ort", "compare", str(tmp_path / "missing.onnx")],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"im2win-ort compare: error: {tmp_path / 'missing.onnx'}: no such file"]


def test_models_found_through_im2win_models_root(tmp_path):
    """`python -m models` runs the installed package from outside the source tree and names the
    directory holding models/ in IM2WIN_MODELS_ROOT, so compare can build the PyTorch twin."""
    repo = Path(__file__).resolve().parent.parent
    probe = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
             "from im2win_ort.measure.compare import _models_package; m = _models_package(); "
             "print(m is not None and hasattr(m, 'NETWORKS'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["IM2WIN_MODELS_ROOT"] = str(repo)
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
