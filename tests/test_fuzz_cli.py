"""Fuzzing the command line: argument lists for `rewrite`, `triton-config` and `compare`, and
malformed or odd model files for `rewrite`.

Hypothesis draws the arguments from what a careless user or an attacker would type: numbers at
the edges (nan, inf, -1, 0, 2^31, 2^64, '1_000', Unicode digits), names with newlines and 300
characters, and paths that are FIFOs, symbolic links, directories, missing, or the input's own
files. Model files are random bytes, a valid model cut short or with bytes changed, or a model
built from odd parts (nodes out of order or in a cycle, Convs with missing or wrong-typed inputs
and attributes, tensors of unknown types or the wrong size, external data that is missing, outside
the model's directory or out of bounds, functions, subgraphs). Each example runs in a fresh
directory (its working directory too). The rules: the command exits 0, or 1 with one line on
stderr (2 with argparse's usage for arguments it cannot parse), never with a traceback; the
input model and its data file keep their bytes, a FIFO, link or directory stays what it was, and
a staging file is never left behind. compare's measuring processes are not started (what it
reads and writes is under test, not its numbers).

The run is seeded (derandomized) as tests/test_fuzz.py's: IM2WIN_FUZZ_CLI_EXAMPLES sets how many
argument lists each command gets (default 100; the model files get three times as many, being
cheaper), IM2WIN_FUZZ_SEED another seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from im2win_ort._ir_version import make_model
from im2win_ort.cli import main
from im2win_ort.measure import compare

from helpers import conv_relu_model

EXAMPLES = int(os.environ.get("IM2WIN_FUZZ_CLI_EXAMPLES", "100"))
SEED = int(os.environ.get("IM2WIN_FUZZ_SEED", "20261126"))
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, derandomize="IM2WIN_FUZZ_SEED" not in os.environ,
                suppress_health_check=list(HealthCheck), database=None)
# tempfile's staging names: PREFIX + 8 characters of [a-z0-9_] (+ ".tmp" for files).
STAGING = re.compile(r"^\..+\.[a-z0-9_]{8}(\.tmp)?$")


# --------------------------------------------------------------------------------------------
# The workspace every example starts from
# --------------------------------------------------------------------------------------------

def _conv_model(channels=4, size=6) -> onnx.ModelProto:
    return conv_relu_model(channels, size, seed=5)


MODEL_BYTES = _conv_model().SerializeToString()


def _external_model() -> tuple[bytes, bytes]:
    """(model bytes, data bytes) of _conv_model with W in ext.onnx.data."""
    model = onnx.ModelProto.FromString(MODEL_BYTES)
    w = model.graph.initializer[0]
    raw = numpy_helper.to_array(w).tobytes()
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "ext.onnx.data"), ("offset", "0"), ("length", str(len(raw)))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString(), raw


EXT_BYTES, EXT_DATA = _external_model()


def make_workspace(root: Path) -> dict[str, Path]:
    """Named paths in `root`: models, a FIFO, links, a directory, missing paths and plain files."""
    paths = {name: root / name for name in ("model.onnx", "ext.onnx", "ext.onnx.data", "notes.txt", "fifo",
                                            "link", "dangling", "adir", "victim.txt", "inputs.npz", "missing.onnx",
                                            "out.onnx")}
    paths["model.onnx"].write_bytes(MODEL_BYTES)
    paths["ext.onnx"].write_bytes(EXT_BYTES)
    paths["ext.onnx.data"].write_bytes(EXT_DATA)
    paths["notes.txt"].write_text("not a model\n")
    paths["victim.txt"].write_text("not yours\n")
    os.mkfifo(paths["fifo"])
    paths["link"].symlink_to(paths["victim.txt"])
    paths["dangling"].symlink_to(root / "nowhere" / "x")
    paths["adir"].mkdir()
    np.savez(paths["inputs.npz"], x=np.ones((1, 3, 6, 6), np.float32))
    paths["nested"] = root / "no" / "such" / "dir" / "out.onnx"
    return paths


def snapshot(root: Path) -> dict[str, tuple]:
    """Kind and (for regular files) digest of everything under root, links not followed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode) else None
            state[str(path.relative_to(root))] = (stat.S_IFMT(mode), digest)
    return state


def run_in(root: Path, argv: list[str], entry=main) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)  # defaults (MODEL.im2win.onnx, ./im2win-compare-STEM) land in the example's directory
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(argv)
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def check_exit(code, err: str, argv) -> None:
    assert "Traceback" not in err, (argv, err)
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 2:  # argparse: its usage, then one error line
        assert lines and lines[0].startswith("usage:") and re.match(r"^[\w .-]+: error: ", lines[-1]), (argv, err)
        return
    assert code in (0, 1), (argv, code, err)
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("im2win-ort "), (argv, err)


