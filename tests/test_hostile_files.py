"""Hostile files and arguments for the commands that write: outputs that are not regular files,
outputs that are one of the input's own files, graphs too long or out of order for recursion,
external data hidden in model-local functions, and numbers and names no command should take.

Each command either does its work or exits 1 with one line on stderr; the input model and its
external data are never touched, and nothing is left behind when it refuses."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from im2win_ort._ir_version import make_model
from im2win_ort.cli import main
from im2win_ort.deploy import triton
from im2win_ort.measure import compare
from im2win_ort.rewriter import RewriteError, rewrite_with_report
from im2win_ort.rewriter.model_io import ModelError, load_model, save_model

from helpers import conv_relu_model

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def small_model(channels=16, size=8) -> onnx.ModelProto:
    """Conv (3 -> channels, 3x3) + Relu; W is 1.7 KB, over save_model's 1 KiB external threshold."""
    return conv_relu_model(channels, size, seed=7)


def save_with_data(model: onnx.ModelProto, path: Path, location: str) -> None:
    """The model with every tensor in the file `location` (relative to the model's directory)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=location, size_threshold=0,
                                   convert_attribute=True)
    onnx.save_model(model, str(path))


def digests(*paths: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    for name, test in (("symlink", stat.S_ISLNK), ("fifo", stat.S_ISFIFO), ("device", stat.S_ISCHR),
                       ("directory", stat.S_ISDIR), ("file", stat.S_ISREG)):
        if test(mode):
            return name
    return "other"


def make_non_regular(path: Path, what: str, tmp_path: Path) -> None:
    """An existing `path` that is not a regular file (a device node only where mknod is allowed)."""
    if what == "fifo":
        os.mkfifo(path)
    elif what == "symlink":
        victim = tmp_path / "victim.txt"
        victim.write_text("not yours")
        path.symlink_to(victim)
    elif what == "dangling_symlink":
        path.symlink_to(tmp_path / "nowhere" / "x.onnx")
    elif what == "device":  # a null device of our own: /dev/null itself is never a test's target
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError) as e:
            pytest.skip(f"cannot make a device node here ({e})")
    elif what == "directory":
        path.mkdir()
        (path / "keep").write_text("old")


def run(argv, entry=main) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a command run in this process; argparse's exit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = entry(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"im2win-ort {prog}: error: "), err
    return lines[0]


def no_staging_left(directory: Path) -> None:
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")], list(directory.iterdir())


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(small_model(), str(path))
    return path


@pytest.fixture
def no_workers(monkeypatch):
    """compare without its measuring processes: these tests are about what it reads and writes."""
    monkeypatch.setattr(compare, "run_worker", lambda spec, scratch, timeout=None: {"error": "not run here"})


# --------------------------------------------------------------------------------------------
# Row 2: an existing output that is not a regular file is refused, never replaced
# --------------------------------------------------------------------------------------------

NON_REGULAR = ["fifo", "symlink", "dangling_symlink", "device", "directory"]


@pytest.mark.parametrize("what", NON_REGULAR)
@pytest.mark.parametrize("validate", [False, True])
def test_rewrite_refuses_an_output_that_is_not_a_regular_file(what, validate, model_file, tmp_path):
    out = tmp_path / "out.onnx"
    make_non_regular(out, what, tmp_path)
    before = digests(model_file)
    code, _, err = run(["rewrite", str(model_file), "-o", str(out)] + (["--validate"] if validate else []))
    assert code == 1
    line = one_line_error(err, "rewrite")
    assert str(out) in line
    assert kind(out) == what.replace("dangling_", "")
    if what == "symlink":
        assert (tmp_path / "victim.txt").read_text() == "not yours"
    assert digests(model_file) == before
    no_staging_left(tmp_path)


@pytest.mark.parametrize("what", ["fifo", "symlink", "device"])
def test_rewrite_refuses_a_data_file_that_is_not_a_regular_file(what, model_file, tmp_path):
    """The external data file written beside the output is an output too."""
    data = tmp_path / "out.onnx.data"
    make_non_regular(data, what, tmp_path)
    code, _, err = run(["rewrite", str(model_file), "-o", str(tmp_path / "out.onnx"), "--external-data", "yes"])
    assert code == 1 and str(data) in one_line_error(err, "rewrite")
    assert kind(data) == what and not (tmp_path / "out.onnx").exists()


def test_save_model_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match="not a regular file"):
        save_model(small_model(), fifo)
    assert kind(fifo) == "fifo"


@pytest.mark.parametrize("what", ["fifo", "symlink"])
def test_compare_refuses_an_output_that_is_not_a_regular_file(what, model_file, tmp_path, no_workers):
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    target = out_dir / ("model.im2win.onnx" if what == "fifo" else "report.json")
    make_non_regular(target, what, tmp_path)
    code, _, err = run([str(model_file), "--out", str(out_dir), "--no-progress", "--batch", "1"], compare.main)
    assert code == 1 and str(target) in one_line_error(err, "compare")
    assert kind(target) == what and [p.name for p in out_dir.iterdir()] == [target.name]


@pytest.mark.parametrize("what", ["fifo", "symlink", "device", "file"])
def test_triton_force_refuses_an_entry_that_is_not_a_directory(what, model_file, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    entry = repo / "model"
    if what == "symlink":  # to a directory elsewhere: --force would move the link and write in its place
        (tmp_path / "elsewhere").mkdir()
        entry.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    elif what == "file":
        entry.write_text("a file, not a model directory")
    else:
        make_non_regular(entry, what, tmp_path)
    code, _, err = run([str(model_file), "-o", str(repo), "--force"], triton.main)
    assert code == 1 and str(entry) in one_line_error(err, "triton-config")
    assert kind(entry) == what
    assert sorted(p.name for p in repo.iterdir()) == ["model"]


def test_models_export_refuses_an_output_that_is_not_a_regular_file(tmp_path):
    sys.path.append(str(ROOT))
    try:
        from models import export
    finally:
        sys.path.remove(str(ROOT))
    target = tmp_path / "alexnet.onnx"
    os.mkfifo(target)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = export.main(["alexnet", "--backend", "onnx", "--width", "0.0625", "--resolution", "64",
                            "--num-classes", "10", "--out", str(tmp_path)])
    assert code == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "not a regular file" in lines[0], lines
    assert kind(target) == "fifo"
    no_staging_left(tmp_path)


# --------------------------------------------------------------------------------------------
# Row 3: no output may be one of the input's files
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["output_is_data", "output_data_is_input_data", "output_data_is_input_model",
                                  "through_a_symlinked_directory", "hard_link_of_the_model"])
def test_rewrite_never_writes_over_the_inputs_files(case, tmp_path):
    source, data = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    extra = ["--external-data", "yes"]
    if case == "output_data_is_input_model":
        # The input model is itself named like the output's data file.
        source, data = tmp_path / "out.onnx.data", tmp_path / "weights.bin"
        save_with_data(small_model(), source, data.name)
        out = tmp_path / "out.onnx"
    elif case == "output_data_is_input_data":
        data = tmp_path / "shared.onnx.data"
        save_with_data(small_model(), source, data.name)
        out = tmp_path / "shared.onnx"  # its data file is shared.onnx.data, the input's
        extra = []  # auto: the input has external data, so the output does too
    else:
        save_with_data(small_model(), source, data.name)
        out = data
        if case == "through_a_symlinked_directory":
            (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
            out = tmp_path / "alias" / data.name
        elif case == "hard_link_of_the_model":  # (onnx refuses to read a data file with several links)
            out = tmp_path / "other.onnx"
            os.link(source, out)
    before = digests(source, data)
    code, _, err = run(["rewrite", str(source), "-o", str(out)] + extra)
    assert code == 1
    assert "input" in one_line_error(err, "rewrite")
    assert digests(source, data) == before
    load_model(source)  # still loads, with its own weights
    no_staging_left(tmp_path)


def test_rewrite_output_beside_the_input_with_its_own_data_file_is_fine(tmp_path):
    source = tmp_path / "m.onnx"
    save_with_data(small_model(), source, "m.onnx.data")
    before = digests(source, tmp_path / "m.onnx.data")
    assert run(["rewrite", str(source), "-o", str(tmp_path / "m2.onnx")])[0] == 0
    assert digests(source, tmp_path / "m.onnx.data") == before
    assert (tmp_path / "m2.onnx.data").is_file()


def test_compare_never_writes_over_the_inputs_data(tmp_path, no_workers):
    """compare writes STEM.im2win.onnx and its data file; the input's data file may have that name."""
    source = tmp_path / "m.onnx"
    data = tmp_path / "m.im2win.onnx.data"
    save_with_data(small_model(), source, data.name)
    before = digests(source, data)
    code, _, err = run([str(source), "--out", str(tmp_path), "--no-progress", "--batch", "1"], compare.main)
    assert code == 1 and "input" in one_line_error(err, "compare")
    assert digests(source, data) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.im2win.onnx.data", "m.onnx"]


