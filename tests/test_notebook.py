"""The example notebook: committed without outputs, and every cell runs headlessly (nbclient)."""
import json
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "example.ipynb"


def test_the_committed_notebook_has_no_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_the_notebook_runs_every_cell(data_dir, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("DEEPFAKE_DATA", str(data_dir))  # the notebook's kernel process inherits it
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # strip, timeline, Grad-CAM strip, histogram
    tables = "".join(o["data"].get("text/plain", "") for o in outputs if "data" in o)
    assert "log_loss" in tables and "report.html" in "".join(o.get("text", "") for o in outputs)
