"""Files replaced atomically (pyro_aevb.experiment.atomic): the old contents or the new, never a torn file or a leftover."""

import os
import stat

import pytest

from pyro_aevb.experiment import atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_atomic_replaces_the_contents(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    atomic.write_atomic(target, "new ünïcode\n")
    assert target.read_bytes() == "new ünïcode\n".encode("utf-8")
    assert _names(tmp_path) == ["result.json"], "a temporary file was left"


@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(where, tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text("old")

    def fail(*args, **kwargs):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(os, "fsync" if where == "write" else "replace", fail)
    with pytest.raises(OSError):
        atomic.write_atomic(target, b"new")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["config.json"], "a temporary file was left"


def test_the_temporary_file_has_the_mode_asked_for(tmp_path):
    tmp = atomic.write_temporary(tmp_path / "checkpoint.pt", b"1234", mode=0o600)
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
    assert tmp.name.startswith(".checkpoint.pt.") and tmp.name.endswith(".tmp")
    atomic.move_into_place(tmp, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"1234" and _names(tmp_path) == ["checkpoint.pt"]


def test_replacing_renames_what_the_writer_wrote_and_nothing_on_an_error(tmp_path):
    target = tmp_path / "figure.png"
    with atomic.replacing(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with atomic.replacing(target) as tmp:
            tmp.write_bytes(b"torn")
            raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"first"
    assert _names(tmp_path) == ["figure.png"], "a temporary file was left"


def test_remove_temporary_removes_only_leftovers(tmp_path):
    kept = ["checkpoint.pt", "config.json", "metrics.csv", "reconstructions.png", ".lock"]
    leftovers = [".checkpoint.pt.ab12cd34.tmp", ".manifold.png.0011aabb.tmp.png", "config.json.tmp", "metrics.csv.tmp"]
    for name in kept + leftovers:
        (tmp_path / name).write_bytes(b"x")
    atomic.remove_temporary(tmp_path)
    assert _names(tmp_path) == sorted(kept)
