"""Hostile input: each defect an attacker's model or call found, refused with a clear error (or
answered as ORT answers), never a crash, a hang or a made-up answer. The fuzzer (test_fuzz.py)
covers the space at random; these are the named cases."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import DOMAIN, conv_model, make_session, reference_conv
from im2win_ort import _kernels

NODE = "hostile"
ORT_VERSION = tuple(int(p) for p in ort.__version__.split(".")[:2])
INT64_MAX = 2**63 - 1


def _ours_and_theirs(x_shape, w_shape, bias=False, **attrs):
    """(our error or output, ORT's error or output) for one Conv node with these attributes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    results = []
    for domain in (DOMAIN, ""):
        try:
            results.append(make_session(conv_model(x_shape, w, b, domain, node_name=NODE, **attrs),
                                        im2win=bool(domain)).run(None, {"X": x})[0])
        except Exception as e:
            results.append(str(e))
    return results


@pytest.mark.parametrize("attrs, named", [
    (dict(dilations=[2**62, 1]), "dilations[0]"),
    (dict(dilations=[1, INT64_MAX]), "dilations[1]"),
    (dict(pads=[2**62, 0, 2**62, 0]), "pads on H"),
    (dict(pads=[0, INT64_MAX, 0, 1]), "pads on W"),
    (dict(auto_pad="SAME_UPPER", strides=[INT64_MAX, 1]), "strides[0]"),
])
def test_overflowing_geometry_is_refused_naming_node_and_attribute(attrs, named):
    ours, theirs = _ours_and_theirs([1, 2, 5, 5], [3, 2, 3, 3], **attrs)
    assert isinstance(ours, str), "com.im2win::Conv gave an answer"
    assert f"com.im2win::Conv node '{NODE}'" in ours and named in ours and "overflow" in ours, ours
    assert isinstance(theirs, str), "ORT's Conv gave an answer"  # ORT refuses these too


def test_sizes_past_the_32_bit_offsets_are_refused():
    # (ORT's own Conv would try to allocate the 8 GiB output: not run here.)
    model = conv_model([1, 1, 3, 3], np.ones((1, 1, 1, 1), np.float32), None, DOMAIN, node_name=NODE,
                       pads=[0, 0, 0, 2**31])
    with pytest.raises(Exception, match="pads on W .* more than the 2147483647 com.im2win::Conv addresses"):
        make_session(model)


@pytest.mark.parametrize("name, value, says", [
    ("strides", [2.0, 2.0], "'strides' must be a list of ints, got a list of floats"),
    ("pads", "1,1,1,1", "'pads' must be a list of ints, got a string"),
    ("dilations", 2.0, "'dilations' must be a list of ints, got a single float"),
    ("kernel_shape", [], "'kernel_shape' is an empty list"),
    ("group", 1.0, "'group' must be an int"),
    ("auto_pad", 3, "'auto_pad' must be a string"),
    ("activation_params", [1, 2], "'activation_params' must be a list of floats, got a list of ints"),
])
def test_attribute_of_the_wrong_type_is_an_error_not_a_default(name, value, says):
    w = np.ones((3, 2, 3, 3), np.float32)
    model = conv_model([1, 2, 5, 5], w, None, DOMAIN, node_name=NODE)
    empty = isinstance(value, list) and not value
    model.graph.node[0].attribute.append(
        helper.make_attribute(name, value, attr_type=onnx.AttributeProto.INTS if empty else None))
    if name == "activation_params":
        model.graph.node[0].attribute.append(helper.make_attribute("activation", "Clip"))
    with pytest.raises(Exception) as info:
        make_session(model).run(None, {"X": np.ones((1, 2, 5, 5), np.float32)})
    assert f"com.im2win::Conv node '{NODE}'" in str(info.value) and says in str(info.value), str(info.value)


@pytest.mark.parametrize("x_shape, w_shape, bias", [
    ([2, 0, 5, 5], [3, 0, 3, 3], True),   # no input channels: Y is the bias
    ([2, 0, 5, 5], [3, 0, 3, 3], False),  # ... or zeros
    ([1, 2, 5, 5], [0, 2, 3, 3], False),  # no output channels: an empty Y
    ([1, 0, 6], [4, 0, 2], True),
])
def test_empty_channels_follow_ort(x_shape, w_shape, bias):
    """ONNX's answer (an empty sum, plus the bias), which ORT 1.24+ gives too (ORT 1.21 leaves the
    bias out and refuses M = 0 when it optimizes the graph)."""
    ours, theirs = _ours_and_theirs(x_shape, w_shape, bias=bias)
    assert not isinstance(ours, str), ours
    if ORT_VERSION >= (1, 24):
        assert not isinstance(theirs, str), theirs
        np.testing.assert_array_equal(ours, theirs)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    np.testing.assert_array_equal(ours, reference_conv(x, w, b))


def test_empty_channels_with_residual_and_activation():
    x, w = np.ones((1, 0, 4, 4), np.float32), np.ones((2, 0, 3, 3), np.float32)
    b, z = np.array([-1.0, 2.0], np.float32), np.full((1, 2, 2, 2), 0.5, np.float32)
    y = _kernels.conv(x, w, b, z, activation="Relu")
    np.testing.assert_array_equal(y, reference_conv(x, w, b, z, activation="Relu"))


def test_kernels_accept_float32_that_came_through_pickle():
    x = pickle.loads(pickle.dumps(np.ones((1, 2, 4, 4), np.float32)))
    w = pickle.loads(pickle.dumps(np.ones((3, 2, 3, 3), np.float32)))
    np.testing.assert_array_equal(_kernels.conv(x, w), reference_conv(x, w))
    with pytest.raises(TypeError, match="x must be float32, got >f4"):
        _kernels.conv(x.astype(">f4"), w)


@pytest.mark.parametrize("threads", [0, -1, 100_000])
def test_kernels_thread_count_is_bounded(threads):
    with pytest.raises(ValueError, match="threads must be between 1 and"):
        _kernels.conv(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 1, 1), np.float32), threads=threads)


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, 0.0, 1e9])
def test_fma_probe_refuses_unbounded_durations(seconds):
    with pytest.raises(ValueError, match="seconds must be"):
        _kernels.fma_peak_gflops(seconds=seconds)