def test_triton_force_never_removes_the_input(tmp_path):
    """Regenerating an entry from the model inside it: --force would delete the input with the old entry."""
    repo = tmp_path / "repo"
    source = tmp_path / "net.onnx"
    onnx.save(small_model(), str(source))
    assert run([str(source), "-o", str(repo)], triton.main)[0] == 0
    inside = repo / "net" / "1" / "model.onnx"
    before = digests(inside)
    code, _, err = run([str(inside), "-o", str(repo), "--name", "net", "--force"], triton.main)
    assert code == 1 and "input" in one_line_error(err, "triton-config")
    assert digests(inside) == before


# --------------------------------------------------------------------------------------------
# Rows 6 and 7: graph passes linear in the model's size, no recursion over the node list
# --------------------------------------------------------------------------------------------

def conv_chain(n: int, channels=4, size=4, order="listed", activations=True) -> onnx.ModelProto:
    """n x (Conv -> BatchNormalization -> Relu), nodes listed in order, reversed or shuffled."""
    rng = np.random.default_rng(n)
    nodes, inits, prev = [], [], "x"
    for i in range(n):
        inits += [numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.3).astype(np.float32),
                                          f"w{i}"),
                  numpy_helper.from_array((rng.random(channels) + 0.5).astype(np.float32), f"s{i}"),
                  numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, f"b{i}"),
                  numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, f"m{i}"),
                  numpy_helper.from_array((rng.random(channels) + 0.5).astype(np.float32), f"v{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        prev = f"c{i}"
        if activations:
            nodes += [helper.make_node("BatchNormalization", [prev, f"s{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"],
                                       name=f"bn{i}"),
                      helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}")]
            prev = f"r{i}"
    if order == "reversed":
        nodes = nodes[::-1]
    elif order == "shuffled":  # the last node first, so that a depth-first sort starts with the whole chain
        nodes = [nodes[-1]] + [nodes[i] for i in rng.permutation(len(nodes) - 1)]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in inits if t.name in used]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             ["N", channels, size, size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def assert_topological(model: onnx.ModelProto) -> None:
    position = {o: i for i, node in enumerate(model.graph.node) for o in node.output}
    for i, node in enumerate(model.graph.node):
        assert all(position.get(name, -1) < i for name in node.input), node.name


def _rewrite_seconds(model, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        rewritten, report = rewrite_with_report(model, plan="heuristic")
        best = min(best, time.perf_counter() - start)
    assert len(report.replaced) == len(report.fused) // 2 == len(rewritten.graph.node)
    return best


def test_rewrite_time_grows_about_linearly_with_the_conv_count():
    """8x the Convs: linear passes take about 8x the time, quadratic ones 64x. The bound leaves a
    factor of 3 for a noisy machine (the best of two runs each)."""
    small, large = 50, 400
    t_small = _rewrite_seconds(conv_chain(small), 2)
    t_large = _rewrite_seconds(conv_chain(large), 2)
    ratio = t_large / t_small
    assert ratio < 24, f"{small} convs {t_small:.2f} s, {large} convs {t_large:.2f} s: x{ratio:.1f}"


def _ort_output(model: onnx.ModelProto, x: np.ndarray, rewritten=False) -> np.ndarray:
    from im2win_ort import InferenceSession

    if rewritten:
        return InferenceSession(model, rewrite=False).run(None, {"x": x})[0]
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_a_long_graph_listed_out_of_order_is_rewritten(order):
    """1,100 Conv nodes whose list order is not topological; ORT runs them, and so does the rewrite."""
    n = 1100
    model = conv_chain(n, channels=2, size=3, order=order, activations=False)
    rewritten, report = rewrite_with_report(model, plan="heuristic")
    assert len(report.replaced) == n and len(rewritten.graph.node) == n
    assert_topological(rewritten)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    want, got = _ort_output(model, x), _ort_output(rewritten, x, rewritten=True)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(want).max())))


