"""The README's example, pasted as is, runs (it trains: slow)."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"


@pytest.mark.slow
def test_readme_example_runs_as_pasted(tmp_path):
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    agreement = re.search(r"agreement of the .tflite with the QAT model: ([0-9.]+)%", result.stdout)
    assert agreement and float(agreement.group(1)) >= 99.0, result.stdout[-2000:]
    assert {"config.json", "qat.keras", "model.tflite"} <= {p.name for p in tmp_path.iterdir()}
