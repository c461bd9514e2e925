"""``fsync_dir``: a rename made durable, on file systems that can and cannot fsync a directory."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from corteza.client.files import fsync_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX directories only")


def test_a_real_directory_is_synced(tmp_path: Path) -> None:
    (tmp_path / "a.part").write_text("x")
    os.replace(tmp_path / "a.part", tmp_path / "a")
    fsync_dir(tmp_path)
    assert (tmp_path / "a").read_text() == "x"


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_a_file_system_that_cannot_sync_a_directory_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # Some network and FUSE file systems answer so; none is at hand in a test.
    def refuse(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    fsync_dir(tmp_path)


def test_any_other_failure_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError) as info:
        fsync_dir(tmp_path)
    assert info.value.errno == errno.EIO
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
