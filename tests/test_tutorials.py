"""The tutorial notebooks run top to bottom in a fresh kernel and draw their figures.

Each notebook runs with nbclient in the ``python3`` kernel (ipykernel, a dev dependency,
provides it), in a temporary working directory so that nothing is written into the repo.
The kernel gets ``OMP_NUM_THREADS=1``: the notebooks' tensors are small, and on a busy
2-core machine two OpenMP threads per process made a training step 20 times slower than one.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_tutorials_are_there_and_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_compare_with_autoguides.ipynb",
        "03_diagnostics_with_arviz.ipynb",
        "04_non_identifiability.ipynb",
    ]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in code_cells(notebook):
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_and_draws_figures(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MPLBACKEND", None)  # a non-interactive backend here would keep the kernel from drawing inline
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    figures = [
        output
        for cell in code_cells(notebook)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert figures, f"{path.name} drew no figure"
