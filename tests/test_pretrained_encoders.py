"""Packaged pretrained encoders: offline (no network attempted), deterministic, documented sizes, cached.

Encodes a few dozen items only; the models load once per session (about 4 s on 2 CPU cores).
"""

from __future__ import annotations

import base64
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"  # before any huggingface_hub import reads it
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest

from backend.data import DataError, MultimodalDataset
from backend.encoders import FeatureCache, featurize, get_featurizer, list_featurizers
from backend.encoders.pretrained import (EfficientNetLite0, HFImageFeaturizer, HFTextFeaturizer, MiniLM,
                                         clear_loaded_models, minilm_model_dir)
from connectors.datasets import load_dataset
from tests.netguard import NetworkAccessError, no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

TEXTS = ["grinning face: grinning", "dog face: dog", "airplane: airplane", "puppy", "a dog", "flag of france: fr"]


@pytest.fixture(scope="module")
def emoji24() -> MultimodalDataset:
    """24 emojis spread over the list (all 9 categories appear)."""
    ds = load_dataset("emoji")
    return ds.subset(np.linspace(0, len(ds) - 1, 24).astype(int))


def test_guard_refuses_non_loopback(no_network):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkAccessError):
            s.connect(("203.0.113.7", 443))  # TEST-NET-3, never routable
    finally:
        s.close()
    with pytest.raises(NetworkAccessError):
        socket.getaddrinfo("huggingface.co", 443)
    assert len(no_network.attempts) == 2
    no_network.attempts.clear()


def test_registered_without_loading_torch():
    names = list_featurizers()
    assert {"minilm", "efficientnet_lite0", "hf_text", "hf_image"} <= set(names)
    assert list_featurizers("text")["minilm"].startswith("text:")


def test_minilm_offline_deterministic_384(no_network):
    fz = get_featurizer("minilm")
    assert isinstance(fz, MiniLM) and fz.output_shape == (384,) and fz.dtype == np.float32
    a = fz.featurize(TEXTS)
    clear_loaded_models()  # a fresh load gives the same numbers
    b = get_featurizer("minilm").featurize(TEXTS)
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    sims = a @ a.T
    assert sims[1, 3] > sims[1, 2] and sims[1, 4] > sims[1, 2]  # dog ~ puppy / a dog, not airplane
    assert no_network.attempts == []


def test_minilm_batching_does_not_change_features():
    full = MiniLM(batch_size=64).featurize(TEXTS)
    small = MiniLM(batch_size=2).featurize(TEXTS)
    np.testing.assert_allclose(full, small, atol=1e-5)


def test_hf_text_same_code_path_as_minilm(no_network):
    generic = HFTextFeaturizer(model=str(minilm_model_dir()), pooling="mean", max_length=256)
    np.testing.assert_allclose(generic.featurize(TEXTS[:3]), MiniLM().featurize(TEXTS[:3]), atol=1e-6)
    assert generic.identity != MiniLM().identity  # different names, same weights hash
    assert generic.identity.split(":w=")[1] == MiniLM().identity.split(":w=")[1]
    assert no_network.attempts == []


def test_identity_tracks_parameters():
    assert MiniLM(max_length=32).identity != MiniLM().identity
    assert MiniLM(batch_size=8).identity == MiniLM().identity  # batching never changes outputs
    assert ":w=" in EfficientNetLite0().identity


def test_uncached_hub_id_is_a_clear_error_without_network(no_network):
    with pytest.raises(DataError, match="nothing is downloaded"):
        get_featurizer("hf_text", model="sentence-transformers/surely-not-cached-model")
    with pytest.raises(DataError, match="does not exist"):
        get_featurizer("hf_text", model="./no/such/folder")
    assert no_network.attempts == []


def test_efficientnet_offline_deterministic_1280(no_network, emoji24):
    fz = get_featurizer("efficientnet_lite0")
    imgs = emoji24.modalities["image"][:6]
    a = fz.featurize(imgs)
    b = EfficientNetLite0().featurize(imgs)
    assert a.shape == (6, 1280) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and (a >= 0).all() and a.std() > 0  # ReLU6 activations, not constant
    assert not np.allclose(a[0], a[1])
    assert no_network.attempts == []


