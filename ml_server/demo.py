"""Label Studio tasks and label configs built from the emoji dataset (image + text), for tests and demos.

``emoji_tasks`` gives ready-to-import task dicts (PNG as a ``data:`` URL, the emoji's text) with their true
class, so a test can create annotations like an annotator would, and ``label_config`` writes a matching
config with any tag names and data keys.
"""

from __future__ import annotations

import base64
from xml.sax.saxutils import quoteattr
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_CATEGORIES = ("Animals & Nature", "Food & Drink", "Travel & Places")


@dataclass
class EmojiTasks:
    """Task dicts (``{"data": {...}}``), their true class names, and the class names in config order."""

    tasks: list[dict[str, Any]]
    truth: list[str]
    class_names: list[str]


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def label_config(class_names: Sequence[str], *, image_name: str = "image", image_key: str = "image",
                 text_name: str = "text", text_key: str = "text", control: str = "label",
                 to_name: str | None = None, multiple: bool = False) -> str:
    """An image + text classification config with the given tag names and data keys
    (``multiple``: a multi-label project, ``choice="multiple"``)."""
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in class_names)
    kind = "multiple" if multiple else "single"
    return (f'<View>\n  <Image name="{image_name}" value="${image_key}"/>\n'
            f'  <Text name="{text_name}" value="${text_key}"/>\n'
            f'  <Choices name="{control}" toName="{to_name or text_name}" choice="{kind}">{choices}</Choices>\n'
            f'</View>')


def emoji_tasks(per_class: int = 12, categories: Sequence[str] = DEFAULT_CATEGORIES, seed: int = 0, *,
                image_key: str = "image", text_key: str = "text") -> EmojiTasks:
    """``per_class`` random emojis of each category as Label Studio tasks (seeded, interleaved classes)."""
    from connectors.datasets.emoji import load_emoji

    ds = load_emoji(label="category")  # class_names + true_labels: the loader's documented interface
    cats = np.asarray(ds.class_names, dtype=object)[ds.true_labels]
    rng = np.random.default_rng(seed)
    picks: list[tuple[int, str]] = []
    for c in categories:
        idx = np.flatnonzero(cats == c)
        if idx.size < per_class:
            raise ValueError(f"category {c!r} has only {idx.size} emojis, {per_class} requested")
        picks.extend((int(i), c) for i in rng.choice(idx, per_class, replace=False))
    order = rng.permutation(len(picks))
    tasks, truth = [], []
    for k in order:
        i, c = picks[k]
        tasks.append({"data": {image_key: png_data_url(ds.modalities["image"][i]), text_key: ds.modalities["text"][i],
                               "emoji": str(ds.ids[i])}})
        truth.append(c)
    return EmojiTasks(tasks, truth, list(categories))


def choice_annotation(control: str, to_name: str, label: str | Sequence[str]) -> list[dict[str, Any]]:
    """The ``result`` of an annotation that picks ``label`` (or, multi-label, every class of a list;
    an empty list: nothing chosen, as Label Studio saves it)."""
    chosen = [label] if isinstance(label, str) else list(label)
    if not chosen:
        return []
    return [{"from_name": control, "to_name": to_name, "type": "choices", "value": {"choices": chosen}}]


FACE = "Has a face"
"""The tag of :func:`emoji_label_sets`: the emoji's name mentions a face (it cuts across categories)."""


def emoji_label_sets(et: EmojiTasks, text_key: str = "text") -> list[list[str]]:
    """Label sets for a multi-label emoji project: the category plus :data:`FACE` when the emoji's name
    says "face" (cat face, sun with face, ...); classes ``et.class_names + [FACE]``."""
    return [[c] + ([FACE] if "face" in str(t["data"][text_key]).lower() else [])
            for t, c in zip(et.tasks, et.truth)]


@dataclass
class DemoProject:
    """An emoji project in a running Label Studio: its id, task ids (import order) and their true classes."""

    project_id: int
    task_ids: list[int]
    truth: dict[int, str]
    class_names: list[str]
    config: str
    control: str
    to_name: str


def create_emoji_project(ls: Any, title: str, per_class: int = 10, seed: int = 0, **names: str) -> DemoProject:
    """Create a project with an image + text config (tag names/data keys from ``names``) and import emoji tasks.

    ``ls`` is a :class:`connectors.labelstudio.LabelStudioConnector`.
    """
    et = emoji_tasks(per_class, seed=seed, image_key=names.get("image_key", "image"),
                     text_key=names.get("text_key", "text"))
    config = label_config(et.class_names, **names)
    pid = ls.create_project(title, config)
    ids = ls.import_tasks(pid, et.tasks)
    control = names.get("control", "label")
    to_name = names.get("to_name") or names.get("text_name", "text")
    return DemoProject(pid, ids, dict(zip(ids, et.truth)), et.class_names, config, control, to_name)
