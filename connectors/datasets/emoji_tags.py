"""Emoji tags (image + text, real, multi-label): the emoji dataset with a *set* of tags per emoji.

Why this target: Unicode files every emoji under a category and a subcategory whose names are words
(``Smileys & Emotion`` / ``face-smiling``, ``People & Body`` / ``person-sport``, ``Activities`` /
``sport``). Taking the words as tags gives a multi-label problem that ships with the repository (no
new download, same images and texts as ``emoji``) and has real structure: tags that cut across the
categories (``sport``: 43 people, 27 activities; ``other``, ``symbol``, ``hand``, ``transport``), tags
nested in others (``mammal`` inside ``animal`` inside ``animals/nature``), and sets of 1 to 3 tags.

Construction (:func:`tag_sets`), fixed and documented so the numbers can be checked:

1. the words of an emoji's category and subcategory names: lower-cased runs of letters
   (``sky & weather`` -> ``sky``, ``weather``), without ``and``;
2. a word becomes a tag when at least ``min_count`` emojis (default 30) carry it, so every tag has
   training examples in a 1,200-item pool and about 6 in the 400-item test split;
3. words that tag exactly the same emojis are one tag, named by joining them with ``/`` (``body/people``,
   ``flag/flags``): two identical columns would count every decision twice in the F1 scores.

With the defaults: 39 words pass step 2, 32 tags remain, 1.93 tags per emoji (543 emojis with 1, 946
with 2, 417 with 3), no empty set (every category name yields a tag), 39 distinct sets (the tags follow
the Unicode hierarchy, so a subcategory fixes its set); the largest tag is ``body/people`` (386), the
smallest ``gesture`` (30).
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

from backend.data import DataError, MultimodalDataset
from connectors.datasets.emoji import load_emoji

__all__ = ["load_emoji_tags", "tag_sets", "TAG_MIN_COUNT"]

TAG_MIN_COUNT = 30
STOPWORDS = frozenset({"and"})


def _words(name: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", name.lower()) if w not in STOPWORDS}


def tag_sets(names: Sequence[Sequence[str]], min_count: int = TAG_MIN_COUNT) -> tuple[list[str], np.ndarray]:
    """(tag names sorted, (n, T) 0/1 label sets) from each item's category-like names (see the module docstring)."""
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise DataError(f"emoji_tags: min_count must be a positive integer, got {min_count!r}")
    words = [set().union(*(_words(n) for n in item)) for item in names]
    vocab = sorted({w for ws in words for w in ws})
    member = np.array([[w in ws for w in vocab] for ws in words], dtype=bool).reshape(len(words), len(vocab))
    keep = member.sum(axis=0) >= min_count
    if not keep.any():
        raise DataError(f"emoji_tags: no word tags {min_count} or more items; lower min_count")
    groups: dict[bytes, list[str]] = {}
    for j in np.flatnonzero(keep):
        groups.setdefault(np.packbits(member[:, j]).tobytes(), []).append(vocab[j])
    tags = sorted("/".join(sorted(g)) for g in groups.values())
    first = {"/".join(sorted(g)): vocab.index(sorted(g)[0]) for g in groups.values()}
    sets = np.stack([member[:, first[t]] for t in tags], axis=1).astype(np.int64)
    return tags, sets


def load_emoji_tags(min_count: int = TAG_MIN_COUNT, root: str | os.PathLike[str] | None = None,
                    verify: bool = False) -> MultimodalDataset:
    """The emoji dataset (:func:`~connectors.datasets.emoji.load_emoji`: ``image`` PNG bytes, ``text``) with
    ``true_labels`` = (N, T) tag sets from category and subcategory names (:func:`tag_sets`), labels all
    unlabelled. ``meta["tag_counts"]`` gives the emojis per tag, ``meta["label_cardinality"]`` the mean set size.
    """
    base = load_emoji(label="category", root=root, verify=verify)
    cat, sub = base.meta["category_of"], base.meta["subcategory_of"]
    tags, sets = tag_sets([(cat[i], sub[i]) for i in base.ids], min_count)
    meta: dict[str, Any] = {**base.meta, "dataset": "emoji_tags", "label": f"tags (min_count={min_count})",
                            "tag_counts": dict(zip(tags, sets.sum(axis=0).tolist())),
                            "label_cardinality": float(sets.sum(axis=1).mean())}
    return MultimodalDataset(modalities=base.modalities, labels=np.full(sets.shape, -1, dtype=np.int64),
                             class_names=tags, masks=base.masks, ids=base.ids, true_labels=sets, meta=meta)
