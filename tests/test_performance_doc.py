"""docs/performance.md and README's headline table are what `python -m im2win_ort.measure.report`
generates from the stored runs in benchmarks/results/, so every number there has its raw run beside
it; and the generator itself, on made-up runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from im2win_ort.measure import report

ROOT = Path(__file__).resolve().parent.parent
MACHINE_KEYS = ("cpu", "cpu_class", "cores", "isa", "isas_available", "l2_bytes", "onnxruntime", "fma_peak_gflops")


def test_performance_doc_and_readme_match_the_stored_runs():
    for path, wanted in report.generate(ROOT).items():
        assert path.read_text() == wanted, (f"{path.relative_to(ROOT)} does not match benchmarks/results/: "
                                            "run python -m im2win_ort.measure.report")


def test_stored_runs_are_named_by_cpu_class_and_date_and_describe_their_machine():
    runs = report.load_runs(ROOT / report.RESULTS_DIR)
    for name, run in runs:
        assert re.sub(r"-\d+\.json$", ".json", name) == report.stored_name(run)
        for key in MACHINE_KEYS:
            assert key in run["machine"], f"{name}: no {key} in its machine section"
        assert run["machine"]["isa"] in run["machine"]["isas_available"]


def _machine(cpu_class="amd-epyc-zen3-avx2"):
    return {"cpu": "AMD EPYC", "cpu_class": cpu_class, "vendor": "AuthenticAMD", "cpu_family": 25, "cpu_model": 1,
            "cores": 2, "cpus_usable": 2, "features": ["avx2", "fma"], "isa": "avx2", "isas_available": ["avx2", "generic"],
            "l2_bytes": 524288, "panel_budget_bytes": 262144, "im2win_ort": "0.1.0", "onnxruntime": "1.32.0",
            "onnx": "1.23.2", "numpy": "2.4.6", "python": "3.11.7", "fma_peak_gflops": {"1": 80.0, "2": 160.0}}


def _compare_run(model="/somewhere/resnet50.onnx", created="2026-12-04T10:00:00+00:00", ours=(0.060, 0.035),
                 nhwc=None, version="0.1.0", batch=1):
    """A compare run; with `nhwc` (latencies at 1 and 2 threads) it measured the channels-last rewrite too."""
    results = []
    configs = ["ort_all", "ort_extended", "im2win"] + (["im2win_nhwc"] if nhwc else [])
    for t, threads in enumerate((1, 2)):
        latencies = {"ort_all": (0.050, 0.030)[t], "ort_extended": (0.070, 0.040)[t], "im2win": ours[t],
                     "im2win_nhwc": nhwc[t] if nhwc else None}
        for config in configs:
            peak = {"ort_all": 300, "ort_extended": 280}.get(config, 165) * 2**20
            results.append({"config": config, "label": config, "batch": batch, "threads": threads, "ok": True,
                            "latency_s": latencies[config], "peak_rss_bytes": peak, "max_abs_err": 0.0,
                            "max_rel_err": 2e-6 if config.startswith("im2win") else 0.0})
    return {"kind": "compare", "model": model, "rewritten_model": "/somewhere/out/resnet50.im2win.onnx",
            "created": created, "machine": {**_machine(), "im2win_ort": version},
            "settings": {"batches": [batch], "threads": [1, 2], "runs": 10, "warmup": 2, "arena": True,
                         "configs": configs, "tolerance": 1e-3},
            "torch": {"skipped": "--no-torch"}, "results": results,
            "files": {"markdown": "/somewhere/out/report.md", "json": "/somewhere/out/report.json", "charts": []}}


def _bench_run():
    return {"kind": "bench", "created": "2026-12-05T09:00:00+00:00", "machine": _machine(),
            "settings": {"sets": ["resnet50"], "threads": [1, 2], "min_seconds": 0.3, "max_runs": 30},
            "records": [], "summary": [
                {"set": "resnet50", "threads": 1, "layers": 23, "geomean_vs_ort_all": 1.1, "geomean_vs_ort_extended": 0.9,
                 "worst_vs_ort_all": {"layer": "resnet50.20", "batch": 1, "ratio": 1.5}, "median_pct_peak": 80.0},
                {"set": "resnet50", "threads": 2, "layers": 23, "geomean_vs_ort_all": 1.2, "geomean_vs_ort_extended": 0.95,
                 "worst_vs_ort_all": {"layer": "resnet50.17", "batch": 1, "ratio": 1.7}, "median_pct_peak": 70.0,
                 "speedup": {"over_threads": 1, "im2win": 1.7, "ort_all": 1.8}}]}


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "performance.md").write_text(f"# P\n\nbefore\n\n{report.DOC_BEGIN}\nold\n{report.DOC_END}\n\nafter\n")
    (tmp_path / "README.md").write_text(f"# R\n\n{report.HEADLINE_BEGIN}\nold\n{report.HEADLINE_END}\n\nrest\n")
    return tmp_path


def test_add_stores_runs_by_class_and_date_and_generates_the_tables(repo, capsys):
    runs = []
    for i, run in enumerate((_compare_run(nhwc=(0.045, 0.036)), _compare_run(created="2026-12-04T11:00:00+00:00", ours=(0.055, 0.033)),
                             _compare_run(model="mobilenet_v2.onnx"), _bench_run())):
        path = repo / f"run{i}.json"
        path.write_text(json.dumps(run))
        runs.append(str(path))
    assert report.main(["--root", str(repo), "--add", *runs, "--note", "Shared machine.", "--no-charts"]) == 0
    stored = sorted(p.name for p in (repo / "benchmarks" / "results").iterdir())
    assert stored == ["amd-epyc-zen3-avx2_2026-12-04_compare-mobilenet_v2.json",
                      "amd-epyc-zen3-avx2_2026-12-04_compare-resnet50-2.json",
                      "amd-epyc-zen3-avx2_2026-12-04_compare-resnet50.json",
                      "amd-epyc-zen3-avx2_2026-12-05_bench-resnet50.json"]
    kept = json.loads((repo / "benchmarks" / "results" / stored[2]).read_text())
    assert kept["model"] == "resnet50.onnx" and kept["note"] == "Shared machine."  # no local paths kept
    assert kept["results"] == _compare_run(nhwc=(0.045, 0.036))["results"]  # the measurements as they were

    doc = (repo / "docs" / "performance.md").read_text()
    assert doc.startswith("# P\n\nbefore\n") and doc.endswith("\nafter\n") and "\nold\n" not in doc
    assert "### AMD EPYC Zen 3, AVX2 (`amd-epyc-zen3-avx2`)" in doc
    # ResNet-50, 1 thread: ours 60 ms against ORT ALL's 50 (1.20x) and EXTENDED's 70, channels-last 45 ms;
    # 165 MiB against 300.
    assert ("| 2 | ResNet-50 | 1 | 1 | 50.0 | 60.0 | **1.20x** | 45.0 | 0.90x | 70.0 | 0.86x | 300.0 | 165.0 | "
            "**-45%** | 2.0e-06 |") in doc
    assert "| 3 | ResNet-50 | 1 | 1 | 50.0 | 55.0 | **1.10x** | - | - | 70.0 |" in doc  # a run without NHWC
    assert doc.index("| 2 | ResNet-50 |") < doc.index("| 3 | ResNet-50 |") < doc.index("| 1 | MobileNetV2 |")
    assert "\n3. 2026-12-04, [`amd-epyc-zen3-avx2_2026-12-04_compare-resnet50-2.json`]" in doc
    assert "`im2win-ort compare resnet50.onnx --batch 1 --threads 1,2 --runs 10 --no-torch`" in doc
    assert "`im2win-ort compare resnet50.onnx --batch 1 --threads 1,2 --runs 10 --configs ort_all,ort_extended,im2win --no-torch`" in doc
    assert "| resnet50 | 2 | 23 | 1.200 | 0.950 | 1.70 (resnet50.17, batch 1) | 70% | 1.70x (1.80x) |" in doc
    assert "Layer sets (run 4, " in doc
    assert "`im2win-ort bench --sets resnet50 --threads 1,2 --no-torch`" in doc
    assert "Shared machine." in doc and "(../benchmarks/results/amd-epyc-zen3-avx2_2026-12-05_bench-resnet50.json)" in doc

    readme = (repo / "README.md").read_text()
    # The headline takes the runs of the newest date per network, of those the ones that measured
    # the most configurations: of ResNet-50's two, the first, which measured the channels-last
    # layout too (60 ms against 50, 35 against 30); MobileNetV2's one.
    assert ("| AMD EPYC (`amd-epyc-zen3-avx2`), 2026-12-04 | ResNet-50 | 1 | 1 | 1.20x (60.0 vs 50.0 ms) | "
            "1.17x (35.0 vs 30.0 ms) | 0.90x (45.0 vs 50.0 ms) | 1.20x (36.0 vs 30.0 ms) | -45% / -45% |") in readme
    assert ("| AMD EPYC (`amd-epyc-zen3-avx2`), 2026-12-04 | MobileNetV2 | 1 | 1 | 1.20x (60.0 vs 50.0 ms) | "
            "1.17x (35.0 vs 30.0 ms) | - | - | -45% / -45% |") in readme
    assert readme.index("ResNet-50") < readme.index("MobileNetV2")

    assert report.main(["--root", str(repo), "--check"]) == 0
    (repo / "docs" / "performance.md").write_text(doc.replace("1.20x", "1.19x"))
    assert report.main(["--root", str(repo), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_a_run_without_a_cpu_class_or_markers_is_a_one_line_error(repo, capsys):
    run = _compare_run()
    del run["machine"]["cpu_class"]
    path = repo / "old.json"
    path.write_text(json.dumps(run))
    assert report.main(["--root", str(repo), "--add", str(path), "--no-charts"]) == 1
    assert "no cpu_class" in capsys.readouterr().err
    (repo / "README.md").write_text("# R\n")
    assert report.main(["--root", str(repo), "--no-charts"]) == 1
    err = capsys.readouterr().err
    assert "markers" in err and len(err.strip().splitlines()) == 1


def test_the_headline_takes_the_median_of_the_newest_days_fullest_runs():
    """Of one day's runs of a network, those that measured the most configurations, their median and
    range; an older day's runs and a run without the channels-last configuration are left out."""
    runs = [("a", _compare_run(ours=(0.060, 0.035), nhwc=(0.045, 0.036))),
            ("b", _compare_run(created="2026-12-04T12:00:00+00:00", ours=(0.055, 0.033), nhwc=(0.050, 0.036))),
            ("c", _compare_run(created="2026-12-04T13:00:00+00:00", ours=(0.100, 0.100))),
            ("d", _compare_run(created="2026-12-03T13:00:00+00:00", ours=(0.010, 0.010), nhwc=(0.010, 0.010)))]
    table = report.render_headline(runs)
    assert ("| AMD EPYC (`amd-epyc-zen3-avx2`), 2026-12-04 | ResNet-50 | 1 | 2 | 1.15x (1.10-1.20x) | "
            "1.13x (1.10-1.17x) | 0.95x (0.90-1.00x) | 1.20x (1.20-1.20x) | -45% / -45% |") in table, table
    # A run at batch 16 alone has its tables in docs/performance.md, not a place in the headline.
    runs.append(("f", _compare_run(created="2026-12-04T14:00:00+00:00", ours=(0.9, 0.9), nhwc=(0.9, 0.9), batch=16)))
    assert report.render_headline(runs) == table
    # A newer version measured the same day supersedes the older version's runs, however full.
    runs.append(("e", _compare_run(created="2026-12-04T09:00:00+00:00", ours=(0.040, 0.030), nhwc=(0.040, 0.030),
                                   version="0.10.0")))
    table = report.render_headline(runs)
    assert "| ResNet-50 | 1 | 1 | 0.80x (40.0 vs 50.0 ms) | 1.00x (30.0 vs 30.0 ms) |" in table, table
    assert table.splitlines()[0].endswith("| peak memory vs ORT (1 / 2 threads) | peak memory vs ORT, NHWC (1 / 2 threads) |")
