"""Manifest (JSONL / CSV / JSON) and Label Studio export importers, on good and broken files."""

from __future__ import annotations

import base64
import http.server
import json
import threading

import numpy as np
import pytest

from backend.data import UNLABELED, DataError
from backend.encoders import featurize
from connectors.importers import RowError, choices_from_label_config, load_label_studio_export, load_manifest
from tests.netguard import no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")


def _png(color: tuple[int, int, int], size: int = 8) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def media(tmp_path):
    """A folder with 3 PNGs and 2 vector files."""
    (tmp_path / "img").mkdir()
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(c))
    np.save(tmp_path / "v0.npy", np.array([1.0, 2.0, 3.0]))
    (tmp_path / "v1.txt").write_text("4 5 6\n")
    return tmp_path


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# ------------------------------------------------------------------ manifest: good files
def test_jsonl_manifest_inferred_kinds_and_masks(media):
    rows = [
        {"id": "a", "label": "red", "image": "img/0.png", "caption": "a red square", "emb": "v0.npy"},
        {"id": "b", "label": "", "image": "img/1.png", "caption": "", "emb": [7, 8, 9]},  # unlabelled, no text
        {"id": "c", "label": "blue", "image": None, "caption": "blue!", "emb": "v1.txt"},  # no image
    ]
    ds = load_manifest(_jsonl(media / "m.jsonl", rows), modalities={"image": "image", "caption": "text", "emb": "vector"})
    assert list(ds.ids) == ["a", "b", "c"] and ds.class_names == ["blue", "red"]
    assert ds.labels.tolist() == [1, UNLABELED, 0]
    assert ds.masks["image"].tolist() == [True, True, False] and ds.masks["caption"].tolist() == [True, False, True]
    assert ds.modalities["image"][0] == str(media / "img" / "0.png") and ds.modalities["image"][2] is None
    np.testing.assert_array_equal(ds.modalities["emb"], [[1, 2, 3], [7, 8, 9], [4, 5, 6]])
    assert ds.meta["modality_kinds"] == {"image": "image", "caption": "text", "emb": "vector"}

    inferred = load_manifest(media / "m.jsonl", class_names=["red", "blue"])
    assert inferred.meta["modality_kinds"]["image"] == "image" and inferred.meta["modality_kinds"]["caption"] == "text"
    assert inferred.labels.tolist() == [0, UNLABELED, 1]

    feats = featurize(ds, {"image": "image_pixels", "caption": "text_tokens"})  # usable end to end
    assert feats.is_featurized() and feats.masks["image"].tolist() == [True, True, False]


def test_csv_manifest_with_inline_vectors_and_oracle(media):
    (media / "m.csv").write_text(
        "id,label,image,text,vec\n"
        "1,cat,img/0.png,a cat,0.5 1.5\n"
        "2,dog,img/1.png,\"a dog, sitting\",\"[2, 3]\"\n"
        "3,cat,img/2.png,,1;1\n"
    )
    ds = load_manifest(media / "m.csv", modalities={"image": "image", "text": "text", "vec": "vector"}, as_oracle=True)
    assert list(ds.ids) == ["1", "2", "3"] and (ds.labels == UNLABELED).all()
    assert ds.true_labels.tolist() == [0, 1, 0]
    assert ds.modalities["text"][1] == "a dog, sitting" and not ds.masks["text"][2]
    np.testing.assert_array_equal(ds.modalities["vec"], [[0.5, 1.5], [2, 3], [1, 1]])
    assert ds.meta["row_of"] == {"1": "line 2", "2": "line 3", "3": "line 4"}


def test_json_array_manifest_and_data_urls(tmp_path):
    url = "data:image/png;base64," + base64.b64encode(_png((1, 2, 3))).decode()
    (tmp_path / "m.json").write_text(json.dumps([{"id": 1, "label": 0, "img": url, "t": "x"},
                                                 {"id": 2, "label": 1, "img": url, "t": "y"}]))
    ds = load_manifest(tmp_path / "m.json")
    assert ds.meta["modality_kinds"] == {"img": "image", "t": "text"} and ds.class_names == ["0", "1"]
    assert featurize(ds, {"img": "image_pixels", "t": "text_tokens"}).is_featurized()