def check_untouched(before: dict, after: dict, protected: list[str], argv) -> None:
    """The protected files keep their bytes; nothing that was not a regular file changed kind or
    went away; no staging file is left."""
    for name in protected:
        assert after.get(name) == before[name], (argv, name)
    for name, (kind, _) in before.items():
        if kind != stat.S_IFREG:
            assert name in after and after[name][0] == kind, (argv, name)
    left = [name for name in after if STAGING.match(Path(name).name) and name not in before]
    assert not left, (argv, left)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

ODD_NUMBERS = ["nan", "-nan", "inf", "-inf", "-1", "0", "1", "2", "0.5", "1e308", "1e-320", "-0", "2147483647",
               "2147483648", "9223372036854775808", "18446744073709551616", "99999999999999999999", "1_000",
               "\u00b2", "\u0661\u0662", " 3", "0x10", "", "1,2", "1,,2", ",", "1e3", "3.0"]
numbers = st.one_of(st.sampled_from(ODD_NUMBERS), st.integers(-2**66, 2**66).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
# argv cannot hold NUL; everything else can.
names = st.one_of(st.sampled_from(["model\n", "\nmodel", "a" * 300, "n" * 200, "n" * 201, ".hidden", "-dash", "ok",
                                   "../up", "a/b", "mod\u00e8l", " ", ""]),
                  st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
WORKSPACE_PATHS = ["model.onnx", "ext.onnx", "ext.onnx.data", "notes.txt", "fifo", "link", "dangling", "adir",
                   "missing.onnx", "out.onnx", "nested", "inputs.npz", "."]


@st.composite
def paths(draw):
    """A key of make_workspace, or a fresh (odd) name in the workspace: never a path outside it."""
    if draw(st.booleans()):
        return ("key", draw(st.sampled_from(WORKSPACE_PATHS)))
    return ("new", draw(st.text(st.characters(blacklist_characters="\x00/", blacklist_categories=("Cs",)),
                                min_size=1, max_size=30)))


def resolve(token, ws: dict[str, Path], root: Path) -> str:
    kind, value = token
    if kind == "key":
        return str(root) if value == "." else str(ws[value])
    return str(root / value)


def _flags(draw, spec: dict) -> list:
    """Some options of `spec` (option -> strategy of values, or None for a flag), in a drawn order."""
    chosen = draw(st.lists(st.sampled_from(sorted(spec)), max_size=5))
    argv = []
    for option in chosen:
        strategy = spec[option]
        argv += [option] if strategy is None else [option, draw(strategy)]
    return argv


@st.composite
def rewrite_args(draw):
    spec = {"-o": paths(), "--validate": None, "--inputs": paths(), "--tolerance": numbers,
            "--skip-pointwise": None, "--skip-depthwise": None, "--no-prepack": None,
            "--plan": st.sampled_from(["measure", "heuristic", "fastest", ""]), "--report": None,
            "--external-data": st.sampled_from(["auto", "yes", "no", "maybe"])}
    model = draw(st.sampled_from(["model.onnx", "ext.onnx", "ext.onnx", "notes.txt", "fifo", "adir", "missing.onnx",
                                  "link"]))
    return ["rewrite", ("key", model)] + _flags(draw, spec)


@st.composite
def triton_args(draw):
    repo = draw(st.one_of(st.just(("new", "repo")), paths()))
    spec = {"--name": names, "--max-batch-size": numbers, "--library-path": names, "--version": numbers,
            "--instances": numbers, "--threads": numbers, "--dynamic-batching": None, "--validate": None,
            "--force": None}
    model = draw(st.sampled_from(["model.onnx", "ext.onnx", "notes.txt", "fifo", "missing.onnx"]))
    return ["triton-config", ("key", model), "-o", repo] + _flags(draw, spec)


@st.composite
def compare_args(draw):
    shapes = st.one_of(st.sampled_from(["x=Nx3x6x6", "x=Nx3x6", "x=1x3x6x6", "y=Nx3x6x6", "x=", "=Nx3",
                                        "x=Nx3x\u00b2x6", "x=Nx3x99999x99999", "x=NxNx6x6"]), names)
    configs = st.one_of(st.sampled_from(["ort_all", "im2win,ort_all", "tvm", ",", "torch_onednn"]), names)
    spec = {"--batch": numbers, "--threads": numbers, "--runs": numbers, "--warmup": numbers, "--out": paths(),
            "--no-arena": None, "--input-shape": shapes, "--configs": configs, "--tolerance": numbers,
            "--timeout": numbers}
    model = draw(st.sampled_from(["model.onnx", "ext.onnx", "notes.txt", "fifo", "missing.onnx"]))
    # --no-torch: PyTorch's twin is another test's subject; --no-progress: stderr holds only messages.
    return ["compare", ("key", model), "--no-torch", "--no-progress"] + _flags(draw, spec)


def run_cli_case(argv_tokens, protected_inputs=True):
    with tempfile.TemporaryDirectory(prefix="im2win-fuzz-") as tmp:
        root = Path(tmp)
        ws = make_workspace(root)
        argv = [resolve(a, ws, root) if isinstance(a, tuple) else a for a in argv_tokens]
        before = snapshot(root)
        code, _, err = run_in(root, argv)
        check_exit(code, err, argv)
        model = Path(argv[1]).name
        protected = ["victim.txt"] + ([model] if model in ("model.onnx", "ext.onnx") else []) + \
                    (["ext.onnx.data"] if model == "ext.onnx" else [])
        check_untouched(before, snapshot(root), protected, argv)


@pytest.fixture
def no_workers(monkeypatch):
    monkeypatch.setattr(compare, "run_worker", lambda spec, scratch, timeout=None: {"error": "not run here"})


def test_rewrite_arguments():
    @seed(SEED)
    @settings(**SETTINGS)
    @given(rewrite_args())
    def run(argv):
        run_cli_case(argv)

    run()


def test_triton_config_arguments():
    @seed(SEED)
    @settings(**SETTINGS)
    @given(triton_args())
    def run(argv):
        run_cli_case(argv)

    run()


def test_compare_arguments(no_workers):
    @seed(SEED)
    @settings(**SETTINGS)
    @given(compare_args())
    def run(argv):
        run_cli_case(argv)

    run()


# --------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------

def _tensor(draw, name: str) -> TensorProto:
    """A small tensor, sometimes odd: another element type, the wrong byte count, unknown type, external."""
    shape = draw(st.sampled_from([[4, 3, 3, 3], [4, 3, 1, 1], [4], [4, 1, 3, 3], [], [0, 3, 3, 3], [4, 3, 3]]))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float32, np.float64, np.float16, np.int64]))
    t = numpy_helper.from_array(np.full(shape, 0.25, dtype), name)
    oddity = draw(st.sampled_from(["none"] * 6 + ["short", "type0", "type999", "string", "external"]))
    if oddity == "short":
        t.raw_data = t.raw_data[: len(t.raw_data) // 2]
    elif oddity == "type0":
        t.data_type = 0
    elif oddity == "type999":
        t.data_type = 999
    elif oddity == "string":
        t.data_type = TensorProto.STRING
    elif oddity == "external":
        location = draw(st.sampled_from(["w.bin", "missing.bin", "/etc/hostname", "../w.bin", "", "m.onnx",
                                         "fifo", "adir", "w.bin"]))
        offset = draw(st.sampled_from(["0", "4", "999999", "-1", "x"]))
        length = draw(st.sampled_from([str(len(t.raw_data)), "0", "999999", "-4", "y", None]))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            if value is not None:
                entry = t.external_data.add()
                entry.key, entry.value = key, value
    return t


def _attributes(draw) -> list:
    attrs = []
    for key, good in (("pads", [1, 1, 1, 1]), ("strides", [1, 1]), ("dilations", [1, 1]), ("group", 1),
                      ("kernel_shape", [3, 3]), ("auto_pad", "NOTSET")):
        choice = draw(st.sampled_from(["absent", "absent", "good", "odd"]))
        if choice == "good":
            attrs.append(helper.make_attribute(key, good))
        elif choice == "odd":
            value = draw(st.sampled_from([0, -1, 2**62, [0, 0], [1, 2, 3], [-(2**63)], 1.5, "SAME", b"\xff", [],
                                          [2**31, 1]]))
            attrs.append(helper.make_attribute(key, value, attr_type=AttributeProto.INTS if value == [] else None))
    return attrs


@st.composite
def odd_models(draw):
    """(model bytes, {file name: bytes} beside it)."""
    kind = draw(st.sampled_from(["bytes", "mutated", "built", "built", "built", "built"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), {}
    if kind == "mutated":
        data = bytearray(MODEL_BYTES)
        cut = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data = data[:cut]
        for _ in range(draw(st.integers(0, 4))):
            if data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] = draw(st.integers(0, 255))
        return bytes(data), {}

    # Built: a few Convs and their neighbours, with odd parts.
    nodes, inits, prev = [], [], "x"
    for i in range(draw(st.integers(1, 4))):
        n_inputs = draw(st.sampled_from([3, 3, 3, 2, 1, 0, 4]))
        names_in = [prev, f"w{i}", f"b{i}", "x"][:n_inputs]
        node = helper.make_node("Conv", names_in, [f"c{i}"], name=draw(st.sampled_from([f"conv{i}", "", "conv0"])))
        node.attribute.extend(_attributes(draw))
        nodes.append(node)
        if n_inputs > 1 and draw(st.integers(0, 5)):
            inits.append(_tensor(draw, f"w{i}"))
        if n_inputs > 2 and draw(st.integers(0, 5)):
            inits.append(_tensor(draw, f"b{i}"))
        prev = f"c{i}"
        follow = draw(st.sampled_from([None, "Relu", "BatchNormalization", "Add", "Mul", "Clip", "Identity"]))
        if follow == "BatchNormalization":
            for p in "smbv":
                inits.append(_tensor(draw, f"{p}{i}"))
            nodes.append(helper.make_node(follow, [prev, f"s{i}", f"b{i}x", f"m{i}", f"v{i}"], [f"f{i}"]))
            inits.append(_tensor(draw, f"b{i}x"))
        elif follow in ("Add", "Mul"):
            inits.append(_tensor(draw, f"k{i}"))
            nodes.append(helper.make_node(follow, [prev, draw(st.sampled_from([f"k{i}", prev, "x"]))], [f"f{i}"]))
        elif follow is not None:
            nodes.append(helper.make_node(follow, [prev], [f"f{i}"]))
        if follow is not None:
            prev = f"f{i}"
    order = draw(st.sampled_from(["listed", "listed", "reversed", "cycle", "duplicate", "dangling"]))
    if order == "reversed":
        nodes = nodes[::-1]
    elif order == "cycle" and nodes[0].input:
        nodes[0].input[0] = prev
    elif order == "duplicate" and len(nodes) > 1:
        nodes[1].output[0] = nodes[0].output[0]
    elif order == "dangling":
        nodes[-1].input.append("nobody_makes_this")
    x_dims = draw(st.sampled_from([["N", 3, 6, 6], [1, 3, 6, 6], None, ["N", 3, "H", "W"], [1, 3, 6]]))
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    opset = draw(st.sampled_from([17, 17, 11, 7, 1, 10000]))
    imports = [helper.make_opsetid("", opset)] if draw(st.integers(0, 6)) else [helper.make_opsetid("other", 1)]
    functions = []
    if draw(st.integers(0, 3)) == 0:  # a model-local function, with a tensor that may be external
        value = _tensor(draw, "fk")
        body = [helper.make_node("Constant", [], ["k"], value=value), helper.make_node("Add", ["a", "k"], ["b"])]
        functions.append(helper.make_function("local", "Shift", ["a"], ["b"], body, [helper.make_opsetid("", 17)]))
        graph.node.append(helper.make_node("Shift", [prev], ["shifted"], domain="local"))
        graph.output[0].name = "shifted"
        imports.append(helper.make_opsetid("local", 1))
    model = make_model(graph, opset_imports=imports, functions=functions)
    model.ir_version = draw(st.sampled_from([model.ir_version] * 4 + [0, 3, 100]))
    beside = {"w.bin": b"\x00" * draw(st.sampled_from([0, 8, 4096]))}
    return model.SerializeToString(), beside


def test_odd_model_files_are_rewritten_or_refused_in_one_line():
    @seed(SEED)
    @settings(**{**SETTINGS, "max_examples": 3 * EXAMPLES})
    @given(odd_models(), st.sampled_from([[], ["--validate"], ["--plan", "heuristic"], ["--external-data", "yes"]]))
    def run(case, options):
        data, beside = case
        with tempfile.TemporaryDirectory(prefix="im2win-fuzz-") as tmp:
            root = Path(tmp)
            (root / "m.onnx").write_bytes(data)
            for name, content in beside.items():
                (root / name).write_bytes(content)
            os.mkfifo(root / "fifo")  # a data file that is a FIFO would block a reader
            (root / "adir").mkdir()
            before = snapshot(root)
            out = root / "out" / "m.im2win.onnx"
            out.parent.mkdir()
            argv = ["rewrite", str(root / "m.onnx"), "-o", str(out)] + options
            code, _, err = run_in(root, argv)
            check_exit(code, err, argv)
            after = snapshot(root)
            check_untouched(before, after, [n for n, (k, _) in before.items() if k == stat.S_IFREG], argv)
            if code == 0:  # the output is complete: it loads, with its external data
                onnx.load(str(out))
            else:
                assert not out.exists() and not (out.parent / (out.name + ".data")).exists()

    run()
