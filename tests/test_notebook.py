"""The quickstart notebook: stored without outputs, and runs top to bottom in a fresh kernel."""

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")  # provides the "python3" kernel

from conftest import SHARED_DATA  # noqa: E402
from keras_derain.export import TOLERANCE  # noqa: E402 (after the skips)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"
# Per cell; the whole notebook took about 25 s on 2 busy CPU cores.
CELL_TIMEOUT_S = 600


def printed_text(notebook):
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def test_stored_without_outputs():
    notebook = nbformat.read(QUICKSTART, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the notebook's outputs"


def test_runs_top_to_bottom(tmp_path):
    notebook = nbformat.read(QUICKSTART, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # the working directory, as in Jupyter
    )
    # The notebook writes its models under tempfile's folder: keep them in pytest's.
    client.execute(env={**os.environ, "TMPDIR": str(tmp_path)})  # a failing cell raises CellExecutionError

    text = printed_text(notebook)
    match = re.search(r"ONNX vs Keras on a \d+x\d+ photo: max abs difference (\S+)", text)
    assert match, f"no ONNX comparison printed:\n{text}"
    assert float(match.group(1)) < TOLERANCE
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    # clean | rainy, losses, rainy | derained, and the real photo where ../shared has it.
    real_photo = (SHARED_DATA / "raindrop_real" / "unpaired" / "test_1.png").is_file()
    assert len(images) == (4 if real_photo else 3)
