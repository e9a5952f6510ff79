"""Turn a dataset of raw inputs into a featurized one (numeric arrays only), ready for a fusion model.

Absent items (mask False, or a raw value of None / NaN / "" / empty) are never encoded: their rows
are zero-filled and their mask is set False, so "missing" is always explicit. Results go through a
:class:`~backend.encoders.cache.FeatureCache` when one is given, so re-featurizing the same items in
the next round (or the next process) reads them from disk.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from backend.data import DataError, MultimodalDataset
from backend.encoders.base import Featurizer, ItemError
from backend.encoders.cache import FeatureCache, compute_batched
from backend.encoders.registry import get_featurizer

__all__ = ["featurize"]


def _resolve(name: str, spec: Featurizer | str) -> Featurizer:
    if isinstance(spec, Featurizer):
        return spec
    if isinstance(spec, str):
        return get_featurizer(spec)
    raise DataError(f"featurizer for modality '{name}' must be a Featurizer or a registered name, got {type(spec).__name__}")


@contextlib.contextmanager
def _progress_bar(enabled: bool, label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    if not enabled or total == 0:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


def featurize(
    dataset: MultimodalDataset,
    featurizers: Mapping[str, Featurizer | str],
    cache: FeatureCache | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> MultimodalDataset:
    """A new dataset whose modalities are all numeric arrays.

    ``featurizers`` maps modality name -> a :class:`Featurizer` or a registered name (``"text_tokens"``).
    Numeric modalities without a featurizer pass through unchanged; raw ones without a featurizer are an
    error. ``meta["featurizers"][name]`` records each featurizer identity and ``meta["vocab_size"][name]``
    the vocabulary of token featurizers (the bag-of-embeddings encoder needs it). A bad item raises
    DataError naming the modality and the item id.
    """
    unknown = set(featurizers) - set(dataset.modalities)
    if unknown:
        raise DataError(f"featurizers given for unknown modalities {sorted(unknown)}; dataset has {dataset.modality_names}")
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")

    n = len(dataset)
    meta: dict[str, Any] = dict(dataset.meta)
    vocab = dict(meta.get("vocab_size", {}))
    idents = dict(meta.get("featurizers", {}))
    modalities: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}

    for name, values in dataset.modalities.items():
        mask = dataset.masks[name].copy()
        numeric = isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.number)
        if name not in featurizers:
            if not numeric:
                raise DataError(f"modality '{name}' holds raw inputs; give it a featurizer "
                                f"(e.g. 'image_pixels' or 'text_tokens')")
            modalities[name], masks[name] = values, mask
            continue

        fz = _resolve(name, featurizers[name])
        if not isinstance(values, (list, np.ndarray)):
            values = list(values)
        present = np.array([bool(mask[i]) and not fz.is_absent(values[i]) for i in range(n)], dtype=bool)
        idx = np.flatnonzero(present)
        items = [values[i] for i in idx]
        bind_items = items
        if not items and isinstance(values, np.ndarray) and n:
            bind_items = [values[0]]  # a numeric array fixes e.g. the vector dim even with no row present
        try:
            fz = fz.bind(bind_items)
            out = np.zeros((n, *fz.output_shape), dtype=fz.dtype)
            with _progress_bar(progress, f"featurize {name} ({fz.name})", len(items)) as on_progress:
                if cache is not None:
                    feats = cache.get_many(fz, items, batch_size=batch_size, on_progress=on_progress)
                else:
                    feats = compute_batched(fz, items, batch_size, on_progress)
        except ItemError as exc:
            item_id = dataset.ids[idx[exc.index]] if exc.index < len(idx) else "?"
            raise DataError(f"modality '{name}', item {item_id!r}: {exc.reason}") from None
        except DataError as exc:
            raise DataError(f"modality '{name}' ({fz.name}): {exc}") from None

        out[idx] = feats
        modalities[name], masks[name] = out, present
        idents[name] = fz.identity
        if fz.vocab_size is not None:
            vocab[name] = int(fz.vocab_size)
        else:
            vocab.pop(name, None)

    meta["vocab_size"] = vocab
    meta["featurizers"] = idents
    return MultimodalDataset(
        modalities=modalities,
        labels=dataset.labels.copy(),
        class_names=list(dataset.class_names),
        masks=masks,
        ids=dataset.ids.copy(),
        true_labels=None if dataset.true_labels is None else dataset.true_labels.copy(),
        meta=meta,
    )
