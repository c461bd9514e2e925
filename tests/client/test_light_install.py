"""The client side works where torch (and the server's packages) cannot be imported.

The subprocess installs an import hook that makes torch, fastapi and uvicorn
unimportable, then trains against a real server through the CLI and the
library. `make check-light` (run by CI) does the same from a real virtual
environment created with the light install alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from corteza.client import make_dataset, save_dataset
from tests.conftest import TINY, LiveServer

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "fastapi", "uvicorn", "starlette"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_the_client_trains_and_predicts_without_torch(live_server: LiveServer) -> None:
    result = _run(f"""
import numpy as np
from corteza import Client
with Client({live_server.url!r}) as client:
    out = client.train_batch(np.ones((4, {TINY.input_dim})), [0, 1, 0, 1])
    probs = client.predict(np.ones((2, {TINY.input_dim}))).anomaly_prob
print(out.batch_size, probs.shape[0], "torch" in sys.modules)
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "2", "False"]


def test_corteza_train_runs_without_torch(live_server: LiveServer, tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    save_dataset(make_dataset(40, input_dim=TINY.input_dim), data)
    result = _run(f"""
from corteza.cli import main
sys.argv = ["corteza", "train", {str(data)!r}, "--server", {live_server.url!r}, "--json"]
main()
""")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == 32


def test_without_a_server_part_a_local_server_is_refused_clearly(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    save_dataset(make_dataset(40, input_dim=TINY.input_dim), data)
    result = _run(f"""
import os
os.environ.pop("CORTEZA_URL", None); os.environ.pop("COLAB_SERVER_URL", None)
from corteza.cli import main
sys.argv = ["corteza", "train", {str(data)!r}]
main()
""")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: No server configured, and this install cannot start a local one (missing "
        "torch, fastapi, uvicorn): pass --server URL, set CORTEZA_URL, or "
        "pip install 'corteza[server]'"
    )


def test_corteza_compat_runs_without_torch(live_server: LiveServer) -> None:
    """The seed's ``ClienteColab`` (tests/client/test_compat.py) on the light install."""
    result = _run(f"""
import corteza.compat
from corteza.compat import ClienteColab
with ClienteColab({{"serverUrl": {live_server.url!r}}}) as cliente:
    ok = cliente.conectar()
    r = cliente.entrenar([{{"input_data": [0.5] * {TINY.input_dim}, "anomaly_label": 1}}])
try:
    import torch
except ModuleNotFoundError:
    blocked = True
print(corteza.compat.__all__, ok, r.batch_size, "torch" in sys.modules, blocked)
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['ClienteColab']", "True", "1", "False", "True"]
