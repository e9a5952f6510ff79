"""Featurizers: registry, identity, image decoding, text hashing, vector validation, featurize()."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.data import UNLABELED, DataError, MultimodalDataset
from backend.encoders import Featurizer, FeatureCache, featurize, get_featurizer, list_featurizers
from backend.encoders.builtin import ImagePixels, TextTokens, VectorFeaturizer, tokenize

REPO = Path(__file__).resolve().parents[1]


def png_bytes(color: tuple[int, ...], size: tuple[int, int] = (8, 6), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_builtins_by_kind() -> None:
    names = list_featurizers()
    assert {"vector", "image_pixels", "text_tokens"} <= set(names)
    assert set(list_featurizers("image")) >= {"image_pixels"}
    assert "text_tokens" not in list_featurizers("image")
    assert isinstance(get_featurizer("image_pixels", size=16), ImagePixels)


def test_registry_unknown_name_and_bad_params() -> None:
    with pytest.raises(DataError, match="unknown featurizer 'nope'.*text_tokens"):
        get_featurizer("nope")
    with pytest.raises(DataError, match="text_tokens"):
        get_featurizer("text_tokens", colour="red")
    with pytest.raises(DataError, match="size"):
        get_featurizer("image_pixels", size=0)


def test_identity_changes_with_params_and_is_stable() -> None:
    a = TextTokens(vocab_size=1000, max_len=8)
    assert a.identity == TextTokens(vocab_size=1000, max_len=8).identity
    assert a.identity.startswith("text_tokens@")
    others = {TextTokens(vocab_size=1001, max_len=8).identity, TextTokens(vocab_size=1000, max_len=9).identity,
              TextTokens(vocab_size=1000, max_len=8, lowercase=False).identity}
    assert a.identity not in others and len(others) == 3
    assert ImagePixels(size=16).identity != ImagePixels(size=32).identity
    assert ImagePixels(background=(0, 0, 0)).identity != ImagePixels().identity
    assert VectorFeaturizer(dim=3).identity != VectorFeaturizer(dim=4).identity


def test_identity_includes_weights_hash() -> None:
    class Weighted(VectorFeaturizer):
        w = "aaaa"

        def weights_hash(self) -> str | None:
            return self.w

    f = Weighted(dim=2)
    before = f.identity
    f.w = "bbbb"
    assert f.identity != before and "w=bbbb" in f.identity


# ------------------------------------------------------------------------------------------ vectors
def test_vector_validates_length_and_finiteness() -> None:
    f = VectorFeaturizer(dim=3)
    out = f.featurize([[1, 2, 3], np.array([4.0, 5, 6])])
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out[1], [4, 5, 6])
    with pytest.raises(DataError, match=r"item 1: expected a vector of length 3"):
        f.featurize([[1, 2, 3], [1, 2]])
    with pytest.raises(DataError, match=r"item 2: .*non-finite"):
        f.featurize([[1, 2, 3], [1, 2, 3], [1, np.nan, 3]])
    with pytest.raises(DataError, match=r"item 0: .*non-finite"):
        f.featurize([[1e39, 0, 0]])  # overflows float32
    with pytest.raises(DataError, match=r"item 1: not a numeric vector"):
        f.featurize([[1, 2, 3], ["a", "b", "c"]])


def test_vector_bind_infers_dim() -> None:
    f = VectorFeaturizer().bind([[1.0, 2.0], [3.0, 4.0]])
    assert f.output_shape == (2,)
    with pytest.raises(DataError, match="dim is unknown"):
        _ = VectorFeaturizer().output_shape


# ------------------------------------------------------------------------------------------ images
def test_image_decoding_png_bytes_data_url_path_pil_array(tmp_path: Path) -> None:
    data = png_bytes((255, 0, 0))
    path = tmp_path / "red.png"
    path.write_bytes(data)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    f = ImagePixels(size=4)
    items = [data, url, str(path), path, Image.open(io.BytesIO(data)), np.full((5, 7, 3), (255, 0, 0), np.uint8)]
    out = f.featurize(items)
    assert out.shape == (6, 3, 4, 4) and out.dtype == np.float32
    expected = np.stack([np.full((4, 4), 1.0), np.full((4, 4), -1.0), np.full((4, 4), -1.0)])
    for row in out:
        np.testing.assert_allclose(row, expected, atol=1e-6)
    # path, bytes and data: URL are keyed by the file BYTES, not the path
    keys = {f.content_key(x) for x in (data, url, str(path), path)}
    assert len(keys) == 1
    other = tmp_path / "renamed.png"
    other.write_bytes(data)
    assert f.content_key(str(other)) == f.content_key(str(path))
    assert f.content_key(png_bytes((0, 255, 0))) != f.content_key(data)


def test_image_range_resize_and_transparency() -> None:
    f = ImagePixels(size=16)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    out = f.featurize([arr, png_bytes((0, 0, 0, 0), mode="RGBA"), png_bytes(128, mode="L")])
    assert out.shape == (3, 3, 16, 16)
    assert out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[1], 1.0)  # fully transparent -> white background
    np.testing.assert_allclose(out[2], 128 / 127.5 - 1, atol=1e-6)  # grayscale -> equal RGB channels
    black_bg = ImagePixels(size=4, background=(0, 0, 0)).featurize([png_bytes((0, 0, 0, 0), mode="RGBA")])
    np.testing.assert_allclose(black_bg, -1.0)


def test_image_bad_items_name_the_item(tmp_path: Path) -> None:
    f = ImagePixels(size=4)
    ok = png_bytes((1, 2, 3))
    with pytest.raises(DataError, match=r"item 1: not a decodable image"):
        f.featurize([ok, b"this is not an image", ok])
    with pytest.raises(DataError, match=r"item 0: file not found"):
        f.featurize([str(tmp_path / "missing.png")])
    with pytest.raises(DataError, match=r"item 0: data: URL has invalid base64"):
        f.featurize(["data:image/png;base64,@@@"])
    with pytest.raises(DataError, match=r"item 0: .*uint8"):
        f.featurize([np.zeros((4, 4, 3), np.float64)])
    with pytest.raises(DataError, match=r"item 0: remote URL"):
        f.featurize(["https://example.com/a.png"])
    with pytest.raises(DataError, match="file not found"):
        f.content_key(str(tmp_path / "missing.png"))


# ------------------------------------------------------------------------------------------ text
SENTENCE = "The quick brown fox jumps over the lazy dog!"
# blake2b(token, digest_size=8) as a big-endian int, mod (vocab_size - 1), plus 1; vocab 2**15, max_len 12
EXPECTED_IDS = [32746, 3293, 29157, 23478, 30088, 22827, 32746, 7747, 11406, 9087, 0, 0]


def test_text_tokens_hard_coded_ids() -> None:
    f = TextTokens(max_len=12)
    assert tokenize(SENTENCE) == ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "!"]
    out = f.featurize([SENTENCE, SENTENCE.upper()])
    assert out.dtype == np.int64 and out.shape == (2, 12)
    assert out[0].tolist() == EXPECTED_IDS
    assert out[1].tolist() == EXPECTED_IDS  # lowercased
    assert TextTokens(max_len=12, lowercase=False).featurize([SENTENCE.upper()])[0].tolist() != EXPECTED_IDS


def test_text_tokens_deterministic_across_processes() -> None:
    code = ("from backend.encoders.builtin import TextTokens;"
            f"print(TextTokens(max_len=12).featurize([{SENTENCE!r}])[0].tolist())")
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
        assert res.stdout.strip() == str(EXPECTED_IDS)


def test_text_tokens_padding_truncation_bounds() -> None:
    f = TextTokens(vocab_size=7, max_len=4)
    out = f.featurize(["a b c d e f g", "one", "?!"])
    assert (out[0] > 0).all()  # truncated to max_len, no padding
    assert out[1, 0] > 0 and (out[1, 1:] == 0).all()
    assert (out[2, :2] > 0).all()  # symbols are tokens too
    assert out.min() >= 0 and out.max() < 7
    assert f.vocab_size == 7
    with pytest.raises(DataError, match=r"item 1: expected a str"):
        f.featurize(["ok", 3])


# ------------------------------------------------------------------------------------------ featurize()
def make_raw_dataset(tmp_path: Path) -> MultimodalDataset:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (200, 200, 0)]
    paths = []
    for i, c in enumerate(colors):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(png_bytes(c))
        paths.append(str(p))
    images = [paths[0], None, paths[2], paths[3], paths[4]]           # item 1: no image
    texts = ["red thing", "green thing", "", "dark thing", "yellow"]  # item 2: empty text
    vec = np.arange(15, dtype=np.float32).reshape(5, 3)
    masks = {"text": np.array([True, True, True, True, False])}       # item 4: text masked out
    return MultimodalDataset({"image": images, "text": texts, "tab": vec}, np.array([0, 1, UNLABELED, 1, 0]),
                             ["a", "b"], masks=masks, ids=np.array(["r", "g", "b", "k", "y"], dtype=object),
                             meta={"source": "test"})


def test_featurize_masks_missing_items(tmp_path: Path) -> None:
    ds = make_raw_dataset(tmp_path)
    out = featurize(ds, {"image": ImagePixels(size=8), "text": "text_tokens"})
    assert out.is_featurized()
    assert out.modalities["image"].shape == (5, 3, 8, 8)
    assert out.modalities["text"].shape == (5, 32) and out.modalities["text"].dtype == np.int64
    np.testing.assert_array_equal(out.masks["image"], [True, False, True, True, True])
    np.testing.assert_array_equal(out.masks["text"], [True, True, False, True, False])
    # zero rows only where the mask is False; present rows hold real features
    for name in ("image", "text"):
        feats, mask = out.modalities[name], out.masks[name]
        assert not feats[~mask].any()
        assert all(feats[i].any() for i in np.flatnonzero(mask))
    np.testing.assert_allclose(out.modalities["image"][0, 0], 1.0)
    # numeric modality passes through unchanged, labels/ids/meta kept
    np.testing.assert_array_equal(out.modalities["tab"], ds.modalities["tab"])
    np.testing.assert_array_equal(out.labels, ds.labels)
    assert list(out.ids) == ["r", "g", "b", "k", "y"]
    assert out.meta["source"] == "test"
    assert out.meta["vocab_size"] == {"text": 2**15}
    assert out.meta["featurizers"]["image"] == ImagePixels(size=8).identity
    assert out.meta["featurizers"]["text"] == TextTokens().identity
    assert "vocab_size" not in ds.meta  # input untouched
    assert ds.modalities["image"][1] is None and isinstance(ds.modalities["image"][0], str)


def test_featurize_errors_name_item_and_modality(tmp_path: Path) -> None:
    ds = make_raw_dataset(tmp_path)
    ds.modalities["image"][3] = b"garbage bytes"
    with pytest.raises(DataError, match=r"modality 'image', item 'k': not a decodable image"):
        featurize(ds, {"image": ImagePixels(size=8), "text": "text_tokens"})
    with pytest.raises(DataError, match=r"modality 'image' holds raw inputs"):
        featurize(ds, {"text": "text_tokens"})
    with pytest.raises(DataError, match=r"unknown modalities \['audio'\]"):
        featurize(ds, {"audio": "vector"})
    with pytest.raises(DataError, match="unknown featurizer"):
        featurize(ds, {"image": "pixels"})


def test_featurize_vector_validation_and_mask(tmp_path: Path) -> None:
    vec = np.ones((4, 2), dtype=np.float64)
    vec[1] = np.nan  # absent item: its NaNs are never checked
    ds = MultimodalDataset({"a": vec, "b": ["x", "y", "z", "w"]}, np.zeros(4), ["c"],
                           masks={"a": np.array([True, False, True, True])})
    out = featurize(ds, {"a": "vector", "b": TextTokens(max_len=3)}, progress=True)
    assert out.modalities["a"].dtype == np.float32 and out.modalities["a"].shape == (4, 2)
    assert not out.modalities["a"][1].any() and not out.masks["a"][1]
    assert out.meta["vocab_size"] == {"b": 2**15}
    vec[2, 0] = np.inf
    bad = MultimodalDataset({"a": vec, "b": ["x", "y", "z", "w"]}, np.zeros(4), ["c"],
                            masks={"a": np.array([True, False, True, True])}, ids=["i0", "i1", "i2", "i3"])
    with pytest.raises(DataError, match=r"modality 'a', item 'i2': .*non-finite"):
        featurize(bad, {"a": "vector", "b": "text_tokens"})


def test_featurize_with_cache_matches_uncached(tmp_path: Path) -> None:
    ds = make_raw_dataset(tmp_path)
    specs: dict[str, Featurizer | str] = {"image": ImagePixels(size=8), "text": TextTokens(max_len=6)}
    plain = featurize(ds, specs)
    cache = FeatureCache(tmp_path / "cache")
    first = featurize(ds, specs, cache=cache, batch_size=2)
    second = featurize(ds, specs, cache=cache, batch_size=2)
    assert cache.stats.misses == 4 and cache.stats.hits == 4  # 4 images present (text_tokens skips the disk)
    for name in ("image", "text", "tab"):
        np.testing.assert_array_equal(first.modalities[name], plain.modalities[name])
        np.testing.assert_array_equal(second.modalities[name], plain.modalities[name])
        np.testing.assert_array_equal(second.masks[name], plain.masks[name])


def test_featurize_all_absent_modality(tmp_path: Path) -> None:
    vec = np.ones((3, 4), np.float32)
    ds = MultimodalDataset({"a": vec, "b": [None, "", None]}, np.zeros(3), ["c"],
                           masks={"a": np.zeros(3, bool)})
    out = featurize(ds, {"a": "vector", "b": TextTokens(max_len=5)})
    assert out.modalities["a"].shape == (3, 4) and not out.modalities["a"].any() and not out.masks["a"].any()
    assert out.modalities["b"].shape == (3, 5) and not out.masks["b"].any()
    with pytest.raises(DataError, match=r"modality 'b' \(vector\): .*dim is unknown"):
        featurize(ds, {"a": "vector", "b": "vector"})
