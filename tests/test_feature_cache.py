"""FeatureCache: hits, batched misses, corruption detection, atomic concurrent writes, featurize() reuse."""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from backend.data import DataError, MultimodalDataset
from backend.encoders import FeatureCache, featurize
from backend.encoders.builtin import ImagePixels, TextTokens, VectorFeaturizer

REPO = Path(__file__).resolve().parents[1]


class CountingTokens(TextTokens):
    """A real text_tokens featurizer that counts how often it is asked to compute.

    text_tokens itself skips the disk (hashing is cheaper than a read); here the cache is forced on so
    the cache mechanics can be checked on plain strings.
    """

    cacheable = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.calls = 0
        self.items_seen = 0

    def featurize(self, items: list[Any]) -> np.ndarray:
        self.calls += 1
        self.items_seen += len(items)
        return super().featurize(items)


class CountingPixels(ImagePixels):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.items_seen = 0

    def featurize(self, items: list[Any]) -> np.ndarray:
        self.items_seen += len(items)
        return super().featurize(items)


TEXTS = [f"item number {i} with words {i % 3}" for i in range(10)]


def entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.feat"))


def test_second_pass_is_all_hits_and_featurizer_not_called(tmp_path: Path) -> None:
    f1 = CountingTokens(max_len=8)
    cache = FeatureCache(tmp_path)
    first = cache.get_many(f1, TEXTS, batch_size=4)
    assert f1.calls == 3 and f1.items_seen == 10
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (0, 10, 10)
    np.testing.assert_array_equal(first, TextTokens(max_len=8).featurize(TEXTS))

    f2 = CountingTokens(max_len=8)
    fresh = FeatureCache(tmp_path)  # a new process would see the same thing
    second = fresh.get_many(f2, TEXTS, batch_size=4)
    assert f2.calls == 0
    assert (fresh.stats.hits, fresh.stats.misses, fresh.stats.corrupted) == (10, 0, 0)
    np.testing.assert_array_equal(second, first)
    assert second.dtype == np.int64 and second.flags.writeable


