"""README.md's and docs/*.md's examples run as written, and every shell command they show runs in a
test or is marked as needing what CI lacks.

Fenced blocks carry a language: `python` blocks run here; `sh` blocks are commands, each line of
which must be in COMMANDS below, saying how it is covered: run here (in a scratch directory with a
small model.onnx), by a named test file or by .ci/run (which must contain the text given), or what
it needs that CI lacks; `text` blocks are output, listings and formulas.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", flags=re.S | re.M)


def _blocks(language: str) -> list[tuple[str, str]]:
    return [(path.relative_to(ROOT).as_posix(), body) for path in DOCS
            for lang, body in FENCE.findall(path.read_text()) if lang.strip() == language]


PYTHON = _blocks("python")


def _command_lines() -> list[tuple[str, str]]:
    """(document, command) for every command line of every sh block, trailing comment removed."""
    lines = []
    for doc, body in _blocks("sh"):
        for line in body.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                lines.append((doc, command))
    return lines


RUN = ("run",)
COMMANDS = {
    # README.md
    'pip install ".[compare]" && python -m models': ("test", "tests/test_models.py", "`python -m models`"),
    'pip install ".[test]" && pytest': ("ci", ".ci/run", 'pip install ".[test]" && pytest'),
    "pip install dist/im2win_ort-*.whl": ("test", "tests/test_wheel.py", "--only-binary"),
    "im2win-ort rewrite model.onnx -o model.im2win.onnx --validate --report": RUN,
    # docs/deploying.md
    "scripts/build_wheel.sh": ("ci", ".ci/run", "scripts/build_wheel.sh"),
    "scripts/test_ort_version.sh 1.21.0 dist/im2win_ort-*.whl": ("ci", ".ci/run", "scripts/test_ort_version.sh"),
    "im2win-ort triton-config model.onnx -o model_repository/ --name resnet50": RUN,
    "tritonserver --model-repository=/models": ("needs", "Triton's server container"),
    'pip install "im2win-ort[ray]"': ("needs", "the package on a package index (CI installs ray[data] itself)"),
    "python examples/ray_batch_inference.py model.onnx --inputs x.npy --out y.npz --workers 4 --check":
        ("test", "tests/test_deploy.py", "ray_batch_inference"),
    # docs/robustness.md
    "IM2WIN_FUZZ_EXAMPLES=100000 IM2WIN_FUZZ_SEED=$RANDOM pytest -s tests/test_fuzz.py":
        ("needs", "hours of CPU (CI runs the same test with 1000 seeded cases per ISA path)"),
    # docs/performance.md
    "python -m models.export resnet50": ("test", "tests/test_models.py", '"models.export"'),
    "im2win-ort compare resnet50.onnx --batch 1,16 --threads 1 --runs 10":
        ("test", "tests/test_compare.py", "compare.main("),
    "im2win-ort bench --sets paper,resnet50,vgg16,mobilenetv2 --threads 1,2 --json bench.json":
        ("test", "tests/test_bench.py", "bench.main("),
    "python -m im2win_ort.measure.layouts --threads 1,2 --runs 30 --json bottleneck.json":
        ("test", "tests/test_layouts_measure.py", 'layouts.main(["--threads", "1", "--runs", "1", "--size"'),
    "python -m im2win_ort.measure.layouts --layers resnet50,mobilenetv2 --threads 1 --json layers.json":
        ("test", "tests/test_layouts_measure.py", 'layouts.main(["--layers"'),
    "python -m im2win_ort.measure.layouts --models resnet50.onnx,mobilenet_v2.onnx --threads 1,2 --json networks.json":
        ("test", "tests/test_layouts_measure.py", 'layouts.main(["--models"'),
    'python -m im2win_ort.measure.report --add im2win-compare-resnet50/report.json --note "What else ran on the '
    'machine."': ("test", "tests/test_performance_doc.py", '"--add"'),
    "python -m im2win_ort.measure.report --check": RUN,
    "im2win-ort profile resnet50.onnx --runs 20": ("test", "tests/test_profile.py", '"profile"'),
}


def test_docs_have_examples():
    assert len(PYTHON) >= 4 and len(_command_lines()) >= 10


def test_every_fenced_block_says_what_it_is():
    for path in DOCS:
        for lang, _ in FENCE.findall(path.read_text()):
            assert lang.strip() in ("python", "sh", "text"), f"{path.name}: a ``` block without python, sh or text"


@pytest.mark.parametrize("index", range(len(PYTHON)), ids=[f"{doc}-{i}" for i, (doc, _) in enumerate(PYTHON)])
def test_python_example_runs(index, capsys):
    doc, code = PYTHON[index]
    exec(compile(code, f"{doc} example {index}", "exec"), {})
    out = capsys.readouterr().out
    # The comments in the example state the shapes it prints; check each one.
    for comment in re.findall(r"# (\(.*)", code):
        for shape in re.findall(r"\([\d, ]+\)", comment):
            assert shape in out


def test_every_command_is_covered_and_every_entry_is_shown():
    shown = _command_lines()
    missing = [f"{doc}: {command}" for doc, command in shown if command not in COMMANDS]
    assert not missing, "commands in the docs that no test runs and nothing marks:\n" + "\n".join(missing)
    stale = set(COMMANDS) - {command for _, command in shown}
    assert not stale, f"COMMANDS entries no document shows any more: {sorted(stale)}"


@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if how[0] in ("test", "ci")])
def test_command_is_covered_where_it_says(command):
    _, where, text = COMMANDS[command]
    assert text in (ROOT / where).read_text(), f"{where} no longer contains {text!r}"


@pytest.fixture
def scratch(tmp_path):
    """A directory with model.onnx: the demo network with its Conv nodes still ONNX Conv."""
    from im2win_ort.demo import build_models

    original, _ = build_models()
    (tmp_path / "model.onnx").write_bytes(original.SerializeToString())
    return tmp_path


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "im2win-ort":
        return [sys.executable, "-m", "im2win_ort", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return words


@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if how == RUN])
def test_command_runs(command, scratch):
    # The repository's own commands (the report) run at its root; the rest where model.onnx is.
    cwd = ROOT if "im2win_ort.measure.report" in command else scratch
    done = subprocess.run(_argv(command), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def _anchors(path: pathlib.Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    text = FENCE.sub("", path.read_text())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_links_between_the_docs_resolve():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