def test_url_map_resolves_prefixes(media):
    rows = [{"id": "a", "label": "x", "image": "/data/upload/1/0.png", "t": "a"},
            {"id": "b", "label": "y", "image": "https://cdn.example.com/img/1.png", "t": "b"}]
    ds = load_manifest(_jsonl(media / "m.jsonl", rows),
                       url_map={"/data/upload/1/": str(media / "img") + "/", "https://cdn.example.com/": str(media) + "/"})
    assert ds.modalities["image"] == [str(media / "img" / "0.png"), str(media / "img" / "1.png")]


def test_fetch_urls_from_a_loopback_server(media, no_network):
    png = _png((9, 9, 9))
    seen_headers = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen_headers.append(self.headers.get("Authorization"))
            ok = self.path == "/media/x.png"
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        rows = [{"id": "a", "label": "x", "image": f"{base}/media/x.png", "t": "a"}]
        ds = load_manifest(_jsonl(media / "m.jsonl", rows), fetch_urls=True, fetch_headers={"Authorization": "Token k"})
        assert ds.modalities["image"] == [png] and seen_headers == ["Token k"]
        rows[0]["image"] = f"{base}/media/missing.png"
        with pytest.raises(RowError, match=r"line 1, field 'image': fetching .* answered HTTP 404"):
            load_manifest(_jsonl(media / "m.jsonl", rows), fetch_urls=True)
    finally:
        server.shutdown()
        server.server_close()
    assert no_network.attempts == []  # loopback only


# ------------------------------------------------------------------ manifest: broken files
@pytest.mark.parametrize("rows, match", [
    ([{"id": "a", "label": "x", "image": "img/0.png", "t": "a"},
      {"id": "b", "label": "x", "image": "img/nope.png", "t": "b"}], r"line 2, field 'image': image file not found"),
    ([{"id": "a", "label": "x", "image": "img/0.png", "t": "a"},
      {"id": "a", "label": "y", "image": "img/1.png", "t": "b"}], r"line 2, field 'id': duplicate id 'a' \(first in line 1\)"),
    ([{"id": "a", "label": "x", "image": "img/0.png", "t": "a"}, {"label": "x", "image": "img/0.png", "t": "a"}],
     r"line 2, field 'id': missing or invalid id None"),
    ([{"id": "a", "label": "x", "image": "img/0.png", "t": "a"}, {"id": " ", "label": "x", "image": "img/0.png", "t": "a"}],
     r"line 2, field 'id': missing or invalid id"),
    ([{"id": "a", "label": "x", "image": "img/0.png", "t": "a"},
      {"id": "b", "label": "x", "image": "", "t": ""}], r"line 2: item 'b' has none of the modalities"),
    ([{"id": "a", "label": "x", "image": "img/0.png", "t": 5}], r"line 1, field 't': text must be a string"),
    ([{"id": "a", "label": "x", "image": "http://example.com/a.png", "t": "a"}],
     r"line 1, field 'image': remote image URL .* fetch_urls=True"),
    ([{"id": "a", "label": "x", "image": "v0.npy", "t": "a"}], r"line 1, field 'image': .* is not a readable image"),
    ([{"id": "a", "label": ["x"], "image": "img/0.png", "t": "a"}], r"line 1, field 'label': a label must be"),
])
def test_broken_jsonl_rows_are_named(media, rows, match):
    with pytest.raises(RowError, match=match):
        load_manifest(_jsonl(media / "m.jsonl", rows), modalities={"image": "image", "t": "text"})


