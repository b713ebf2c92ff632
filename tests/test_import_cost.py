"""`import im2win_ort; im2win_ort.get_library_path()` is what every ORT user runs: it must not pull
in onnx, onnxruntime, numpy or the rewriter (they load on first use of what needs them)."""

import subprocess
import sys

HEAVY = ("onnx", "onnxruntime", "numpy", "im2win_ort.rewriter", "im2win_ort.session", "im2win_ort.reference")


def _run(code: str, tmp_path) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_library_path_imports_nothing_heavy(tmp_path):
    loaded = _run("import sys, im2win_ort; im2win_ort.get_library_path(); "
                  f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))", tmp_path)
    assert loaded == "[]"


def test_the_rest_of_the_api_loads_on_first_use(tmp_path):
    out = _run("import im2win_ort\n"
               "from im2win_ort import reference, rewrite, rewrite_with_report, RewriteReport, InferenceSession\n"
               "print(callable(rewrite), callable(rewrite_with_report), hasattr(reference, 'conv'),\n"
               "      InferenceSession.__name__, 'rewrite' in dir(im2win_ort), im2win_ort.rewrite is rewrite)", tmp_path)
    assert out == "True True True InferenceSession True True"
    bad = subprocess.run([sys.executable, "-c", "import im2win_ort; im2win_ort.nope"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert bad.returncode == 1 and "has no attribute 'nope'" in bad.stderr
