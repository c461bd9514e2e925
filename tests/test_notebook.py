"""notebooks/colab_server.ipynb runs outside Colab: its code cells, in a real Python process.

IPython magics (``%pip``) are dropped; google.colab is absent here, so the Drive cell
falls back to ./checkpoints by itself. The stand-in cloudflared (tests/fakes) replaces
the real one, since there is no internet here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from corteza.server.checkpoints.store import list_checkpoints
from tests.fakes import FAKE_URL, put_fake_cloudflared_on_path
from tests.server.launch.test_tunnel import alive

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colab_server.ipynb"

# Between the start cell and the stop cell: the server answers while the cell has returned.
PROBE = """
import httpx
assert server.running
assert httpx.get(server.local_url + "/health", timeout=10).status_code == 200
print("probe: ok")
"""
AFTER = """
assert not server.running
print("stopped: ok")
"""


def code_cells() -> list[str]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return [
        "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def test_the_notebook_is_valid_and_installs_with_the_tunnel_extra() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    install = notebook.cells[1].source.splitlines()  # the uploaded wheel, else a checkout
    assert install[-1] == '%pip install "{SOURCE}[server,tunnel]"'
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    assert code_cells()[-1] == "server.stop()"


def test_the_notebook_starts_a_tunnelled_server_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_fake_cloudflared_on_path(tmp_path / "bin", monkeypatch)
    record = tmp_path / "cloudflared.json"
    cells = code_cells()
    script = "\n\n".join([*cells[:-1], PROBE, cells[-1], AFTER])
    env = {**os.environ, "CORTEZA_PRESET": "tiny", "FAKE_CLOUDFLARED_RECORD": str(record)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Not on Colab: checkpoints go to ./checkpoints"
    assert lines[1] == "On your PC, in a terminal:"
    connect = re.fullmatch(
        rf"    corteza connect {re.escape(FAKE_URL)} --token (\S{{32,}})", lines[2]
    )
    assert connect is not None, lines[2]
    token = connect.group(1)
    assert lines[3] == f"Dashboard: {FAKE_URL}/#token={token}"
    assert lines[4:] == ["probe: ok", "stopped: ok"]
    assert len(list_checkpoints(tmp_path / "checkpoints")) == 1  # the final one, from stop()
    assert not alive(json.loads(record.read_text())["pid"])
