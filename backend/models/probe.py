"""The ``probe`` training recipe: linear heads on frozen features, fused as a product of experts.

Why (issue 17): on frozen pretrained features a plain logistic-regression probe beat the SGD-trained
MLP fusion model by 10-15 points at every budget. This recipe is that probe, per modality, plus a
calibrated late fusion:

- inputs are standardised with mean / std of the *whole dataset passed to training* (the pool,
  labelled or not: features are known before labels), on the items that have the modality; an absent
  modality's embedding is 0, i.e. the pool mean;
- each modality m gets its own L2-regularised multinomial logistic regression on the labelled items
  that have m (separately trained heads: joint training under-learns the weaker modality), fitted
  full-batch with L-BFGS; no random numbers are drawn, so a run is deterministic on any device;
- the regularisation C_m (objective: sum of cross-entropies + ||W||^2 / (2 C), sklearn's convention)
  is chosen per modality from ``TrainConfig.probe_cs`` by the held-out log-loss of a stratified k-fold
  cross-validation on the labelled set; all folds and candidates are one batched L-BFGS problem;
- with ``joint`` (default) one more head reads every modality's standardised features side by side
  (absent blocks 0): the linear probe itself, C chosen the same way, so the fusion is never worse than
  the concatenated probe by construction of its weights, and can use interactions between modalities;
- the fused prediction is a product of experts of the heads that are present,
  ``logits = sum_m present_m * w_m * log p_m(y | x_m) + w_J log p_J(y | x) + b``, where (w, b) are fitted on the
  *out-of-fold* log-probabilities (so the weights say how far each head is to be trusted, not how well
  it memorised its training items), w >= 0, lightly pulled towards 1 (the plain product);
- ``fused_embedding`` is ``concat_m(sqrt(w_J^2 + w_m^2) * z_m)``: the gradient of the fused loss with
  respect to head m's weights is ``w_m (p - y) z_m`` (the joint head's: ``w_J (p - y) z``), so BADGE's
  distances on it are those of this model's last-layer gradient embeddings;
- MC dropout (BALD) drops standardised input features at the model's ``FusionConfig.dropout`` rate;
- with ``interaction`` > 0 one more expert is a small MLP (one hidden layer of that width) on all
  modalities' standardised features side by side, each modality first projected on its top
  ``interaction_rank`` principal directions over the pool (so its cost does not grow with 1280-d
  pretrained vectors): the linear heads cannot represent an interaction between modalities (XOR
  across modalities stays at chance) nor curved class boundaries, the MLP can. It is trained
  full-batch by Adam with an L2 penalty, one model per cross-validation fold (every fold and
  penalty one batched problem); the penalty and the number of steps are those with the lowest
  held-out log-loss, and the expert is the mean of the fold models' log-probabilities (no refit:
  its out-of-fold predictions are exactly its models', and the fit costs the CV alone). They enter
  the product-of-experts fit like the heads' do, with its weight pulled towards 0, not 1: it counts
  only as far as held-out data say it helps;
- with ``network``, one more expert is the fusion network of recipe ``sgd`` (per-modality encoders,
  auxiliary heads, minibatch AdamW with early stopping on its validation split), trained as that recipe
  trains it: it reaches what the linear heads and the small MLP cannot at large budgets (curved class
  boundaries learned per modality, corrupted copies). It has no out-of-fold predictions; its
  validation items are held out from its training, so its weight is fitted on those items only
  (pulled to 0 like the MLP's): with few labels it has none and counts for nothing;
- label sets (``multi_label``): every head is one binary logistic regression per class (sigmoid,
  binary cross-entropy summed over classes, folds stratified by the set's rarest class), and the
  product of experts of per-class Bernoulli experts is a weighted *sum of their logits*
  (``w log sigma(a) - w log sigma(-a) = w a``), so ``logits = sum_m present_m w_m a_m + w_J a_J + b``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.data import DataError, label_strata
from backend.models.fusion import FusionConfig, FusionModel, FusionOutput
from backend.models.modality_encoders import FeatureSpec

JOINT = "joint"  # the expert on all modalities' standardised features side by side
INTERACTION = "interaction"  # the MLP expert on all modalities' projected features
NETWORK = "network"  # the SGD-trained fusion network on the raw features
LEARNED_EXPERTS = (INTERACTION, NETWORK)  # nonlinear experts: weight pulled to 0, counted only on held-out evidence


class Standardize(nn.Module):
    """(x - mean) / std with statistics set from the pool (buffers, saved with the model), then dropout."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.drop = nn.Dropout(dropout)  # inactive except in predict_mc_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop((x.float() - self.mean) / self.scale)


