"""Cache.get_or_build: one build per key, a hit afterwards, nothing left by a failed build."""

from __future__ import annotations

from pathlib import Path

import pytest

from obliviate.cache import Cache


class Builder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, tmp: Path) -> None:
        self.calls.append(tmp)
        (tmp / "payload.txt").write_text(f"built {len(self.calls)}\n")
        if self.fail:
            raise RuntimeError("interrupted build")


def test_builds_once_then_hits(tmp_path: Path) -> None:
    cache, build = Cache(tmp_path), Builder()
    path1, hit1 = cache.get_or_build("model", {"a": 1}, build)
    path2, hit2 = cache.get_or_build("model", {"a": 1}, build)
    assert (hit1, hit2) == (False, True)
    assert path1 == path2 == cache.path("model", {"a": 1})
    assert len(build.calls) == 1
    assert build.calls[0] != path1  # built in a temporary sibling, then renamed
    assert (path1 / "payload.txt").read_text() == "built 1\n"
    assert (path1 / ".complete").is_file()
    # a second Cache object on the same root sees the same entry
    assert Cache(tmp_path).get_or_build("model", {"a": 1}, build) == (path1, True)
    assert len(build.calls) == 1
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [path1.name]


def test_different_key_or_kind_builds_again(tmp_path: Path) -> None:
    cache, build = Cache(tmp_path), Builder()
    p1, _ = cache.get_or_build("model", {"a": 1}, build)
    p2, hit2 = cache.get_or_build("model", {"a": 2}, build)
    p3, hit3 = cache.get_or_build("data", {"a": 1}, build)
    assert (hit2, hit3) == (False, False)
    assert len({p1, p2, p3}) == 3
    assert len(build.calls) == 3


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.get_or_build("model", {"a": 1}, Builder(fail=True))
    kind_dir = tmp_path / "model"
    assert not cache.path("model", {"a": 1}).exists()
    assert not kind_dir.exists() or list(kind_dir.iterdir()) == []
    # the next call builds for real (a miss), then hits
    build = Builder()
    assert cache.get_or_build("model", {"a": 1}, build)[1] is False
    assert cache.get_or_build("model", {"a": 1}, build)[1] is True
    assert len(build.calls) == 1


def test_incomplete_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    stale = cache.path("model", {"a": 1})
    stale.mkdir(parents=True)
    (stale / "payload.txt").write_text("half written\n")  # no .complete marker
    build = Builder()
    path, hit = cache.get_or_build("model", {"a": 1}, build)
    assert (path, hit) == (stale, False)
    assert (path / "payload.txt").read_text() == "built 1\n"
    assert len(build.calls) == 1