def test_a_long_unsorted_chain_through_the_cli(tmp_path):
    source, out = tmp_path / "long.onnx", tmp_path / "long.im2win.onnx"
    onnx.save(conv_chain(1200, channels=2, size=3, order="reversed", activations=False), str(source))
    code, stdout, err = run(["rewrite", str(source), "-o", str(out), "--plan", "heuristic"])
    assert code == 0, err
    assert "1200 Conv node(s) on com.im2win::Conv" in stdout
    assert_topological(onnx.load(str(out)))


def test_a_long_cycle_is_one_error():
    nodes = [helper.make_node("Neg", [f"v{(i - 1) % 1500}"], [f"v{i}"], name=f"neg{i}") for i in range(1500)]
    nodes.append(helper.make_node("Add", ["x", "v0"], ["y"], name="add"))
    graph = helper.make_graph(nodes, "cycle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(RewriteError, match="cycle"):
        rewrite_with_report(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


# --------------------------------------------------------------------------------------------
# Row 8: external data wherever ONNX can keep it, model-local functions included
# --------------------------------------------------------------------------------------------

def function_model(subgraph: bool = False) -> onnx.ModelProto:
    """Conv -> local.Shift, a model-local function that adds a constant: in a Constant node's
    tensor, or (subgraph) in the initializer of an If branch inside the function."""
    base = small_model(channels=16)
    shift = np.linspace(-1, 1, 16 * 64, dtype=np.float32).reshape(1, 16, 8, 8)
    if subgraph:
        branch = helper.make_graph([helper.make_node("Identity", ["k"], ["kk"])], "branch", [],
                                   [helper.make_tensor_value_info("kk", TensorProto.FLOAT, None)],
                                   [numpy_helper.from_array(shift, "k")])
        body = [helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(np.array(True), "t")),
                helper.make_node("If", ["t"], ["k_out"], then_branch=branch, else_branch=branch),
                helper.make_node("Add", ["a", "k_out"], ["b"])]
    else:
        body = [helper.make_node("Constant", [], ["k_out"], value=numpy_helper.from_array(shift, "k")),
                helper.make_node("Add", ["a", "k_out"], ["b"])]
    function = helper.make_function("local", "Shift", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    graph = base.graph
    graph.node[-1].output[0] = "r"
    graph.node.append(helper.make_node("Shift", ["r"], ["y"], domain="local", name="shift"))
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8]))
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                      functions=[function])