class ProbeFusion(nn.Module):
    """Per-modality linear heads on standardised features, fused as a weighted product of experts.

    Same surface as :class:`backend.models.fusion.FusionModel` (``names``, ``encoders``, ``absent``,
    ``aux_heads``, :meth:`forward`, :meth:`fuse`), so prediction, masking, MC dropout and persistence
    are shared with it.
    """

    def __init__(self, specs: dict[str, FeatureSpec], n_classes: int, config: FusionConfig, joint: bool = True,
                 multi_label: bool = False, interaction: int = 0, interaction_rank: int = 64,
                 network: bool = False, folds: int = 3) -> None:
        super().__init__()
        reserved = [k for k in specs if k in (JOINT, *LEARNED_EXPERTS)]
        if reserved:
            raise DataError(f"modality names {reserved} are reserved by recipe 'probe'")
        bad = [k for k, s in specs.items() if s.kind != "vector"]
        if bad:
            raise DataError(f"recipe 'probe' needs feature vectors (e.g. pretrained featurizers); modalities {bad} "
                            f"are {[specs[k].kind for k in bad]}: use recipe 'sgd' or vector featurizers")
        self.names = list(specs)
        self.specs = specs
        self.config = config
        self.n_classes = n_classes
        self.multi_label = bool(multi_label)
        dims = {k: int(s.shape[0]) for k, s in specs.items()}
        self.encoders = nn.ModuleDict({k: Standardize(d, config.dropout) for k, d in dims.items()})
        self.absent = nn.ParameterDict({k: nn.Parameter(torch.zeros(d), requires_grad=False) for k, d in dims.items()})
        self.aux_heads = nn.ModuleDict({k: nn.Linear(d, n_classes) for k, d in dims.items()})
        for head in self.aux_heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.joint = bool(joint)
        self.expert_names = self.names + ([JOINT] if self.joint else [])
        if self.joint:
            self.joint_head = nn.Linear(sum(dims.values()), n_classes)
            nn.init.zeros_(self.joint_head.weight)
            nn.init.zeros_(self.joint_head.bias)
        self.interaction_hidden = int(interaction)
        if self.interaction_hidden > 0:
            ranks = {k: min(d, int(interaction_rank)) for k, d in dims.items()}
            # top principal directions of each standardised modality over the pool (set_statistics)
            self.projections = nn.ParameterDict({k: nn.Parameter(torch.eye(dims[k], r), requires_grad=False)
                                                 for k, r in ranks.items()})
            d_in, h = sum(ranks.values()), self.interaction_hidden
            # one MLP per cross-validation fold (the expert is their mean log-probability), batched
            self.interaction = nn.ParameterList([nn.Parameter(torch.zeros(folds, d_in, h), requires_grad=False),
                                                 nn.Parameter(torch.zeros(folds, h), requires_grad=False),
                                                 nn.Parameter(torch.zeros(folds, h, n_classes), requires_grad=False),
                                                 nn.Parameter(torch.zeros(folds, n_classes), requires_grad=False)])
            self.expert_names.append(INTERACTION)
        self.network = FusionModel(specs, n_classes, config) if network else None
        if self.network is not None:
            self.expert_names.append(NETWORK)
        self.expert_weight = nn.Parameter(torch.ones(len(self.expert_names)))
        self.fused_bias = nn.Parameter(torch.zeros(n_classes))
        self.fused_dim = sum(dims.values())

    def forward(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> FusionOutput:
        embeddings: dict[str, torch.Tensor] = {}
        for name in self.names:
            z = self.encoders[name](inputs[name])
            embeddings[name] = torch.where(masks[name].unsqueeze(1), z, self.absent[name].to(z.dtype).expand_as(z))
        network = None if self.network is None else self.network(inputs, masks).logits
        return self.fuse(embeddings, masks, network)

    def fuse(self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
             network: torch.Tensor | None = None) -> FusionOutput:
        """Heads and product of experts on given embeddings (absent modalities contribute nothing);
        ``network``: the network expert's logits on the same items (it reads raw features, so
        :meth:`forward` computes them), none = that expert left out."""
        z = {k: torch.where(masks[k].unsqueeze(1), embeddings[k].float(), torch.zeros_like(embeddings[k].float()))
             for k in self.names}
        aux = {k: self.aux_heads[k](z[k]) for k in self.names}
        logits = self.fused_bias.expand(next(iter(aux.values())).shape[0], -1)
        for j, k in enumerate(self.names):
            present = masks[k].unsqueeze(1).to(aux[k].dtype)
            logits = logits + present * self.expert_weight[j] * self._expert(aux[k])
        wj = torch.zeros((), device=logits.device)
        if self.joint:
            wj = self.expert_weight[len(self.names)]
            concat = torch.cat([z[k] for k in self.names], dim=1)
            logits = logits + wj * self._expert(self.joint_head(concat))
        if self.interaction_hidden > 0:
            w = self.expert_weight[self.expert_names.index(INTERACTION)]
            logits = logits + w * self.interaction_terms(self.project(z))
        if network is not None:
            logits = logits + self.expert_weight[self.expert_names.index(NETWORK)] * self._expert(network.float())
        # sqrt(w_joint^2 + w_m^2) z_m: inner products equal those of the last layers' gradient embeddings
        parts = [z[k] * torch.sqrt(wj ** 2 + self.expert_weight[j] ** 2) for j, k in enumerate(self.names)]
        return FusionOutput(logits, aux, embeddings, torch.cat(parts, dim=1))

    def interaction_terms(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP expert's term (n, C): mean over its fold models of their log-probabilities (label
        sets: of their logits)."""
        logits = _mlp_logits(x, *self.interaction)
        return (logits if self.multi_label else F.log_softmax(logits, dim=2)).mean(0)

    def project(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """The interaction expert's input: each standardised modality (0 where absent) on its principal
        directions, side by side."""
        return torch.cat([z[k] @ self.projections[k] for k in self.names], dim=1)

    def _expert(self, logits: torch.Tensor) -> torch.Tensor:
        """An expert's term in the fused logits: its log-probabilities, or for label sets its logits."""
        return logits if self.multi_label else F.log_softmax(logits, dim=1)

    @torch.no_grad()
    def set_statistics(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
        """Standardisation statistics from every row that has the modality (constant features keep scale 1)."""
        for k in self.names:
            x = inputs[k][masks[k]].float()
            enc = self.encoders[k]
            if len(x) == 0:
                continue
            mean = x.mean(0)
            std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(mean)
            enc.mean.copy_(mean)
            enc.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
            if self.interaction_hidden > 0:
                self.projections[k].copy_(principal_directions((x - enc.mean) / enc.scale,
                                                               self.projections[k].shape[1]))


def principal_directions(x: torch.Tensor, rank: int, max_rows: int = 4096) -> torch.Tensor:
    """(d, rank): the top ``rank`` right singular vectors of centred ``x`` (n, d), from at most
    ``max_rows`` evenly spaced rows (deterministic); the identity's columns when rank = d, and
    zero columns where the data have fewer directions."""
    d = x.shape[1]
    if rank >= d:
        return torch.eye(d, rank, device=x.device)
    if len(x) > max_rows:
        x = x[torch.linspace(0, len(x) - 1, max_rows, device=x.device).long()]
    x = x - x.mean(0)
    out = torch.zeros(d, rank, device=x.device)
    if len(x) < 2:
        return out
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(rank, vh.shape[0])
    out[:, :k] = vh[:k].T
    return out


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------
def stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id (0..k-1) per item: each class's items shuffled and dealt round-robin from a random fold
    (label sets: each stratum of :func:`backend.data.label_strata`)."""
    y = label_strata(y)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        rng.shuffle(pos)
        fold[pos] = (np.arange(len(pos)) + offset) % k
        offset += len(pos)
    return fold


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weights: torch.Tensor, cs: torch.Tensor,
                 max_iter: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """P independent L2 logistic regressions on the same rows, as one L-BFGS problem.

    x: (n, d), y: (n,) classes or (n, C) float label sets, weights: (P, n) row weights (0 leaves a row
    out of problem p), cs: (P,). Problem p minimises sum_i weights[p, i] CE_i + (||W_p||^2 + ||b_p||^2)
    / (2 C_p), CE_i the cross-entropy of the softmax (label sets: the binary cross-entropies of the C
    sigmoids, summed); the problems are separable, so one L-BFGS run on their sum solves each.
    Returns W (P, d, C), b (P, C), iterations.
    """
    p, (n, d) = len(cs), x.shape
    w = torch.zeros(p, d, n_classes, device=x.device, requires_grad=True)
    b = torch.zeros(p, n_classes, device=x.device, requires_grad=True)
    multi = y.ndim == 2
    target = y.to(x.dtype) if multi else F.one_hot(y, n_classes).to(x.dtype)
    scale = 1.0 / max(n, 1)  # the objective per item keeps L-BFGS's tolerances meaningful at any n
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = (x @ w.permute(1, 0, 2).reshape(d, p * n_classes)).view(n, p, n_classes) + b  # one GEMM
        if multi:
            ce = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).expand_as(logits),
                                                    reduction="none").sum(2).T  # (P, n)
        else:
            ce = -(target.unsqueeze(1) * F.log_softmax(logits, dim=2)).sum(2).T  # (P, n)
        reg = (w.pow(2).sum((1, 2)) + b.pow(2).sum(1)) / (2 * cs)
        loss = scale * ((weights * ce).sum() + reg.sum())
        loss.backward()
        return loss

    opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return w.detach(), b.detach(), iters


def fit_experts(log_probs: torch.Tensor, present: torch.Tensor, y: torch.Tensor, pull: float,
                max_iter: int, target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Product-of-experts weights w (M,) >= 0 and bias b (C,) on out-of-fold log-probabilities.

    log_probs: (n, M, C), present: (n, M) bool. Minimises mean CE of sum_m present w_m log_probs_m + b
    + pull * (||w - target||^2 + ||b||^2) (target: (M,), default all 1, the plain product); w is
    clipped at 0 afterwards. For label sets (y (n, C) float)
    ``log_probs`` holds the experts' logits and the loss is the binary cross-entropy summed over
    classes, mean over items.
    """
    n, m, c = log_probs.shape
    target = torch.ones(m, device=log_probs.device) if target is None else target.to(log_probs.device)
    w = target.clone().requires_grad_(True)
    b = torch.zeros(c, device=log_probs.device, requires_grad=True)
    lp = log_probs * present.unsqueeze(2).to(log_probs.dtype)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = torch.einsum("nmc,m->nc", lp, w) + b
        fit = (F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / max(n, 1) if y.ndim == 2
               else F.cross_entropy(logits, y))
        loss = fit + pull * ((w - target).pow(2).sum() + b.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().clamp_min(0.0), b.detach()


def _cv_fit(z: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, k: int, cs: torch.Tensor, n_classes: int,
            max_iter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """C by k-fold CV (held-out log-loss), then the fit on every row at that C.

    Returns W (d, C), b (C,), out-of-fold log-probabilities (n, C) at the chosen C (in-sample ones
    when ``k`` < 2: then the middle candidate is used), and what was chosen. For label sets (y (n, C))
    the out-of-fold values are logits and the held-out loss is the summed binary cross-entropy.
    """
    multi = y.ndim == 2
    g, n = len(cs), len(y)
    best = g // 2
    info: dict = {}
    oof = None
    if k >= 2:
        # one problem per (fold, C), fold-major: train on the other folds' rows
        train_w = (fold.unsqueeze(0) != torch.arange(k, device=z.device).unsqueeze(1)).float()  # (k, n)
        w, b, _ = fit_logistic(z, y, n_classes, train_w.repeat_interleave(g, dim=0), cs.repeat(k), max_iter)
        with torch.no_grad():
            logits = torch.einsum("nd,pdc->pnc", z, w) + b.unsqueeze(1)
            lp = (logits if multi else F.log_softmax(logits, dim=2)).view(k, g, n, n_classes)
            held = F.one_hot(fold, k).T.float()  # (k, n): row i is held out by fold fold[i]
            oof_all = torch.einsum("fgnc,fn->gnc", lp, held)  # (g, n, C): each row from its held-out model
            if multi:
                nll = F.binary_cross_entropy_with_logits(oof_all, y.unsqueeze(0).expand_as(oof_all),
                                                         reduction="none").sum(2).mean(1)
            else:
                nll = -oof_all.gather(2, y.view(1, -1, 1).expand(g, -1, 1)).squeeze(2).mean(1)
            best = int(torch.argmin(nll))
            oof = oof_all[best]
            info["cv_nll"] = float(nll[best])
    w, b, iters = fit_logistic(z, y, n_classes, torch.ones(1, n, device=z.device), cs[best:best + 1], max_iter)
    if oof is None:
        with torch.no_grad():
            oof = z @ w[0] + b[0] if multi else F.log_softmax(z @ w[0] + b[0], dim=1)
    info.update({"C": best, "iters": iters})  # the caller maps the index back to its exact C
    return w[0], b[0], oof, info


def _mlp_logits(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """P one-hidden-layer MLPs on the same rows: x (n, d) -> logits (P, n, C)."""
    h = torch.relu(torch.einsum("nd,pdh->pnh", x, w1) + b1.unsqueeze(1))
    return torch.einsum("pnh,phc->pnc", h, w2) + b2.unsqueeze(1)


def _item_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(P, n) per-item loss of logits (P, n, C): cross-entropy, or summed binary cross-entropies for
    label sets y (n, C)."""
    if y.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits, y.unsqueeze(0).expand_as(logits), reduction="none").sum(2)
    return -F.log_softmax(logits, dim=2).gather(2, y.view(1, -1, 1).expand(len(logits), -1, 1)).squeeze(2)


def fit_mlps(x: torch.Tensor, y: torch.Tensor, n_classes: int, weights: torch.Tensor, penalties: torch.Tensor,
             hidden: int, steps: int, lr: float, seed: int, checkpoints: Sequence[int] = (),
             on_checkpoint: Callable[[int, torch.Tensor, list[torch.Tensor]], bool] | None = None
             ) -> list[torch.Tensor]:
    """P independent one-hidden-layer MLPs on the same rows, trained full-batch by Adam as one problem.

    x: (n, d); y: (n,) classes or (n, C) float label sets; weights: (P, n) row weights (0 leaves a row
    out of problem p); penalties: (P,) L2 coefficients on both weight matrices, added to the mean
    loss over p's rows. Every problem starts from the same seeded initialisation (so problems differ
    only in rows and penalty). Returns the parameters [w1 (P, d, h), b1, w2 (P, h, C), b2] after
    ``steps`` steps. After each step count in ``checkpoints``, ``on_checkpoint(steps, logits, params)``
    gets the logits (P, n, C) of every row (held-out rows included: their weight only keeps them out of
    the loss) and the parameters they came from (detached; copy what you keep); when it returns False,
    training stops there.
    """
    p, d = len(penalties), x.shape[1]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    w1 = (torch.randn(d, hidden, generator=gen) * math.sqrt(2.0 / max(d, 1))).to(x.device)
    w2 = (torch.randn(hidden, n_classes, generator=gen) * math.sqrt(1.0 / hidden)).to(x.device)
    params = [w1.expand(p, -1, -1).clone(), torch.zeros(p, hidden, device=x.device),
              w2.expand(p, -1, -1).clone(), torch.zeros(p, n_classes, device=x.device)]
    for t in params:
        t.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    count = weights.sum(1).clamp_min(1.0)
    marks = set(int(c) for c in checkpoints)
    for step in range(steps + 1):
        logits = _mlp_logits(x, *params)
        if step in marks and on_checkpoint is not None and not on_checkpoint(
                step, logits.detach(), [t.detach() for t in params]):
            break
        if step == steps:
            break
        loss = ((weights * _item_loss(logits, y)).sum(1) / count).sum()
        loss = loss + (penalties * (params[0].pow(2).sum((1, 2)) + params[2].pow(2).sum((1, 2)))).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [t.detach() for t in params]


def _cv_fit_mlp(z: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, k: int, n_classes: int, hidden: int,
                penalties: Sequence[float], checkpoints: Sequence[int], lr: float,
                seed: int) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
    """The MLP expert: one model per fold (trained on the other folds), all penalties at once; the
    (penalty, step count) with the lowest held-out log-loss wins. Returns the winners' parameters
    (P = k, fold order), their out-of-fold expert terms (n, C) (each row from the model that did not
    see it) and what was chosen. Needs k >= 2."""
    multi = y.ndim == 2
    pen = torch.as_tensor([float(v) for v in penalties], dtype=z.dtype, device=z.device)
    g, n = len(pen), len(y)
    train_w = (fold.unsqueeze(0) != torch.arange(k, device=z.device).unsqueeze(1)).to(z.dtype)  # (k, n)
    held = F.one_hot(fold, k).T.to(z.dtype)  # (k, n): row i is held out by fold fold[i]
    best: dict = {"nll": math.inf}

    def score(steps: int, logits: torch.Tensor, params: list[torch.Tensor]) -> bool:
        """Keep the checkpoint if it is the best so far; False (stop training) once held-out loss is
        worse than the best by a margin: past early stopping it does not come back."""
        lp = logits if multi else F.log_softmax(logits, dim=2)
        oof_all = torch.einsum("fgnc,fn->gnc", lp.view(k, g, n, n_classes), held)  # (g, n, C)
        nll = _item_loss(oof_all, y).mean(1)
        j = int(torch.argmin(nll))
        if float(nll[j]) < best["nll"] - 1e-9:
            best.update(nll=float(nll[j]), pen=j, steps=steps, oof=oof_all[j],
                        params=[t.view(k, g, *t.shape[1:])[:, j].clone() for t in params])
        return float(nll[j]) < best["nll"] + 0.05

    fit_mlps(z, y, n_classes, train_w.repeat_interleave(g, dim=0), pen.repeat(k), hidden, max(checkpoints), lr,
             seed, checkpoints, score)
    info = {"cv_nll": best["nll"], "penalty": float(pen[best["pen"]]), "steps": best["steps"]}
    return best["params"], best["oof"], info


def train_probe(module: ProbeFusion, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                idx: torch.Tensor, y: torch.Tensor, *, cs: Sequence[float], folds: int, max_iter: int,
                pull: float, seed: int, interaction_penalties: Sequence[float] = (1e-3, 1e-2),
                interaction_steps: Sequence[int] = (25, 50, 100, 200, 400), interaction_lr: float = 0.01,
                interaction_min: int = 50,
                held_out: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict:
    """Fit ``module`` on labelled rows ``idx`` (labels ``y``: classes, or (n, C) float label sets) of the
    device features; returns a history record. ``held_out``: experts fitted elsewhere (the network), as
    name -> (expert terms (n, C) on the labelled rows, (n,) bool: rows held out from its training); the
    stacking reads them on those rows only.

    Statistics come from every row of ``inputs``; per head, C by stratified k-fold CV (k = ``folds``,
    at most n / 2; none below 4 labelled items) and a refit on every labelled item it reads; the MLP
    expert likewise (penalty and steps by the same folds), from ``interaction_min`` labelled items on
    (below, a few held-out items cannot say how far a nonlinear model extrapolates: it gets weight 0);
    then the product-of-experts weights on the out-of-fold predictions. Deterministic given ``seed`` (the folds).
    """
    module.set_statistics(inputs, masks)
    module.eval()
    n, c = len(idx), module.n_classes
    k = int(min(folds, n // 2))
    fold_np = stratified_folds(y.cpu().numpy(), k, np.random.default_rng(seed)) if k >= 2 else np.zeros(n, np.int64)
    fold = torch.as_tensor(fold_np, device=idx.device)
    cs_t = torch.as_tensor([float(v) for v in cs], dtype=torch.float32, device=idx.device)
    experts = module.expert_names
    oof = torch.zeros(n, len(experts), c, device=idx.device)
    present = torch.zeros(n, len(experts), dtype=torch.bool, device=idx.device)
    record: dict = {"epoch": 0, "recipe": "probe", "cv_folds": k if k >= 2 else 0}
    with torch.no_grad():
        x = {m: module.encoders[m](inputs[m][idx]) for m in module.names}
        for m in module.names:
            x[m] = torch.where(masks[m][idx].unsqueeze(1), x[m], torch.zeros_like(x[m]))
    for j, name in enumerate(experts):
        if name == NETWORK:
            if held_out and NETWORK in held_out:
                terms, rows_held = held_out[NETWORK]
                oof[:, j] = terms
                present[:, j] = rows_held
                record["held_out:network"] = int(rows_held.sum())
            continue
        if name == INTERACTION:
            if n < max(interaction_min, 2 * folds):  # too few to validate a nonlinear expert: weight 0
                record["skipped:interaction"] = f"{n} labelled items < {max(interaction_min, 2 * folds)}"
                continue
            with torch.no_grad():
                z = module.project(x)
            params, oof_j, info = _cv_fit_mlp(z, y, fold, k, c, module.interaction_hidden, interaction_penalties,
                                              interaction_steps, interaction_lr, seed)
            with torch.no_grad():
                for dst, src in zip(module.interaction, params):
                    dst.copy_(src)
            oof[:, j] = oof_j
            present[:, j] = True
            record.update({f"{key}:{name}": v for key, v in info.items()})
            continue
        if name == JOINT:
            rows = torch.arange(n, device=idx.device)
            z = torch.cat([x[m] for m in module.names], dim=1)
            head = module.joint_head
        else:
            rows = torch.nonzero(masks[name][idx]).squeeze(1)
            z = x[name][rows]
            head = module.aux_heads[name]
        if len(rows) == 0:  # no labelled item has this modality: its head stays at zero (uniform)
            continue
        w, b, oof_j, info = _cv_fit(z, y[rows], fold[rows], k, cs_t, c, max_iter)
        with torch.no_grad():
            head.weight.copy_(w.T)
            head.bias.copy_(b)
        oof[rows, j] = oof_j
        present[rows, j] = True
        info["C"] = float(cs[info["C"]])
        record.update({f"{key}:{name}": v for key, v in info.items()})
    target = torch.tensor([0.0 if e in LEARNED_EXPERTS else 1.0 for e in experts], device=idx.device)
    ew, eb = fit_experts(oof, present, y, pull, max_iter, target)
    with torch.no_grad():
        module.expert_weight.copy_(ew)
        module.fused_bias.copy_(eb)
    record.update({f"expert_weight:{m}": float(ew[j]) for j, m in enumerate(experts)})
    return record