def test_workspace_of_very_tall_and_wide_shapes_returns_at_once():
    start = time.perf_counter()
    for x_shape, w_shape in (([1, 64, 2**30, 3], [64, 64, 3, 3]), ([1, 512, 2**20, 2**10], [512, 512, 3, 3]),
                             ([1, 16, 2**30, 2], [16, 1, 3, 1])):
        try:
            _kernels.workspace_bytes(x_shape, w_shape, group=w_shape[0] // w_shape[1] if w_shape[1] == 1 else 1)
        except ValueError as e:
            assert "com.im2win::Conv" in str(e) or "window panel" in str(e)
    assert time.perf_counter() - start < 5.0


def test_failed_thread_start_raises_instead_of_aborting(tmp_path):
    """With the address space capped, thread stacks cannot be mapped: the call raises, the
    threads that did start are joined, and the process goes on."""
    script = textwrap.dedent("""
        import resource, numpy as np
        from im2win_ort import _kernels
        x, w = np.ones((64, 4, 8, 8), np.float32), np.ones((4, 4, 3, 3), np.float32)
        _kernels.conv(x, w, threads=2)  # everything loaded before the cap
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (48 << 20), resource.RLIM_INFINITY))
        try:
            _kernels.conv(x, w, threads=64)
            print("ran")
        except Exception as e:
            print("raised", type(e).__name__, e)
        print("alive")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alive" in done.stdout
    assert "raised RuntimeError could not start thread" in done.stdout, done.stdout


# ---- the command line ----------------------------------------------------------------------------

def _cli(*args):
    """The installed command (run outside the checkout, so that the installed package is the one imported)."""
    return subprocess.run([sys.executable, "-m", "im2win_ort", *map(str, args)], capture_output=True, text=True,
                          cwd=os.path.dirname(str(args[1])), timeout=300)


def _small_model(path, *, scalar_bool_input=False):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = conv_model(["N", 3, 8, 8], w, None, "", node_name="c", pads=[1, 1, 1, 1])
    if scalar_bool_input:
        model.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
        model.graph.node.append(helper.make_node("Identity", ["flag"], ["flag_out"]))
        model.graph.output.append(helper.make_tensor_value_info("flag_out", TensorProto.BOOL, []))
    onnx.save(model, str(path))
    return path


def test_external_data_yes_with_only_small_tensors(tmp_path):
    src = _small_model(tmp_path / "m.onnx")
    done = _cli("rewrite", src, "-o", tmp_path / "out.onnx", "--external-data", "yes")
    assert done.returncode == 0, done.stderr
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.domain for n in out.graph.node] == [DOMAIN]


def test_validate_with_inputs_of_the_wrong_shape_is_one_line(tmp_path):
    src = _small_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", X=np.ones((1, 3, 9, 9), np.float32))
    before = src.read_bytes()
    done = _cli("rewrite", src, "-o", tmp_path / "out.onnx", "--validate", "--inputs", tmp_path / "in.npz")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "input 'X' must have shape ['?', 3, 8, 8]" in done.stderr
    assert not (tmp_path / "out.onnx").exists() and src.read_bytes() == before


def test_validate_with_a_scalar_bool_input(tmp_path):
    src = _small_model(tmp_path / "m.onnx", scalar_bool_input=True)
    done = _cli("rewrite", src, "-o", tmp_path / "out.onnx", "--validate")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("tolerance", ["-1", "nan", "inf"])
def test_tolerance_must_be_a_finite_non_negative_number(tmp_path, tolerance):
    src = _small_model(tmp_path / "m.onnx")
    done = _cli("rewrite", src, "-o", tmp_path / "out.onnx", "--validate", "--tolerance", tolerance)
    says = "--tolerance must be at least 0" if tolerance == "-1" else "--tolerance takes a finite number"
    assert done.returncode == 1 and says in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("attrs, reason", [
    (dict(group=0), "group 0 is not >= 1"),
    (dict(strides=[0, 1]), "strides [0, 1] are not all >= 1"),
    (dict(kernel_shape=[2, 2]), "kernel_shape [2, 2] does not match W's shape"),
    (dict(auto_pad="VALID", pads=[0, 0, 0, 0]), "pads are given together with auto_pad=VALID"),
    (dict(auto_pad="SAME_UPPER", dilations=[2, 2]), "no dilations with auto_pad=SAME_UPPER"),
])
def test_rewriter_leaves_convs_ort_refuses_to_ort(attrs, reason):
    from im2win_ort import rewrite_with_report

    w = np.ones((4, 2, 3, 3), np.float32)
    model = conv_model([1, 2, 8, 8], w, None, "", node_name="bad", **attrs)
    rewritten, report = rewrite_with_report(model)
    assert report.replaced == [] and report.left and report.left[0][0] == "bad"
    assert reason in report.left[0][1], report.left
    assert rewritten.graph.node[0].domain in ("", "ai.onnx")


def test_sanity_after_all_of_the_above():
    """The process that ran every hostile case still computes right."""
    x = np.random.default_rng(3).standard_normal((1, 3, 9, 9)).astype(np.float32)
    w = np.random.default_rng(4).standard_normal((5, 3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(_kernels.conv(x, w, pads=[1, 1, 1, 1], threads=2),
                               reference_conv(x, w, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-4)
    assert os.getpid() > 0


# ---- second probe: the kernels' own resources -------------------------------------------------

def _huge_view(shape):
    """A float32 view whose C-contiguous copy (2^42 floats and more) cannot be allocated."""
    return np.broadcast_to(np.zeros((1,) * len(shape), np.float32), shape)


@pytest.mark.parametrize("argument", ["x", "w", "b", "z", "transform"])
def test_a_view_too_large_to_copy_is_a_memory_error(argument):
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    huge = {"x": (1, 1, 2**21, 2**21), "w": (2**21, 2**21, 1, 1), "b": (2**42,), "z": (1, 1, 2**21, 2**21),
            "transform": (1, 1, 2**21, 2**21)}[argument]
    with pytest.raises(MemoryError, match=f"{argument if argument != 'transform' else 'x'}: a C-contiguous"):
        if argument == "transform":
            _kernels.im2win_transform(_huge_view(huge), [3, 3])
        else:
            args = dict(x=x, w=w, b=None, z=None)
            args[argument] = _huge_view(huge)
            _kernels.conv(args["x"], args["w"], args["b"], args["z"])
    # A view that does fit is copied and computed as the array it shows.
    small = np.broadcast_to(np.float32(0.5), (1, 2, 5, 5))
    np.testing.assert_allclose(_kernels.conv(small, w), reference_conv(np.full((1, 2, 5, 5), 0.5, np.float32), w),
                               rtol=1e-5)


def test_fma_probe_keeps_its_time_limit_with_any_thread_count():
    """The probe's budget holds with many more threads than cores (each round used to take
    threads / cores times the budget)."""
    for threads in (64, 512):
        start = time.perf_counter()
        gflops = _kernels.fma_peak_gflops(threads=threads, seconds=0.2)
        assert time.perf_counter() - start < 2.0 and gflops > 0


def _timed_lines(script_body: str, tmp_path) -> list[str]:
    script = ("import numpy as np, onnxruntime as ort, im2win_ort\n"
              "so = im2win_ort.session_options(1, plan='measure')\n"
              "so.log_severity_level = 1\n" + textwrap.dedent(script_body))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [line for line in done.stderr.splitlines() if "plan timed for X" in line]


def test_alternating_shapes_are_timed_once_each(tmp_path):
    """Plans are kept by shape: a session fed shapes in turn times each shape once, also when it
    cycles through more shapes than the plans kept (16: their choice is kept, the plan rebuilt),
    and answers each as the reference does."""
    w = np.random.default_rng(0).standard_normal((32, 8, 3, 3)).astype(np.float32) / 8
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model(["N", 8, "H", "W"], w, None, DOMAIN, node_name="c", pads=[1, 1, 1, 1])
                     .SerializeToString())
    np.save(tmp_path / "w.npy", w)
    shapes = [(1, 8, 6 + i, 9) for i in range(20)]
    timed_shapes = [s for s in shapes if len(_kernels.measure_plan(list(s), list(w.shape), pads=[1] * 4)
                                            ["candidates"]) > 1]
    lines = _timed_lines(f"""
        s = ort.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])
        from im2win_ort import reference
        w = np.load('w.npy')
        shapes = {shapes!r}
        for _ in range(3):
            for a, b in zip(shapes[:2], shapes[1:3]):  # two shapes in turn
                for shape in (a, b, a, b):
                    s.run(None, {{'X': np.ones(shape, np.float32)}})
        for _ in range(2):
            for shape in shapes:
                x = np.random.default_rng(shape[2]).standard_normal(shape).astype(np.float32)
                y = s.run(None, {{'X': x}})[0]
                want = reference.conv(x, w, pads=[1, 1, 1, 1])
                assert np.abs(y - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), shape
        """, tmp_path)
    timed = [line.split("plan timed for X ")[1].split(":")[0] for line in lines]
    assert len(timed) == len(set(timed)) == len(timed_shapes), timed


def test_timing_is_bounded_per_kernel(tmp_path):
    """A stream of new shapes is timed up to the kernel's budget (64 shapes), then planned by the
    rules: still answered right, never timed without end."""
    w = np.random.default_rng(0).standard_normal((32, 8, 3, 3)).astype(np.float32) / 8
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model(["N", 8, "H", "W"], w, None, DOMAIN, node_name="c", pads=[1, 1, 1, 1])
                     .SerializeToString())
    np.save(tmp_path / "w.npy", w)
    lines = _timed_lines(f"""
        s = ort.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])
        from im2win_ort import reference
        w = np.load('w.npy')
        for h in range(4, 84):
            x = np.random.default_rng(h).standard_normal((1, 8, h, 10)).astype(np.float32)
            y = s.run(None, {{'X': x}})[0]
            want = reference.conv(x, w, pads=[1, 1, 1, 1])
            assert np.abs(y - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), h
        """, tmp_path)
    assert 0 < len(lines) <= 64, len(lines)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's allocator keeps freed memory in quarantine: RSS says nothing there")
def test_a_wide_inputs_workspace_is_given_back_after_the_call():
    """One row wider than the panel budget takes a panel far larger than any CNN layer's: the
    thread gives it back once the call ends, instead of holding it for the rest of its life."""
    x = np.random.default_rng(0).standard_normal((1, 64, 3, 100_000)).astype(np.float32)  # 77 MB
    w = np.random.default_rng(1).standard_normal((16, 64, 3, 3)).astype(np.float32)
    panel = _kernels.workspace_bytes(list(x.shape), list(w.shape), pads=[1, 1, 1, 1])["im2win_per_thread"]
    assert panel > 32 << 20, panel  # the shape still needs a large panel while it runs
    _kernels.conv(x[:, :, :, :1000], w, pads=[1, 1, 1, 1])  # a small call first: buffers of a normal size
    before = _rss_mib()
    y = _kernels.conv(x, w, pads=[1, 1, 1, 1])
    np.testing.assert_allclose(y[:, :, :, :50], reference_conv(x[:, :, :, :52], w, pads=[1, 1, 1, 1])[:, :, :, :50],
                               rtol=1e-4, atol=1e-3)
    del y
    kept = _rss_mib() - before
    assert kept < panel / 4 / 2**20, f"{kept:.0f} MiB kept after the call (panel {panel / 2**20:.0f} MiB)"


@pytest.mark.parametrize("attribute, value", [
    ("weight_layout", "OIHW\0im2win.channels16"),
    ("activation", "Relu\0Sigmoid"),
    ("auto_pad", "NOTSET\0SAME_UPPER"),
])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_string_attributes_with_a_nul_are_refused(attribute, value, backend):
    """A string attribute is read whole: one with a NUL inside is refused, never read up to the NUL."""
    if backend == "python":
        pytest.importorskip("onnxruntime_extensions")
    import im2win_ort

    w = np.ones((4, 2, 3, 3), np.float32)
    attrs = dict(pads=[1, 1, 1, 1]) if attribute != "auto_pad" else {}
    model = conv_model([1, 2, 6, 6], w, None, DOMAIN, node_name=NODE, **attrs)
    model.graph.node[0].attribute.append(helper.make_attribute(attribute, value))
    x = np.ones((1, 2, 6, 6), np.float32)
    with pytest.raises(Exception) as caught:
        im2win_ort.InferenceSession(model, backend=backend).run(None, {"X": x})
    if backend == "native":
        assert f"attribute '{attribute}' contains a NUL character" in str(caught.value), caught.value
