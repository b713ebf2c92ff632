"""Deploying: `im2win-ort triton-config` (a Triton model repository whose config parses as Triton's
ModelConfig text format and whose model runs in ORT with the library, matching ORT's own Conv), and the
Ray Data example (a local Ray with 2 CPUs, every output checked against ORT's own Conv)."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from im2win_ort._ir_version import make_model
from im2win_ort.deploy import triton

from helpers import small_net

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "small.onnx"
    onnx.save_model(small_net(), str(path))
    return path


# --------------------------------------------------------------------------------------------
# A parser of protobuf's text format (what config.pbtxt is), strict enough to reject malformed text:
# message := field*; field := NAME (":" value | ":"? "{" message "}"); value := scalar | list.
# Each message becomes {field: [values]} (every field may repeat).
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\\n]|\\.)*")|(-?\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|([{}\[\]:,]))')


def _tokens(text: str):
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        assert m, f"cannot tokenize config.pbtxt at {text[pos:pos + 30]!r}"
        pos = m.end()
        if m.group(1) is None:
            out.append(m.group(0).strip())
    return out


def _unquote(token: str) -> str:
    raw, out, i = token[1:-1], bytearray(), 0
    while i < len(raw):
        if raw[i] == "\\":
            if raw[i + 1] in "01234567":
                out.append(int(raw[i + 1:i + 4], 8))
                i += 4
                continue
            out += {"n": b"\n", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'"}[raw[i + 1]]
            i += 2
        else:
            out += raw[i].encode()
            i += 1
    return out.decode("utf-8")


def parse_pbtxt(text: str) -> dict:
    tokens = _tokens(text)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take(expected=None):
        nonlocal pos
        token = tokens[pos]
        assert expected is None or token == expected, f"expected {expected!r}, got {token!r}"
        pos += 1
        return token

    def scalar():
        token = take()
        if token.startswith('"'):
            return _unquote(token)
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        assert re.fullmatch(r"[A-Za-z_]\w*", token), f"bad value {token!r}"
        return token  # an enum value

    def message(end):
        fields: dict[str, list] = {}
        while peek() != end:
            name = take()
            assert re.fullmatch(r"[A-Za-z_]\w*", name), f"bad field name {name!r}"
            colon = peek() == ":"
            if colon:
                take(":")
            if peek() == "{":
                take("{")
                fields.setdefault(name, []).append(message("}"))
                take("}")
            elif peek() == "[":
                take("[")
                while peek() != "]":
                    if peek() == "{":
                        take("{")
                        fields.setdefault(name, []).append(message("}"))
                        take("}")
                    else:
                        fields.setdefault(name, []).append(scalar())
                    if peek() == ",":
                        take(",")
                    else:
                        assert peek() == "]", f"expected ',' or ']', got {peek()!r}"
                take("]")
                fields.setdefault(name, [])  # "dims: [ ]" is an empty repeated field
            else:
                assert colon, f"field {name} needs ':' before a scalar"
                fields.setdefault(name, []).append(scalar())
        return fields

    parsed = message(None)
    assert pos == len(tokens)
    return parsed


def _one(fields, name):
    (value,) = fields[name]
    return value


def _triton_model_config():
    """Triton's own ModelConfig message, when tritonclient is installed (not a dependency)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except Exception:  # not installed, or its generated code does not match the installed protobuf
        return None
    return model_config_pb2


# --------------------------------------------------------------------------------------------
# triton-config
# --------------------------------------------------------------------------------------------