def _function_tensors(model):
    for f in model.functions:
        for node in f.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from a.g.initializer


def externalize(tensor: TensorProto, directory: Path, location: str) -> None:
    """Moves one tensor's bytes to directory/location (appended), as ONNX's external data."""
    raw = numpy_helper.to_array(tensor).tobytes()
    path = directory / location
    offset = path.stat().st_size if path.exists() else 0
    with open(path, "ab") as f:
        f.write(raw)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


@pytest.mark.parametrize("subgraph", [False, True])
def test_external_data_in_a_function_is_checked_and_loaded(subgraph, tmp_path):
    model = function_model(subgraph)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    shifts = [t for t in _function_tensors(model) if t.data_type == TensorProto.FLOAT]
    assert len(shifts) == (2 if subgraph else 1)  # the If's two branches
    for tensor in shifts:
        externalize(tensor, tmp_path, "function.bin")
    source = tmp_path / "f.onnx"
    onnx.save(model, str(source))

    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    out = elsewhere / "f.im2win.onnx"
    assert run(["rewrite", str(source), "-o", str(out)])[0] == 0
    rewritten = onnx.load(str(out))
    assert all(t.data_location != TensorProto.EXTERNAL for t in _function_tensors(rewritten))
    got = _ort_output(rewritten, x, rewritten=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

    (tmp_path / "function.bin").unlink()
    out.unlink()
    code, _, err = run(["rewrite", str(source), "-o", str(out)])
    assert code == 1 and "function.bin" in one_line_error(err, "rewrite")
    assert not out.exists()


def test_external_tensors_in_a_tensors_attribute_and_a_sparse_initializer(tmp_path):
    """Tensors ONNX can keep outside the model in any graph: a TENSORS attribute and a sparse initializer."""
    values = numpy_helper.from_array(np.arange(300, dtype=np.float32), "sv")
    indices = numpy_helper.from_array(np.arange(300, dtype=np.int64) * 2, "si")
    sparse = helper.make_sparse_tensor(values, indices, [600])
    listed = numpy_helper.from_array(np.ones(400, np.float32), "listed")
    node = helper.make_node("Custom", ["x"], ["y"], domain="example", name="custom")
    node.attribute.append(helper.make_attribute("tables", [listed]))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    graph.sparse_initializer.append(sparse)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example", 1)])
    externalize(model.graph.sparse_initializer[0].values, tmp_path, "sparse.bin")
    externalize(model.graph.node[0].attribute[0].tensors[0], tmp_path, "listed.bin")
    source = tmp_path / "s.onnx"
    onnx.save(model, str(source))
    loaded = load_model(source)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.sparse_initializer[0].values),
                                  np.arange(300, dtype=np.float32))
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.node[0].attribute[0].tensors[0]),
                                  np.ones(400, np.float32))
    for name in ("sparse.bin", "listed.bin"):
        moved = tmp_path / name
        moved.rename(tmp_path / "away")
        with pytest.raises(ModelError, match=name):
            load_model(source)
        (tmp_path / "away").rename(moved)


