"""The quickstart notebook runs from top to bottom and reaches the end of the flow."""

import pathlib
import re

import nbclient
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow  # a kernel process and a full training run (~30 s)
def test_quickstart_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    agreement = float(re.search(r"'agreement': ([0-9.]+)", text).group(1))
    assert agreement >= 0.99, text[-2000:]
    assert (tmp_path / "model.tflite").exists() and (tmp_path / "saved_model").is_dir()
