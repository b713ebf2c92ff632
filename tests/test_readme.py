"""README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})
    out = capsys.readouterr().out
    # The comments in the example state the shapes it prints; check each one.
    for comment in re.findall(r"# (\(.*)", BLOCKS[index]):
        for shape in re.findall(r"\([\d, ]+\)", comment):
            assert shape in out