def test_broken_json_line_and_vectors(media):
    (media / "bad.jsonl").write_text('{"id": "a", "label": "x", "image": "img/0.png", "t": "a"}\n{"id": "b", oops}\n')
    with pytest.raises(RowError, match=r"bad.jsonl: line 2: invalid JSON"):
        load_manifest(media / "bad.jsonl")
    rows = [{"id": "a", "label": "x", "v": [1, 2], "t": "a"}, {"id": "b", "label": "x", "v": [1, 2, 3], "t": "b"}]
    with pytest.raises(RowError, match=r"line 2, field 'v': vector has 3 values, earlier rows have 2"):
        load_manifest(_jsonl(media / "m.jsonl", rows))
    rows = [{"id": "a", "label": "x", "v": [1, float("nan")], "t": "a"}]
    with pytest.raises(RowError, match=r"line 1, field 'v': vector has non-finite"):
        load_manifest(_jsonl(media / "m.jsonl", rows))
    rows = [{"id": "a", "label": "x", "v": "missing.npy", "t": "a"}]
    with pytest.raises(RowError, match=r"line 1, field 'v': vector file not found"):
        load_manifest(_jsonl(media / "m.jsonl", rows))


def test_broken_csv_and_labels(media):
    (media / "m.csv").write_text("id,label,image,t\n1,cat,img/0.png,a\n2,dog,img/1.png\n")
    with pytest.raises(RowError, match=r"m.csv: line 3: has 3 fields, the header has 4"):
        load_manifest(media / "m.csv")
    (media / "m.csv").write_text("id,label,image,t\n1,cat,img/0.png,a\n2,cow,img/1.png,b\n")
    with pytest.raises(RowError, match=r"line 3, field 'label': label 'cow' is not one of the classes \['cat', 'dog'\]"):
        load_manifest(media / "m.csv", class_names=["cat", "dog"])
    (media / "m.csv").write_text("id,label,image,t\n1,cat,img/0.png,a\n2,dog,some text,b\n")
    with pytest.raises(RowError, match=r"line 3, field 'image': the field mixes"):
        load_manifest(media / "m.csv")
    (media / "m.csv").write_text("ident,label,image,t\n1,cat,img/0.png,a\n")
    with pytest.raises(DataError, match="no 'id' field"):
        load_manifest(media / "m.csv")
    with pytest.raises(DataError, match="manifest not found"):
        load_manifest(media / "nope.csv")
    with pytest.raises(DataError, match="unknown manifest format"):
        load_manifest(media / "v1.txt")


# ------------------------------------------------------------------ Label Studio
CONFIG = """<View><Image name="image" value="$image"/><Text name="text" value="$text"/>
<Choices name="animal" toName="image"><Choice value="cat"/><Choice value="dog"/><Choice value="bird"/></Choices></View>"""


def _ann(aid, choice, updated, cancelled=False, ground_truth=False, from_name="animal"):
    result = [] if choice is None else [{"from_name": from_name, "to_name": "image", "type": "choices",
                                         "value": {"choices": choice if isinstance(choice, list) else [choice]}}]
    return {"id": aid, "result": result, "was_cancelled": cancelled, "ground_truth": ground_truth,
            "updated_at": updated, "created_at": updated}


def _tasks():
    return [
        {"id": 11, "data": {"image": "/data/upload/1/0.png", "text": "whiskers"},
         "annotations": [_ann(1, "cat", "2024-01-01T00:00:00Z")], "predictions": []},
        {"id": 12, "data": {"image": "/data/upload/1/1.png", "text": "barks"},  # later annotation wins
         "annotations": [_ann(2, "cat", "2024-01-01T00:00:00Z"), _ann(3, "dog", "2024-02-01T00:00:00Z")]},
        {"id": 13, "data": {"image": "/data/upload/1/2.png", "text": ""},  # ground truth beats later
         "annotations": [_ann(4, "dog", "2024-01-01T00:00:00Z", ground_truth=True), _ann(5, "cat", "2024-03-01T00:00:00Z"),
                         _ann(6, "bird", "2024-04-01T00:00:00Z", cancelled=True)]},
        {"id": 14, "data": {"image": "/data/upload/1/0.png", "text": "no label yet"}, "annotations": [],
         "predictions": [{"result": [{"from_name": "animal", "type": "choices", "value": {"choices": ["cat"]}}]}]},
    ]


