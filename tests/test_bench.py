"""The benchmark runs end to end on a tiny layer (so it never rots) and reports real measurements."""

import json

import pytest

from im2win_ort.measure import bench
from im2win_ort.measure.layer_sets import LAYER_SETS, ConvLayer


def test_bench_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--sets", "tiny", "--threads", "1,2", "--min-seconds", "0.01", "--max-runs", "5",
                       "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "FMA peak" in table and "geomean ratio" in table
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["fma_peak_gflops"]["1"] > 0
    for t in ("1", "2"):  # % of peak against the higher of the probe's two readings
        assert machine["fma_peak_gflops"][t] == max(machine["fma_peak_gflops_start"][t], machine["fma_peak_gflops_end"][t])
    assert "the higher of the readings at the start and the end" in table
    records = result["records"]
    assert [r["threads"] for r in records] == [1, 2]
    for r in records:
        assert r["max_rel_err"] <= 1e-4
        assert {"im2win", "im2win_nhwc", "ort_all", "ort_extended"} <= set(r["seconds"])
        assert r["nhwc_ratio"]["ort_all"] == pytest.approx(r["seconds"]["im2win_nhwc"] / r["seconds"]["ort_all"])
        assert all(t > 0 for t in r["seconds"].values())
        assert r["gflops"]["im2win"] == pytest.approx(r["gflop"] / r["seconds"]["im2win"])
        assert r["workspace_bytes"]["im2col"] == 8 * 9 * 12 * 12 * 4
        assert 0 < r["workspace_bytes"]["im2win_per_thread"]
        assert r["pct_peak"] == pytest.approx(100 * r["gflops"]["im2win"] / machine["fma_peak_gflops"][str(r["threads"])])
    assert {s["threads"] for s in result["summary"]} == {1, 2}
    two = next(s for s in result["summary"] if s["threads"] == 2)
    one_rec, two_rec = records
    assert two["speedup"]["over_threads"] == 1
    assert two["speedup"]["im2win"] == pytest.approx(one_rec["seconds"]["im2win"] / two_rec["seconds"]["im2win"])
    assert "speed-up over 1 thread(s)" in table and "NHWC/ALL" in table and "NHWC vs ort_all" in table


def test_no_torch_leaves_pytorch_out(tmp_path, monkeypatch):
    """A runner for PyTorch (faked here, so the test does not need it installed) is timed unless
    --no-torch is given."""
    calls = []
    monkeypatch.setattr(bench, "_torch_runner", lambda layer, threads, x: lambda: calls.append(threads))
    for flag, want in (([], True), (["--no-torch"], False)):
        out = tmp_path / "bench.json"
        assert bench.main(["--sets", "tiny", "--threads", "1", "--min-seconds", "0.01", "--max-runs", "5",
                           "--json", str(out)] + flag) == 0
        (record,) = json.loads(out.read_text())["records"]
        assert ("torch" in record["seconds"]) == want
    assert calls  # the fake was timed when allowed


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--sets", "nosuchset"])
    assert info.value.code == 2
    assert "unknown layer set" in capsys.readouterr().err


def test_layer_sets_hold_the_networks_distinct_shapes():
    resnet = LAYER_SETS["resnet50"]()
    shapes = {(l.channels, l.height, l.out_channels, l.kernel, l.stride) for l in resnet}
    assert len(shapes) == len(resnet)  # distinct
    assert (3, 224, 64, 7, 2) in shapes and (512, 7, 512, 3, 1) in shapes and (1024, 14, 2048, 1, 2) in shapes
    vgg = LAYER_SETS["vgg16"]()
    assert len(vgg) == 9 and vgg[-1].height == 14
    mobilenet = LAYER_SETS["mobilenetv2"]()
    assert any(l.group == l.channels > 1 for l in mobilenet)  # depthwise
    assert mobilenet[-1].out_channels == 1280 and mobilenet[-1].height == 7
    paper = LAYER_SETS["paper"]()
    assert len(paper) == 24 and {l.batch for l in paper} == {1, 8}
    assert ConvLayer("x", 3, 227, 227, 96, 11, 4).out_hw == (55, 55)


def test_median_times_times_each_runner_in_blocks_with_a_pause_between(monkeypatch):
    log = []
    clock = iter(range(10**6))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(bench.time, "sleep", lambda s: log.append(("sleep", s)))
    runners = {"a": lambda: log.append("a"), "b": lambda: log.append("b")}
    seconds = bench.median_times(runners, min_seconds=0.0, max_runs=10, warmup=2, block=5, settle=0.05)
    assert set(seconds) == {"a", "b"} and all(v == 1.0 for v in seconds.values())  # one tick per timed run
    # Round 1: pause, 2 warm-up runs, 5 timed runs per runner; round 2: pause, 1 untimed, 5 timed.
    expected = []
    for untimed in (2, 1):
        for name in "ab":
            expected += [("sleep", 0.05)] + [name] * (untimed + 5)
    assert log == expected


def test_old_module_paths_still_work():
    import subprocess
    import sys

    import im2win_ort.bench
    import im2win_ort.compare
    from im2win_ort.measure import compare

    assert im2win_ort.bench is bench and im2win_ort.compare is compare
    out = subprocess.run([sys.executable, "-m", "im2win_ort.bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--sets" in out.stdout