def test_efficientnet_inputs_path_bytes_data_url_agree(tmp_path, emoji24):
    png = emoji24.modalities["image"][0]
    path = tmp_path / "e.png"
    path.write_bytes(png)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    fz = EfficientNetLite0()
    feats = fz.featurize([png, str(path), path, url])
    for row in feats[1:]:
        np.testing.assert_allclose(row, feats[0], atol=1e-6)
    assert len({fz.content_key(x) for x in (png, str(path), path, url)}) == 1


def test_bad_image_names_the_item(emoji24):
    ds = emoji24.subset(range(4))
    ds.modalities["image"][2] = b"not an image"
    with pytest.raises(DataError, match=rf"modality 'image', item '{ds.ids[2]}'"):
        featurize(ds, {"image": "efficientnet_lite0", "text": "minilm"})


def test_cache_is_hit_on_second_pass(tmp_path, emoji24, no_network):
    img, txt = EfficientNetLite0(), MiniLM()
    cache = FeatureCache(tmp_path / "features")
    first = featurize(emoji24, {"image": img, "text": txt}, cache=cache, progress=True)
    assert cache.stats.misses == 2 * len(emoji24) and img.items_encoded == txt.items_encoded == len(emoji24)
    assert first.feature_shape("image") == (1280,) and first.feature_shape("text") == (384,)

    cache2 = FeatureCache(tmp_path / "features")  # a new process would see the same
    img2, txt2 = EfficientNetLite0(), MiniLM()
    second = featurize(emoji24, {"image": img2, "text": txt2}, cache=cache2)
    assert cache2.stats.misses == 0 and cache2.stats.hits == 2 * len(emoji24)
    assert img2.items_encoded == 0 and txt2.items_encoded == 0  # nothing encoded
    for k in ("image", "text"):
        np.testing.assert_array_equal(first.modalities[k], second.modalities[k])
    assert no_network.attempts == []


# ---- any transformers folder works: tiny randomly initialised models saved locally (seeded) -------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import torch
    from transformers import (AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, ViTConfig,
                              ViTImageProcessor, ViTModel)

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32))
    vit.save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")

    tok = AutoTokenizer.from_pretrained(str(minilm_model_dir()), local_files_only=True)
    cfg = CLIPConfig(text_config={"vocab_size": tok.vocab_size, "hidden_size": 16, "intermediate_size": 32,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64,
                                  "eos_token_id": tok.sep_token_id},
                     vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                                    "num_hidden_layers": 1, "num_attention_heads": 2},
                     projection_dim=12)
    CLIPModel(cfg).save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    return root


def test_hf_image_and_clip_folders(tiny_models, emoji24, no_network):
    imgs = emoji24.modalities["image"][:3]
    vit = get_featurizer("hf_image", model=str(tiny_models / "vit"))
    v = vit.featurize(imgs)
    assert v.shape == (3, 24) and np.isfinite(v).all()
    np.testing.assert_array_equal(v, HFImageFeaturizer(model=str(tiny_models / "vit")).featurize(imgs))

    clip_img = get_featurizer("hf_image", model=str(tiny_models / "clip"), normalize=True)
    clip_txt = get_featurizer("hf_text", model=str(tiny_models / "clip"), max_length=32)
    assert clip_img.output_shape == clip_txt.output_shape == (12,)
    ci, ct = clip_img.featurize(imgs), clip_txt.featurize(TEXTS[:3])
    assert ci.shape == (3, 12) and ct.shape == (3, 12)
    np.testing.assert_allclose(np.linalg.norm(ci, axis=1), 1.0, atol=1e-5)
    with pytest.raises(DataError, match="dual"):
        HFTextFeaturizer(model=str(tiny_models / "clip"), pooling="mean")
    assert no_network.attempts == []
