"""Synthetic multimodal scenarios, each isolating one pitfall of multimodal active learning.

Why a generative model with a known posterior: the benchmark must say *how much* each modality can
tell, not guess it. Every scenario is one instance of the same process, so ground truth is the
Bayes-optimal accuracy of that process, estimated by Monte Carlo on fresh samples with the *true*
posterior (not a learned model; no training noise, only sampling error of about 0.2 %):

- a discrete latent cell ``k ~ prior`` fixes the label ``y = label[k]``;
- each modality ``m`` sees a low-dimensional latent ``z_m = mu_m[k] + a * s + sigma_m * e_m``
  (``s`` shared across modalities, only for ``redundancy``; ``e_m`` its own noise), padded with
  class-free nuisance dimensions and rotated by a random orthogonal matrix into ``dims`` features;
- a share of items may carry a corrupted copy of a modality (heavy extra noise on every dimension);
- presence patterns are drawn given the class: missing completely at random (MCAR) or not at random
  (MNAR, absence correlated with the class).

Named scenarios (``list_scenarios``): ``balanced``, ``difficulty``, ``redundancy``, ``uniqueness``,
``synergy``, ``noisy_modality``, ``missing_{mcar,mnar}_{10,30,50}`` and combinations written
``base+modifier`` (e.g. ``difficulty+missing_mnar_30``, ``synergy+noisy``). Same name, parameters
and seed give the same data, bit for bit.

Multi-label (``multilabel``, :func:`is_multi_label`): the cell fixes a *label set* instead of a class
(some tags decided by modality ``a`` alone, some by ``b`` alone, some only by both). The Bayes-optimal
predictor is then the most probable label set, so ground truth (``informativeness``) is a subset
accuracy, the same quantity the diagnostics measure for the model's heads; the per-class accuracies of
those predictions are in ``params["class_informativeness"]``.

Real datasets (``list_scenarios(real=True)``): ``emoji`` (image + text), ``emoji_tags`` (the same emojis
with label sets, multi-label) and ``mfeat`` (two feature views of handwritten digits) are replayed with
the same simulated oracle, optionally with injected missing modalities (``emoji+missing_mnar_30``). So
is a researcher's own file: a scenario whose base is a file name (``mine.jsonl``,
``export.json+missing_mcar_30``) is the dataset that the ``own_data`` parameter's spec of that name
describes (:mod:`connectors.own_data`). Their informativeness is *estimated* (see
:func:`make_real_scenario`), not ground truth.

One module per job: :mod:`.process` (the generative process and its posterior), :mod:`.structures` (the
synthetic bases), :mod:`.missingness` (presence patterns), :mod:`.names` (the name grammar and catalogue),
:mod:`.scenario` (the :class:`Scenario` type, default parameters and recipe), :mod:`.synthetic`
(:func:`make_scenario`) and :mod:`.real` (real datasets and own files). Everything public is importable
from ``benchmark.scenarios``.
"""

from __future__ import annotations

from benchmark.scenarios.missingness import presence_strata
from benchmark.scenarios.names import REAL_DATASETS, is_multi_label, is_real, list_scenarios, parse_name
from benchmark.scenarios.process import DEFAULT_MC_SAMPLES, MODALITY_NAMES, ModalityProcess, Process, calibrate_sigma
from benchmark.scenarios.real import (FEATURIZER_PRESETS, OWN_TEST_FRACTION, OWN_VAL_FRACTION, REAL_PARAMS, _load_own,
                                      _load_real, estimate_informativeness, make_real_scenario, real_cache_dir)
from benchmark.scenarios.scenario import DEFAULT_PARAMS, Scenario, default_recipe
from benchmark.scenarios.structures import MULTI_LABEL_BASES
from benchmark.scenarios.synthetic import make_scenario

__all__ = [
    "DEFAULT_MC_SAMPLES", "DEFAULT_PARAMS", "FEATURIZER_PRESETS", "MODALITY_NAMES", "MULTI_LABEL_BASES",
    "OWN_TEST_FRACTION", "OWN_VAL_FRACTION", "REAL_DATASETS", "REAL_PARAMS", "ModalityProcess", "Process", "Scenario",
    "_load_own", "_load_real", "calibrate_sigma", "default_recipe", "estimate_informativeness", "is_multi_label",
    "is_real", "list_scenarios", "make_real_scenario", "make_scenario", "parse_name", "presence_strata",
    "real_cache_dir",
]