def test_label_studio_export(media):
    (media / "export.json").write_text(json.dumps(_tasks()))
    ds = load_label_studio_export(media / "export.json", label_config=CONFIG,
                                  url_map={"/data/upload/1/": str(media / "img") + "/"})
    assert list(ds.ids) == ["11", "12", "13", "14"] and ds.class_names == ["cat", "dog", "bird"]
    assert ds.labels.tolist() == [0, 1, 1, UNLABELED]  # predictions are never labels
    assert ds.masks["text"].tolist() == [True, True, False, True]
    assert ds.meta["label_conflicts"] == ["12", "13"] and ds.meta["cancelled_annotations"] == 1
    assert ds.meta["from_name"] == "animal" and ds.meta["modality_kinds"] == {"image": "image", "text": "text"}
    assert featurize(ds, {"image": "image_pixels", "text": "text_tokens"}).is_featurized()
    assert choices_from_label_config(CONFIG) == {"animal": ["cat", "dog", "bird"]}


def test_label_studio_broken_exports(media):
    url_map = {"/data/upload/1/": str(media / "img") + "/"}
    with pytest.raises(RowError, match=r"task 2 \(id 12\), field 'annotations/animal': annotations disagree"):
        load_label_studio_export(_tasks(), url_map=url_map, on_conflict="error")
    with pytest.raises(RowError, match=r"task 1 \(id 11\), field 'image': image file not found.*url_map"):
        load_label_studio_export(_tasks())
    tasks = _tasks()
    tasks[0]["annotations"] = [_ann(1, ["cat", "dog"], "2024-01-01")]
    with pytest.raises(RowError, match=r"task 1 \(id 11\), field 'annotations/animal': .* 2 choices"):
        load_label_studio_export(tasks, url_map=url_map)
    tasks = _tasks()
    tasks[1]["annotations"].append(_ann(7, "red", "2024-05-01", from_name="colour"))
    with pytest.raises(DataError, match=r"several choices controls \['animal', 'colour'\]"):
        load_label_studio_export(tasks, url_map=url_map)
    assert load_label_studio_export(tasks, url_map=url_map, from_name="colour").labels.tolist() == [-1, 0, -1, -1]
    tasks = _tasks()
    del tasks[2]["data"]
    with pytest.raises(RowError, match=r"task 3 \(id 13\), field 'data': no 'data' object"):
        load_label_studio_export(tasks, url_map=url_map)
    tasks = _tasks()
    del tasks[3]["id"]
    with pytest.raises(RowError, match=r"task 4, field 'id': missing or invalid task id"):
        load_label_studio_export(tasks, url_map=url_map)
    with pytest.raises(RowError, match=r"task 1 \(id 11\), field 'annotations/animal': label 'cat' is not one"):
        load_label_studio_export(_tasks(), url_map=url_map, class_names=["dog", "bird"])
    (media / "bad.json").write_text("[{")
    with pytest.raises(DataError, match="not a JSON file"):
        load_label_studio_export(media / "bad.json")
    with pytest.raises(DataError, match="no <Choices name='animal'>"):
        choices_from_label_config("<View/>", "animal")


def test_choices_come_from_the_one_label_config_reader():
    """connectors.label_config reads the config for the importer too: aliases (what annotations store)
    win, every control counts (no object tag needed), malformed XML is named."""
    cfg = ("<View><Choices name='animal' toName='x'><Choice value='Cat' alias='c'/><Choice value='Dog'/></Choices>"
           "<Choices name='one'><Choice value='only'/></Choices></View>")
    assert choices_from_label_config(cfg) == {"animal": ["c", "Dog"], "one": ["only"]}
    assert choices_from_label_config(cfg, "one") == ["only"]
    with pytest.raises(DataError, match="not well-formed"):
        choices_from_label_config("<View>")
