"""Real dataset loaders (emoji, mfeat): counts, classes, licences, registry, featurized loading, splits."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from backend.data import UNLABELED, DataError
from connectors.datasets import (default_featurizers, list_datasets, load_dataset, load_featurized, split_dataset)
from connectors.datasets.mfeat import VIEWS
from tests.netguard import no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

EMOJI_CATEGORIES = {"People & Body": 386, "Flags": 270, "Objects": 264, "Symbols": 224, "Travel & Places": 218,
                    "Smileys & Emotion": 169, "Animals & Nature": 159, "Food & Drink": 131, "Activities": 85}


@pytest.fixture(scope="module")
def emoji():
    return load_dataset("emoji")


def test_emoji_counts_classes_and_licences(emoji):
    assert len(emoji) == 1906 and emoji.modality_names == ["image", "text"]
    assert emoji.class_names == sorted(EMOJI_CATEGORIES)
    counts = Counter(emoji.class_names[y] for y in emoji.true_labels)
    assert counts == EMOJI_CATEGORIES
    assert (emoji.labels == UNLABELED).all() and all(emoji.masks[k].all() for k in emoji.modality_names)
    assert len(set(emoji.ids.tolist())) == 1906 and emoji.ids[0] == "1F600"
    assert all(isinstance(b, bytes) and b.startswith(b"\x89PNG") for b in emoji.modalities["image"])
    assert emoji.modalities["text"][0] == "grinning face: grinning"
    assert all(t.strip() for t in emoji.modalities["text"])
    assert emoji.meta["licenses"] == {"metadata": "MIT", "images": "Apache-2.0"}
    lic = {k: Path(p).read_text() for k, p in emoji.meta["license_files"].items()}
    assert "MIT License" in lic["metadata"] and "Cal Henderson" in lic["metadata"]
    assert "Apache License" in lic["images"] and "Version 2.0" in lic["images"]
    assert (Path(emoji.meta["license_files"]["images"]).parent / "NOTICE.md").is_file()


def test_emoji_subcategory_variant_and_integrity():
    sub = load_dataset("emoji", label="subcategory", verify=True)  # checks the archive's recorded sha256
    assert len(sub) == 1906 and sub.n_classes == 98
    assert np.bincount(sub.true_labels).min() >= 1
    assert sub.meta["category_of"]["1F600"] == "Smileys & Emotion" and sub.class_names[sub.true_labels[0]] == "face-smiling"
    with pytest.raises(DataError, match="label must be one of"):
        load_dataset("emoji", label="colour")
    with pytest.raises(DataError, match="emoji.json not found"):
        load_dataset("emoji", root="/nonexistent")


EMOJI_TAGS = {"activities": 85, "activity": 57, "alphanum": 39, "animal": 130, "animals/nature": 159,
              "body/people": 386, "clothing": 47, "country": 259, "drink/food": 131, "emotion/smileys": 169,
              "face": 130, "family": 37, "fantasy": 32, "flag/flags": 270, "geometric": 34, "gesture": 30, "ground": 50,
              "hand": 43, "mammal": 66, "objects": 264, "other": 65, "person": 288, "place": 66, "places/travel": 218,
              "prepared": 34, "role": 82, "sky/weather": 47, "sport": 70, "symbol": 58, "symbols": 224, "time": 31,
              "transport": 85}


def test_tag_sets_words_threshold_and_merged_duplicates():
    from connectors.datasets.emoji_tags import tag_sets

    names = [("Food & Drink", "food-fruit"), ("Food & Drink", "drink"), ("Sky & Weather", "sky-cloud"),
             ("Food & Drink", "food-fruit")]
    tags, sets = tag_sets(names, min_count=2)
    # "and" is no tag; food and drink tag the same items (one tag); fruit twice; sky/weather once each: dropped
    assert tags == ["drink/food", "fruit"]
    assert sets.tolist() == [[1, 1], [1, 0], [0, 0], [1, 1]]
    with pytest.raises(DataError, match="min_count"):
        tag_sets(names, min_count=0)


def test_emoji_tags_label_sets_and_counts(emoji):
    tags = load_dataset("emoji_tags")
    assert tags.multi_label and tags.labels.shape == (1906, 32) and (tags.labels == UNLABELED).all()
    assert np.array_equal(tags.ids, emoji.ids) and tags.modalities["text"] == emoji.modalities["text"]
    counts = dict(zip(tags.class_names, tags.true_labels.sum(axis=0).tolist()))
    assert counts == EMOJI_TAGS == tags.meta["tag_counts"] and min(counts.values()) >= 30
    size = tags.true_labels.sum(axis=1)
    assert size.min() == 1 and size.max() == 3 and size.mean() == pytest.approx(1.934, abs=1e-3)  # never empty
    assert len({tuple(r) for r in tags.true_labels}) == 39
    # every category contributes its tag; a tag can cut across categories
    cat = np.array([emoji.class_names[y] for y in emoji.true_labels])
    col = {t: tags.true_labels[:, j].astype(bool) for j, t in enumerate(tags.class_names)}
    assert np.array_equal(col["body/people"], cat == "People & Body")
    assert np.array_equal(col["objects"], cat == "Objects")
    assert set(cat[col["sport"]]) == {"People & Body", "Activities"}
    first = dict(zip(tags.class_names, tags.true_labels[0]))  # grinning face: Smileys & Emotion / face-smiling
    assert {t for t, v in first.items() if v} == {"emotion/smileys", "face"}
    assert "emoji_tags" in list_datasets()


def test_split_dataset_stratifies_label_sets():
    tags = load_dataset("emoji_tags")
    pool, val, test = split_dataset(tags, n_val=200, n_test=400, seed=0)
    assert (len(pool), len(val), len(test)) == (1306, 200, 400)
    assert pool.labels.shape == (1306, 32) and (pool.labels == UNLABELED).all()
    assert (test.labels == test.true_labels).all()
    assert pool.true_labels.sum(axis=0).min() >= 15 and test.true_labels.sum(axis=0).min() >= 4  # every tag in each
    again = split_dataset(tags, n_val=200, n_test=400, seed=0)[2]
    assert np.array_equal(again.ids, test.ids)


def test_emoji_images_decode(emoji):
    from PIL import Image

    for b in emoji.modalities["image"][::200]:
        with Image.open(io.BytesIO(b)) as im:
            assert im.size == (64, 64)


def test_mfeat_counts_views_and_licence():
    ds = load_dataset("mfeat")
    assert len(ds) == 2000 and ds.modality_names == list(VIEWS) and ds.n_classes == 10
    assert np.bincount(ds.true_labels).tolist() == [200] * 10
    assert (ds.true_labels == np.repeat(np.arange(10), 200)).all()
    for v, (d, _) in VIEWS.items():
        x = ds.modalities[v]
        assert x.shape == (2000, d) and x.dtype == np.float32 and np.isfinite(x).all()
        np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-4)
        sd = x.std(axis=0)
        assert np.all((np.abs(sd - 1) < 1e-3) | (sd == 0))
    assert ds.meta["licenses"] == {"data": "CC-BY-4.0"}
    assert "CC BY 4.0" in Path(ds.meta["license_files"]["data"]).read_text()
    assert ds.is_featurized() and default_featurizers(ds) == {}

    two = load_dataset("mfeat", views=("mor", "pix"), standardize=False)
    assert two.modality_names == ["mor", "pix"] and two.modalities["pix"].max() == 6.0  # raw pixel counts 0..6


@pytest.mark.parametrize("views, match", [(("fou",), "2 to 6"), (("fou", "fou"), "2 to 6"), (("fou", "abc"), "unknown views")])
def test_mfeat_bad_views(views, match):
    with pytest.raises(DataError, match=match):
        load_dataset("mfeat", views=views)


def test_registry():
    assert set(list_datasets()) >= {"emoji", "mfeat"}
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(DataError, match="bad parameters"):
        load_dataset("mfeat", colour="red")


def test_load_featurized_simple_and_cached(emoji, tmp_path):
    small = emoji.subset(range(0, 1906, 50))
    assert default_featurizers(small) == {"image": "image_pixels", "text": "text_tokens"}
    assert default_featurizers(small, "pretrained") == {"image": "efficientnet_lite0", "text": "minilm"}
    a = load_featurized(small, "simple", cache_dir=tmp_path)
    assert a.is_featurized() and a.feature_shape("image") == (3, 32, 32) and a.modalities["text"].dtype == np.int64
    assert a.meta["vocab_size"]["text"] == 2**15 and a.meta["licenses"]["images"] == "Apache-2.0"
    b = load_featurized(small, {"image": "image_pixels", "text": "text_tokens"}, cache_dir=tmp_path)
    for k in ("image", "text"):
        np.testing.assert_array_equal(a.modalities[k], b.modalities[k])
    mf = load_featurized("mfeat", views=("kar", "mor"), cache_dir=None)
    assert mf.modality_names == ["kar", "mor"] and mf.is_featurized()
    with pytest.raises(DataError, match="preset"):
        load_featurized(small, "fancy")


def test_split_dataset_stratified_and_deterministic():
    ds = load_dataset("mfeat", views=("kar", "mor"))
    pool, val, test = split_dataset(ds, n_val=200, n_test=0.2, seed=3)
    assert (len(pool), len(val), len(test)) == (1400, 200, 400)
    assert np.bincount(val.true_labels).tolist() == [20] * 10 and np.bincount(test.true_labels).tolist() == [40] * 10
    assert (pool.labels == UNLABELED).all() and (val.labels == val.true_labels).all()
    ids = [set(p.ids.tolist()) for p in (pool, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and len(set.union(*ids)) == 2000
    again = split_dataset(ds, n_val=200, n_test=0.2, seed=3)
    assert all((x.ids == y.ids).all() for x, y in zip((pool, val, test), again))
    assert not (split_dataset(ds, n_val=200, n_test=0.2, seed=4)[1].ids == val.ids).all()
    with pytest.raises(DataError, match="leaves no pool"):
        split_dataset(ds, n_val=1000, n_test=1000)


def test_prepare_script_on_a_small_tarball(tmp_path):
    """scripts/prepare_emoji.py filters and packs exactly as documented (a hand-made tarball, no npm)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import prepare_emoji
    finally:
        sys.path.pop(0)
    from PIL import Image

    def png(c):
        buf = io.BytesIO()
        Image.new("RGBA", (64, 64), c).save(buf, format="PNG")
        return buf.getvalue()

    base = {"short_names": ["x"], "subcategory": "s", "added_in": "1.0", "has_img_google": True}
    entries = [{**base, "unified": "1F601", "name": "B", "category": "Smileys & Emotion", "sort_order": 2, "image": "1f601.png",
                "skin_variations": {"1F3FB": {}}},
               {**base, "unified": "1F600", "name": "A", "category": "Smileys & Emotion", "sort_order": 1, "image": "1f600.png"},
               {**base, "unified": "1F3FB", "name": "TONE", "category": "Component", "sort_order": 3, "image": "1f3fb.png"}]
    files = {"package/package.json": json.dumps({"version": "16.0.0"}).encode(), "package/emoji.json": json.dumps(entries).encode(),
             "package/LICENSE": b"The MIT License (MIT)\n", "package/img/google/64/1f600.png": png((255, 0, 0, 255)),
             "package/img/google/64/1f601.png": png((0, 255, 0, 128)), "package/img/google/64/1f3fb.png": png((0, 0, 0, 255))}
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "emoji"
    out.mkdir()
    (out / "LICENSE-images-Apache-2.0.txt").write_text("Apache License\nVersion 2.0\n")
    summary = prepare_emoji.prepare(tgz, out)
    assert summary["emojis"] == 2
    first = (out / "images-google-64.zip").read_bytes()
    prepare_emoji.prepare(tgz, out)
    assert (out / "images-google-64.zip").read_bytes() == first  # byte-identical reruns
    ds = load_dataset("emoji", root=out, verify=True)
    assert list(ds.ids) == ["1F600", "1F601"] and ds.modalities["text"] == ["a: x", "b: x"]
