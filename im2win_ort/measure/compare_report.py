"""The report of `im2win-ort compare`: the terminal table, report.md, report.json and the PNG charts.

Every file is written atomically (a temporary file in the same directory, then a rename), so a
report file is either complete or absent.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

CONFIGS = {  # name -> (label, kind); the order of the report
    "ort_all": ("ORT ENABLE_ALL", "ort"),
    "ort_extended": ("ORT ENABLE_EXTENDED", "ort"),
    "im2win": ("im2win (rewritten)", "ort"),
    "im2win_nhwc": ("im2win channels-last (rewritten --layout nhwc)", "ort"),
    "torch_onednn": ("PyTorch oneDNN", "torch"),
    "torch_im2col": ("PyTorch im2col", "torch"),
}
REFERENCE = "ort_all"
REPORT_FILES = ("report.md", "report.json", "peak_rss.png", "latency.png", "workspace.png")  # all it may write
MiB = 1024 * 1024


def file_mode() -> int:
    """The mode a new file gets here (0o666 less the umask); mkstemp's files are 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, data, binary: bool = False) -> None:
    """Writes `path` whole or not at all (a temporary file in the same directory, then a rename);
    ModelError if `path` is there and not a regular file (model_io.check_outputs)."""
    from ..rewriter.model_io import check_outputs

    check_outputs([path])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            f.write(data)
        os.chmod(tmp, file_mode())
        check_outputs([path])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mib(n) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def _size(n) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    if n < MiB:
        return f"{n / 1024:.1f} KiB" if n < 10 * 1024 else f"{n / 1024:.0f} KiB"
    return f"{n / MiB:.1f} MiB"


def _ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 0.1 else f"{ms:.3f}"


def _err(x) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.1e}"


def _reference_record(results, r):
    return next((q for q in results if q["config"] == REFERENCE and q["batch"] == r["batch"]
                 and q["threads"] == r["threads"] and q["ok"]), None)


RESULT_COLUMNS = ("configuration", "batch", "threads", "peak RSS MiB", "peak vs ALL", "after load MiB",
                  "run peak MiB", "base MiB", "latency ms", "time vs ALL", "max abs err", "max rel err")


def result_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        if not r["ok"]:
            rows.append([r["label"], str(r["batch"]), str(r["threads"]), "failed: " + r["error"]]
                        + [""] * (len(RESULT_COLUMNS) - 4))
            continue
        ref = _reference_record(results, r)
        peak = r["peak_rss_bytes"]
        row = [r["label"], str(r["batch"]), str(r["threads"]), _mib(peak),
               f"{100 * (peak / ref['peak_rss_bytes'] - 1):+.0f}%" if ref else "-",
               _mib(r["rss_load_bytes"]), _mib(r.get("peak_run_rss_bytes")), _mib(r["rss_base_bytes"]),
               _ms(r["latency_s"])]
        row.append(f"{r['latency_s'] / ref['latency_s']:.2f}x" if ref else "-")
        flag = "" if r.get("agrees", True) else " !"
        row += [_err(r.get("max_abs_err")), _err(r.get("max_rel_err")) + flag]
        rows.append(row)
    return rows


LAYER_COLUMNS = ("layer", "X (N x C x H x W)", "W", "stride", "input", "im2col", "im2win", "direct",
                 "ours/thread", "on im2win")


def layer_rows(layers: list[dict]) -> list[list[str]]:
    rows = []
    for l in layers:
        if "x_shape" not in l:
            rows.append([l["name"], l.get("note", "")] + [""] * (len(LAYER_COLUMNS) - 2))
            continue
        rows.append([l["name"], "x".join(map(str, l["x_shape"])), "x".join(map(str, l["w_shape"])),
                     ",".join(map(str, l["strides"])), _size(l["input_bytes"]), _size(l["im2col_bytes"]),
                     _size(l["im2win_bytes"]), "0", _size(l["ours_per_thread_bytes"]),
                     "yes" if l["on_im2win"] else "no (ORT)"])
    return rows


def _failed(row) -> bool:
    return len(row) > 3 and row[3].startswith("failed")