# --------------------------------------------------------------------------------------------
# Rows 10 and 11: one check for the numbers and names of every command, before anything is written
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["model\n", "\nmodel", "model\r\n", "a" * 201, "a" * 300, "b" * 10000, "mod\u00e8l",
                                  "model\x00"], ids=["newline", "leading_newline", "crlf", "201_chars", "300_chars",
                                                      "10000_chars", "non_ascii", "nul"])
def test_triton_refuses_a_bad_name_in_one_line(name, model_file, tmp_path):
    repo = tmp_path / "repo"
    code, _, err = run([str(model_file), "-o", str(repo), "--name", name], triton.main)
    assert code == 1
    one_line_error(err, "triton-config")
    assert not repo.exists()


def test_triton_names_from_the_file_name_are_checked_too(tmp_path):
    source = tmp_path / "net\n.onnx"
    onnx.save(small_model(), str(source))
    code, _, err = run([str(source), "-o", str(tmp_path / "repo")], triton.main)
    assert code == 1 and "name" in one_line_error(err, "triton-config")
    assert not (tmp_path / "repo").exists()


def test_triton_takes_the_longest_name_allowed(model_file, tmp_path):
    code, _, err = run([str(model_file), "-o", str(tmp_path / "repo"), "--name", "n" * 200], triton.main)
    assert code == 0, err
    assert (tmp_path / "repo" / ("n" * 200) / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("option, value", [("--version", str(2**63)), ("--max-batch-size", str(2**31)),
                                           ("--instances", str(2**31)), ("--threads", str(2**31)),
                                           ("--version", "-3"), ("--threads", "0")])
def test_triton_refuses_numbers_out_of_range(option, value, model_file, tmp_path):
    repo = tmp_path / "repo"
    code, _, err = run([str(model_file), "-o", str(repo), option, value], triton.main)
    assert code == 1 and option in one_line_error(err, "triton-config")
    assert not repo.exists()


@pytest.mark.parametrize("args, option", [
    (["--timeout", "nan"], "--timeout"), (["--timeout", "-1"], "--timeout"), (["--timeout", "0"], "--timeout"),
    (["--timeout", "inf"], "--timeout"), (["--timeout", "1e300"], "--timeout"),
    (["--tolerance", "nan"], "--tolerance"), (["--tolerance", "-0.5"], "--tolerance"),
    (["--tolerance", "inf"], "--tolerance"),
    (["--batch", "1000000000"], "--batch"), (["--batch", "2,99999999999999999999"], "--batch"),
    (["--threads", "1,99999999999999999999"], "--threads"), (["--runs", str(2**64)], "--runs"),
    (["--input-shape", "x=Nx3x100000x100000"], "--input-shape"), (["--input-shape", "x=Nx3x\u00b2x8"], "--input-shape"),
    (["--input-shape", "x=Nx3x8x8", "--batch", "100000000"], "--batch"),
])
def test_compare_refuses_bad_numbers_before_writing(args, option, tmp_path, no_workers):
    """Numbers no run can take: nothing is written, not even the report directory. H and W are
    symbolic, so that --input-shape sizes them."""
    model = small_model()
    for i, name in ((2, "H"), (3, "W")):
        for value in (model.graph.input[0], model.graph.output[0]):
            value.type.tensor_type.shape.dim[i].dim_param = name
    model_file = tmp_path / "model.onnx"
    onnx.save(model, str(model_file))
    if "--input-shape" not in args:
        args = args + ["--input-shape", "x=Nx3x8x8"]
    out_dir = tmp_path / "report"
    code, _, err = run([str(model_file), "--out", str(out_dir), "--no-progress", "--no-torch"] + args, compare.main)
    assert code == 1
    assert option in one_line_error(err, "compare")
    assert not out_dir.exists()


def test_compare_with_good_numbers_still_runs(model_file, tmp_path, no_workers):
    out_dir = tmp_path / "report"
    code, _, err = run([str(model_file), "--out", str(out_dir), "--no-progress", "--no-torch", "--batch", "1,2",
                        "--timeout", "30", "--tolerance", "0.01"], compare.main)
    assert code == 1 and "configuration(s) failed" in err  # the workers were not run
    assert (out_dir / "model.im2win.onnx").is_file() and (out_dir / "report.json").is_file()