def test_repository_layout_config_and_model(model_file, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert triton.main([str(model_file), "-o", str(repo)]) == 0
    assert "wrote" in capsys.readouterr().out
    entry = repo / "small"
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*")) == \
        ["1", "1/model.onnx", "config.pbtxt", "libim2win_ort.so"]
    assert filecmp.cmp(entry / "libim2win_ort.so", im2win_ort.get_library_path(), shallow=False)
    assert not [p for p in repo.iterdir() if p.name.startswith(".")], "staging directory left behind"

    text = (entry / "config.pbtxt").read_text()
    config = parse_pbtxt(text)
    assert set(config) == {"name", "backend", "max_batch_size", "input", "output", "instance_group", "model_operations"}
    assert _one(config, "name") == "small"
    assert _one(config, "backend") == "onnxruntime"
    assert _one(config, "max_batch_size") == 8  # every first dimension is symbolic
    (x,) = config["input"]
    assert x == {"name": ["x"], "data_type": ["TYPE_FP32"], "dims": [3, 16, 16]}  # batch left to Triton
    (y,) = config["output"]
    assert y == {"name": ["logits"], "data_type": ["TYPE_FP32"], "dims": [8]}
    assert config["instance_group"] == [{"count": [1], "kind": ["KIND_CPU"]}]
    assert _one(config, "model_operations") == {"op_library_filename": ["/models/small/libim2win_ort.so"]}

    pb2 = _triton_model_config()
    if pb2 is not None:  # the exact schema: Triton's own ModelConfig parses it
        from google.protobuf import text_format

        parsed = text_format.Parse(text, pb2.ModelConfig())
        assert parsed.backend == "onnxruntime" and parsed.max_batch_size == 8
        assert [(i.name, pb2.DataType.Name(i.data_type), list(i.dims)) for i in parsed.input] == \
            [("x", "TYPE_FP32", [3, 16, 16])]
        assert [(o.name, list(o.dims)) for o in parsed.output] == [("logits", [8])]
        assert list(parsed.model_operations.op_library_filename) == ["/models/small/libim2win_ort.so"]
        assert parsed.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU

    # The model Triton would load: every Conv on com.im2win::Conv, running with the library that the
    # repository holds, and matching the original on ORT's own Conv.
    rewritten = onnx.load(str(entry / "1" / "model.onnx"))
    assert [n.op_type for n in rewritten.graph.node if n.domain == im2win_ort.DOMAIN] == ["Conv"] * 3
    assert not any(n.op_type == "Conv" and n.domain in ("", "ai.onnx") for n in rewritten.graph.node)
    assert rewritten.ir_version <= onnx.load(str(model_file)).ir_version
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(entry / "libim2win_ort.so"))
    ours = ort.InferenceSession(str(entry / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    x_value = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    (got,) = ours.run(None, {"x": x_value})
    (want,) = ref.run(None, {"x": x_value})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_options_fixed_batch_symbolic_dims_and_odd_names(tmp_path):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ['in "0"', "w"], ["out\\1"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info('in "0"', TensorProto.FLOAT, [1, 2, "H", "W"])],
                              [helper.make_tensor_value_info("out\\1", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "fixed.onnx"
    onnx.save_model(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    repo = tmp_path / "repo"

    # A fixed first dimension cannot be Triton's batch.
    assert triton.main([str(path), "-o", str(repo), "--max-batch-size", "4"]) == 1
    assert not repo.exists() or not any(repo.iterdir())

    assert triton.main([str(path), "-o", str(repo), "--name", "conv.v2",
                        "--library-path", "/opt/im2win/libim2win_ort.so", "--version", "3",
                        "--instances", "2", "--threads", "4", "--dynamic-batching"]) == 0
    entry = repo / "conv.v2"
    assert (entry / "3" / "model.onnx").is_file()
    config = parse_pbtxt((entry / "config.pbtxt").read_text())
    assert _one(config, "max_batch_size") == 0  # the default when the first dimension is fixed
    (x,) = config["input"]
    assert x == {"name": ['in "0"'], "data_type": ["TYPE_FP32"], "dims": [1, 2, -1, -1]}
    (y,) = config["output"]  # shape inference filled in the output's shape: H and W stay symbolic
    assert y == {"name": ["out\\1"], "data_type": ["TYPE_FP32"], "dims": [1, 4, -1, -1]}
    assert config["instance_group"] == [{"count": [2], "kind": ["KIND_CPU"]}]
    assert config["dynamic_batching"] == [{}]
    assert config["parameters"] == [{"key": ["intra_op_thread_count"], "value": [{"string_value": ["4"]}]}]
    assert _one(config, "model_operations") == {"op_library_filename": ["/opt/im2win/libim2win_ort.so"]}
    pb2 = _triton_model_config()
    if pb2 is not None:
        from google.protobuf import text_format

        parsed = text_format.Parse((entry / "config.pbtxt").read_text(), pb2.ModelConfig())
        assert [i.name for i in parsed.input] == ['in "0"'] and [o.name for o in parsed.output] == ["out\\1"]
        assert parsed.parameters["intra_op_thread_count"].string_value == "4"


def test_batch_only_tensor_gets_a_reshape(tmp_path):
    """A tensor that is only the batch dimension keeps dims [1] with reshape { shape: [] }."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    path = tmp_path / "vec.onnx"
    onnx.save_model(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert triton.main([str(path), "-o", str(tmp_path / "repo")]) == 0
    config = parse_pbtxt((tmp_path / "repo" / "vec" / "config.pbtxt").read_text())
    assert config["input"] == [{"name": ["x"], "data_type": ["TYPE_FP32"], "dims": [1], "reshape": [{"shape": []}]}]


@pytest.mark.parametrize("case", ["missing", "not_onnx", "bad_name", "repo_is_file", "exists", "no_shape"])
def test_bad_input_is_one_line_and_writes_nothing(case, model_file, tmp_path, capsys):
    repo = tmp_path / "repo"
    args = [str(model_file), "-o", str(repo)]
    if case == "missing":
        args[0] = str(tmp_path / "nope.onnx")
    elif case == "not_onnx":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"\x00\xffnot a model at all" * 10)
        args[0] = str(bad)
    elif case == "bad_name":
        args += ["--name", "../escape"]
    elif case == "repo_is_file":
        repo.write_text("x")
    elif case == "exists":
        (repo / "small").mkdir(parents=True)
        (repo / "small" / "keep").write_text("old")
    elif case == "no_shape":
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        onnx.save_model(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model_file))
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    assert triton.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("im2win-ort triton-config: error: ") and err.count("\n") == 1, err
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before
    if case == "exists":
        assert (repo / "small" / "keep").read_text() == "old"


def test_force_replaces_a_previous_entry(model_file, tmp_path):
    repo = tmp_path / "repo"
    (repo / "small" / "1").mkdir(parents=True)
    (repo / "small" / "stale").write_text("old")
    assert triton.main([str(model_file), "-o", str(repo), "--force", "--validate"]) == 0
    assert not (repo / "small" / "stale").exists()
    assert (repo / "small" / "1" / "model.onnx").is_file()
    assert [p.name for p in repo.iterdir()] == ["small"]


def test_cli_dispatches_triton_config(model_file, tmp_path, capsys):
    from im2win_ort.cli import main

    assert main(["triton-config", str(model_file), "-o", str(tmp_path / "repo"), "--name", "net"]) == 0
    assert (tmp_path / "repo" / "net" / "config.pbtxt").is_file()
    assert main(["triton-config", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "repo")]) == 1
    assert capsys.readouterr().err.startswith("im2win-ort triton-config: error: ")


def test_pbtxt_strings_round_trip():
    for s in ["plain", 'q"uote', "back\\slash", "new\nline", "ünï", "tab\t"]:
        assert parse_pbtxt(f"name: {triton.pbtxt_string(s)}") == {"name": [s]}


# --------------------------------------------------------------------------------------------
# Ray Data example
# --------------------------------------------------------------------------------------------

def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # Ray puts the driver's working directory first on its workers' sys.path: from the repository root
    # that would be the source tree's im2win_ort (no compiled library) instead of the installed one.
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.chdir(cwd)
    yield ray
    ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, about its settings
def test_ray_batch_inference_matches_ort_conv(local_ray, model_file):
    example = _load_example("ray_batch_inference")
    inputs = np.random.default_rng(7).standard_normal((300, 3, 16, 16)).astype(np.float32)
    outputs = example.run(str(model_file), inputs, workers=2, batch_size=25)
    assert list(outputs) == ["logits"]
    got = outputs["logits"]
    assert got.shape == (300, 8)
    ref = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    for i in range(len(inputs)):  # every output against ORT's own Conv on the original model, one by one
        (want,) = ref.run(None, {"x": inputs[i:i + 1]})
        np.testing.assert_allclose(got[i:i + 1], want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())),
                                   err_msg=f"sample {i}")
