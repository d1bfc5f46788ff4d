"""The README's Python example runs as written, on the default model copied to mine.pt."""

import re
import shutil
from pathlib import Path

from eelbert_export.zoo import default_model

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    shutil.copy(default_model(), "mine.pt")
    Path("build/mine").mkdir(parents=True)
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.split("\n")
    assert int(printed[0].split()[0]) == Path("build/mine/mine.int8.onnx").stat().st_size
    assert float(printed[0].split()[1]) >= 0.999