def text_table(columns, rows) -> str:
    measured = [r for r in rows if not _failed(r)]
    widths = [max([len(c)] + [len(r[i]) for r in (measured if i >= 3 else rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(columns, widths))).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if _failed(r):
            lines.append("  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3]]))
            continue
        lines.append("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines)


def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines)


def totals_lines(report: dict) -> list[str]:
    lines = []
    for batch, t in report["layer_totals"].items():
        def both(key):
            return f"{_size(t[key]['max'])} (sum {_size(t[key]['sum'])})"

        lines.append(f"batch {batch}, {t['layers']} Conv layer(s), largest layer (sum over layers): "
                     f"im2col {both('im2col_bytes')}; im2win {both('im2win_bytes')}; direct 0; "
                     f"ours per thread {both('ours_per_thread_bytes')}")
    return lines


def format_text(report: dict) -> str:
    s = report["settings"]
    lines = [f"{report['model']}: {len(report['rewrite']['replaced'])} Conv node(s) on com.im2win::Conv, "
             f"{len(report['rewrite']['left'])} left to ORT; {s['runs']} timed runs after {s['warmup']} warm-up; "
             f"arena {'on' if s['arena'] else 'off'}",
             "RSS per process: peak = VmHWM, loading and runs; after load = VmRSS once the model is loaded; run "
             "peak = VmHWM during the runs only; base = VmRSS before loading (runtime imported, inputs loaded). "
             "Errors: against ORT ENABLE_ALL's outputs.", ""]
    lines.append(text_table(RESULT_COLUMNS, result_rows(report["results"])))
    if "skipped" in report["torch"]:
        lines.append(f"(PyTorch not compared: {report['torch']['skipped']})")
    lines.append("")
    lines += totals_lines(report)
    return "\n".join(lines)


def format_markdown(report: dict, charts: list[str]) -> str:
    s, m = report["settings"], report["machine"]
    rw = report["rewrite"]
    lines = [f"# im2win-ort compare: {Path(report['model']).name}", "",
             f"- model: `{report['model']}`; rewritten: `{report['rewritten_model']}`"
             + (f", channels-last: `{report['rewritten_model_nhwc']}`" if report.get("rewritten_model_nhwc") else "")
             + " "
             f"({len(rw['replaced'])} Conv node(s) on com.im2win::Conv, {len(rw['fused'])} fusion(s), "
             f"{len(rw['left'])} node(s) left to ORT)",
             f"- machine: {m['cpu']} ({m['cores']} cores; {' '.join(m['features'])}); ISA {m['isa']}; "
             f"onnxruntime {m['onnxruntime']}; Python {m['python']}",
             f"- batches {', '.join(map(str, s['batches']))}; threads {', '.join(map(str, s['threads']))}; "
             f"{s['runs']} timed runs after {s['warmup']} warm-up; CPU memory arena {'on' if s['arena'] else 'off'}; "
             f"created {report['created']}",
             "- input shapes: " + "; ".join(f"batch {b}: " + ", ".join(f"{k} {'x'.join(map(str, v))}"
                                                                      for k, v in shapes.items())
                                            for b, shapes in s["input_shapes"].items())]
    tw = report["torch"]
    version = next((r["versions"]["torch"] for r in report["results"] if r.get("versions", {}).get("torch")), "")
    lines.append(f"- PyTorch {version}: models/ {tw['network']} {tw['options']} (found by {tw['source']}); its "
                 "processes also import onnx, with which models/ makes the seeded weights; oneDNN off also turns "
                 "NNPACK off" if "network" in tw else f"- PyTorch: not compared ({tw['skipped']})")
    lines += ["", "## Configurations", "",
              markdown_table(RESULT_COLUMNS, result_rows(report["results"])), "",
              "Each row ran in a fresh process. peak RSS: the process's VmHWM over loading and running; after "
              "load: VmRSS once the session or network is created; run peak: VmHWM during the warm-up and timed "
              "runs only (restarted after loading); base: VmRSS before loading (runtime imported, inputs "
              "loaded). vs ALL: against ORT ENABLE_ALL at the same batch and threads. latency: median of the "
              "timed runs. Errors: largest |difference| from ORT "
              f"ENABLE_ALL's outputs, absolute and divided by max(1, max |output|); ! marks more than {s['tolerance']:g}.",
              ""]
    for chart in charts:
        lines += [f"![{chart}]({chart})", ""]
    lines += ["## Conv layers", "",
              "Workspace bytes of each Conv at the batch shown. im2col: N x C x Kh x Kw x Ho x Wo (the column "
              "matrix of the whole batch); im2win: N x C x Ho x Wp x Kh (the paper's window tensor, Wp the padded "
              "input width); direct: 0; ours/thread: the window panel com.im2win::Conv reserves per thread "
              "(`_kernels.workspace_bytes`; it does not grow with N). input: X itself, for scale.", ""]
    lines += [f"- {line}" for line in totals_lines(report)] + [""]
    for batch, layers in report["layers"].items():
        lines += [f"### Batch {batch}", "", markdown_table(LAYER_COLUMNS, layer_rows(layers)), ""]
    if rw["left"]:
        lines += ["## Left to ORT", ""] + [f"- {l['node']}: {l['reason']}" for l in rw["left"]] + [""]
    return "\n".join(lines)


def write_charts(report: dict, out_dir: Path) -> tuple[list[str], str | None]:
    """peak_rss.png and latency.png (grouped bars per batch and threads) and workspace.png (per layer).
    Returns (file names, why none were written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install \"im2win-ort[compare]\")"
    import io

    ok = [r for r in report["results"] if r["ok"]]
    configs = [c for c in report["settings"]["configs"] if any(r["config"] == c for r in ok)]
    groups = sorted({(r["batch"], r["threads"]) for r in ok})
    written = []

    def save(fig, name):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        write_atomic(out_dir / name, buffer.getvalue(), binary=True)
        written.append(name)

    title = Path(report["model"]).name
    for name, key, scale, unit in (("peak_rss.png", "peak_rss_bytes", 1 / MiB, "peak RSS (MiB)"),
                                   ("latency.png", "latency_s", 1e3, "median latency (ms)")):
        if not ok:
            break
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * len(configs) / 2), 4))
        width = 0.8 / max(1, len(configs))
        for i, config in enumerate(configs):
            values = [next((r[key] * scale for r in ok if r["config"] == config and (r["batch"], r["threads"]) == g),
                           0.0) for g in groups]
            bars = ax.bar([j + i * width for j in range(len(groups))], values, width, label=CONFIGS[config][0])
            ax.bar_label(bars, fmt="%.0f" if key == "peak_rss_bytes" else "%.3g", fontsize=7)
        ax.set_xticks([j + width * (len(configs) - 1) / 2 for j in range(len(groups))])
        ax.set_xticklabels([f"batch {b}, {t} thread{'s' if t > 1 else ''}" for b, t in groups])
        ax.set_ylabel(unit)
        ax.set_title(f"{title}: {unit.split(' (')[0]} per configuration")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(fig, name)

    batch, layers = max(report["layers"].items(), key=lambda kv: int(kv[0]), default=(None, []))
    layers = [l for l in layers if "x_shape" in l]
    if layers:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(layers)), 4))
        x = np.arange(len(layers))
        width = 0.27
        for i, (key, label) in enumerate((("im2col_bytes", "im2col"), ("im2win_bytes", "im2win tensor"),
                                          ("ours_per_thread_bytes", "ours per thread"))):
            ax.bar(x + (i - 1) * width, [(l[key] or 0) / MiB for l in layers], width, label=label)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([str(i + 1) for i in range(len(layers))], fontsize=6)
        ax.set_xlabel("Conv layer (order in the graph)")
        ax.set_ylabel("workspace (MiB, log scale)")
        ax.set_title(f"{title}: workspace per Conv layer at batch {batch} (direct: 0)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(fig, "workspace.png")
    return written, None


def write_report(report: dict, out_dir: Path, stem: str) -> dict:
    charts, why = write_charts(report, out_dir)
    if why:
        report["charts_note"] = why
    files = {"markdown": str(out_dir / "report.md"), "json": str(out_dir / "report.json"),
             "charts": [str(out_dir / c) for c in charts], "rewritten_model": report["rewritten_model"],
             **({"rewritten_model_nhwc": report["rewritten_model_nhwc"]} if report.get("rewritten_model_nhwc") else {}),
             "inputs": [str(out_dir / f"inputs-b{b}.npz") for b in report["settings"]["batches"]]}
    report["files"] = files
    write_atomic(out_dir / "report.md", format_markdown(report, charts))
    write_atomic(out_dir / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    return files


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")
