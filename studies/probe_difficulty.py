"""Probe for goal 3 on ``difficulty``: can the hard modality 'b' be learned at this budget at all?

Trains on random labelled sets (no active learning) and prints the fused accuracy and the accuracy of
b's own head, then a model that sees *only* b (the other modality always absent) with the default
recipe and with 300 epochs without early stopping. If b alone stays near chance, the representation
gap of b is a recipe/budget limit, not neglect that a query strategy could reverse.

    .venv/bin/python -m studies.probe_difficulty
"""

from dataclasses import replace

import numpy as np

from backend.data import MultimodalDataset
from backend.models.trainer import train_model
from benchmark.scenarios import make_scenario


def main() -> None:
    sc = make_scenario("difficulty", 100, n_items=1500, n_test=1000, n_val=300, dims=12, mc_samples=5000)
    ds = sc.pool.with_masks({})
    ds.labels[:] = ds.true_labels
    te = sc.test
    idx = np.arange(len(te))

    def b_only(d: MultimodalDataset) -> MultimodalDataset:
        z = np.zeros((len(d), 2), np.float32)
        return MultimodalDataset({"b": d.modalities["b"], "z": z}, d.labels, d.class_names,
                                 {"z": np.zeros(len(d), bool)}, true_labels=d.true_labels)

    for n in (240, 1500):
        lab = np.random.default_rng(0).choice(1500, n, replace=False)
        m = train_model(ds, lab, fusion=sc.fusion, train=sc.train, seed=0)
        p = m.predict(te, idx)
        print(n, "labels: fused", (p.probs.argmax(1).numpy() == te.labels).mean(),
              "head b", (p.unimodal_probs["b"].argmax(1).numpy() == te.labels).mean(), "epochs", m.meta["epochs_run"],
              flush=True)
        for ep in (60, 300):
            tr = sc.train if ep == 60 else replace(sc.train, epochs=ep, patience=ep)
            mb = train_model(b_only(ds), lab, fusion=sc.fusion, train=tr, seed=0)
            acc = (mb.predict(b_only(te), idx).probs.argmax(1).numpy() == te.labels).mean()
            print(n, "labels: b only,", "default recipe" if ep == 60 else "300 epochs, no early stop", acc, flush=True)


if __name__ == "__main__":
    main()
