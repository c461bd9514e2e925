"""Stand-ins for programs the tests cannot run for real here (there is no internet)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FAKES = Path(__file__).parent
FAKE_URL = "https://gentle-river-fake.trycloudflare.com"


def put_fake_cloudflared_on_path(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copy the stand-in ``cloudflared`` into ``bin_dir`` (executable) and put it first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "cloudflared"
    shutil.copyfile(FAKES / "cloudflared", target)
    target.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLOUDFLARED_DELAY", "0.2")
    return target