def test_only_misses_computed_in_batches_and_duplicates_once(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_many(CountingTokens(max_len=8), TEXTS)
    f = CountingTokens(max_len=8)
    new = [f"fresh text {i}" for i in range(5)]
    items = TEXTS + new + [new[0], TEXTS[0]]
    out = cache.get_many(f, items, batch_size=2)
    assert f.items_seen == 5 and f.calls == 3  # 5 distinct misses in batches of 2
    np.testing.assert_array_equal(out, TextTokens(max_len=8).featurize(items))
    cache.reset_stats()
    g = CountingTokens(max_len=8)
    cache.get_many(g, ["dup", "dup", "dup"])
    assert g.items_seen == 1 and cache.stats.misses == 3 and cache.stats.writes == 1


def test_layout_identity_dirs_and_no_temp_files(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    f = CountingTokens(max_len=8)
    cache.get_many(f, TEXTS)
    files = entries(tmp_path)
    assert len(files) == 10
    for p in files:
        rel = p.relative_to(tmp_path).parts
        assert re.fullmatch(r"[0-9a-f]{32}", rel[0]) and re.fullmatch(r"[0-9a-f]{2}", rel[1])
        assert re.fullmatch(r"[0-9a-f]{40}\.feat", rel[2]) and p.stem.startswith(rel[1])
    assert cache.entry_path(f, cache.item_hash(f, TEXTS[3])) in files
    assert (cache.featurizer_dir(f) / "identity.json").read_text().count(f.identity) == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_identity_change_means_new_entries(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_many(CountingTokens(max_len=8), TEXTS)
    g = CountingTokens(max_len=9)
    out = cache.get_many(g, TEXTS)
    assert g.items_seen == 10 and out.shape == (10, 9)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def _flip_payload(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x01
    p.write_bytes(bytes(b))


def _flip_header(p: Path) -> None:
    b = bytearray(p.read_bytes())
    i = b.index(b'"checksum": "') + len(b'"checksum": "')
    b[i] = ord("0") if b[i] != ord("0") else ord("1")
    p.write_bytes(bytes(b))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-8])


def _truncate_header(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:20])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x93NUMPY not ours" * 10)


@pytest.mark.parametrize("damage", [_flip_payload, _flip_header, _truncate, _truncate_header, _empty, _garbage])
def test_corrupted_entry_detected_logged_and_recomputed(tmp_path: Path, damage: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    cache = FeatureCache(tmp_path)
    f = CountingTokens(max_len=8)
    good = cache.get_many(f, TEXTS)
    victim = cache.entry_path(f, cache.item_hash(f, TEXTS[4]))
    damage(victim)

    g = CountingTokens(max_len=8)
    with caplog.at_level(logging.WARNING, logger="backend.encoders.cache"):
        out = cache.get_many(g, TEXTS)
    np.testing.assert_array_equal(out, good)  # never the damaged value
    assert g.items_seen == 1 and cache.stats.corrupted == 1
    assert any("corrupted entry" in r.getMessage() and victim.name in r.getMessage() for r in caplog.records)

    h = CountingTokens(max_len=8)  # the entry was repaired
    np.testing.assert_array_equal(cache.get_many(h, TEXTS), good)
    assert h.items_seen == 0 and cache.stats.corrupted == 1


def test_entry_of_another_item_is_rejected(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    f = CountingTokens(max_len=8)
    good = cache.get_many(f, TEXTS)
    a, b = (cache.entry_path(f, cache.item_hash(f, t)) for t in TEXTS[:2])
    shutil.copyfile(a, b)  # a valid entry in the wrong place
    g = CountingTokens(max_len=8)
    np.testing.assert_array_equal(cache.get_many(g, TEXTS), good)
    assert g.items_seen == 1 and cache.stats.corrupted == 1


def _png(color: tuple[int, int, int], size: int = 5) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def test_image_entries_keyed_by_file_content(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    a = tmp_path / "a.png"
    a.write_bytes(_png((255, 0, 0)))
    cache = FeatureCache(root)
    first = cache.get_many(CountingPixels(size=4), [str(a)])
    renamed = tmp_path / "moved.png"
    a.rename(renamed)
    f = CountingPixels(size=4)
    np.testing.assert_array_equal(cache.get_many(f, [renamed, renamed.read_bytes()]), np.concatenate([first, first]))
    assert f.items_seen == 0
    renamed.write_bytes(_png((0, 0, 255)))  # edited in place: same path, new content
    out = cache.get_many(f, [str(renamed)])
    assert f.items_seen == 1 and out[0, 2].min() == pytest.approx(1.0)


def test_bad_item_index_survives_hits_and_batches(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    f = ImagePixels(size=4)
    ok = [_png((i, i, i)) for i in range(4)]
    cache.get_many(f, ok[:2])
    with pytest.raises(DataError, match=r"^item 4: not a decodable image"):
        cache.get_many(f, ok + [b"not a png"], batch_size=1)
    with pytest.raises(DataError, match=r"^item 1: file not found"):
        cache.get_many(f, [ok[0], str(tmp_path / "nope.png")])


def test_non_cacheable_featurizer_writes_nothing(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    out = cache.get_many(VectorFeaturizer(dim=2), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(out, [[1, 2], [3, 4]])
    assert not (tmp_path / "c").exists()
    np.testing.assert_array_equal(cache.get(CountingTokens(max_len=3), "a b"), TextTokens(max_len=3).featurize(["a b"])[0])


WORKER = """
import io, sys
from PIL import Image
from backend.encoders import FeatureCache
from backend.encoders.builtin import ImagePixels

def png(i):
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (i % 256, i // 256, 7)).save(buf, format="PNG")
    return buf.getvalue()

items = [png(i) for i in range(300)]
c = FeatureCache(sys.argv[1])
for _ in range(3):
    c.get_many(ImagePixels(size=8), items, batch_size=16)
print(c.stats.corrupted)
"""


def test_concurrent_processes_never_see_partial_entries(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    assert [r[0].strip() for r in results] == ["0", "0", "0"]
    assert not list(tmp_path.rglob("*.tmp"))
    cache = FeatureCache(tmp_path)
    items = [_png((i % 256, i // 256, 7), size=6) for i in range(300)]
    np.testing.assert_array_equal(cache.get_many(ImagePixels(size=8), items), ImagePixels(size=8).featurize(items))
    assert cache.stats.hits == 300 and cache.stats.corrupted == 0


def test_featurize_second_round_computes_nothing(tmp_path: Path) -> None:
    images = [_png((i * 40, 0, 0)) for i in range(6)]
    ds = MultimodalDataset({"img": images, "v": np.ones((6, 2), np.float32)}, np.zeros(6), ["c"],
                           masks={"img": np.array([1, 1, 1, 0, 1, 1], bool)})
    cache = FeatureCache(tmp_path)
    f1 = CountingPixels(size=4)
    a = featurize(ds, {"img": f1}, cache=cache, batch_size=2)
    assert f1.items_seen == 5  # the masked item is never encoded
    f2 = CountingPixels(size=4)
    b = featurize(ds, {"img": f2}, cache=cache, batch_size=2, progress=True)
    assert f2.items_seen == 0 and cache.stats.hits == 5
    np.testing.assert_array_equal(a.modalities["img"], b.modalities["img"])
    np.testing.assert_array_equal(b.masks["img"], ds.masks["img"])
    assert not b.modalities["img"][3].any()


def test_cheap_featurizers_skip_the_disk(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    out = cache.get_many(TextTokens(max_len=4), ["a b", "c"])
    np.testing.assert_array_equal(out, TextTokens(max_len=4).featurize(["a b", "c"]))
    assert not (tmp_path / "c").exists()
