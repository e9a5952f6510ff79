"""Training-side modality balancing (``TrainConfig.modality_balance``): OGM-GE gradient modulation
and MMPareto gradient-conflict resolution (the unimodal warm-up needs only a loss, in :mod:`backend.models.losses`).

Why a module of its own: each method is a self-contained formula on one batch's outputs or gradients,
used by the training loop in :mod:`backend.models.trainer` and checked on its own by the tests.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from backend.models.config import TrainConfig
from backend.models.fusion import FusionModel


# --- OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022) ---

def modality_confidence(logits: Mapping[str, torch.Tensor], y: torch.Tensor,
                        masks: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    """Per-modality confidence s_m of one batch: the mean over items that *have* m of softmax(logits_m)[y].

    The paper sums over the batch; with complete data that gives the same ratios. The mean keeps a
    modality that is absent from part of the batch from looking weak merely for being absent.
    None when no item of the batch has m.
    """
    out: dict[str, float | None] = {}
    for k, lg in logits.items():
        m = masks[k]
        n = int(m.sum())
        if n == 0:
            out[k] = None
            continue
        if y.ndim == 2:  # label sets: mean over classes of the probability of the true side
            p = torch.sigmoid(lg.detach().float())
            p_true = (y * p + (1 - y) * (1 - p)).mean(dim=1)
        else:
            p_true = F.softmax(lg.detach().float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
        out[k] = float(p_true[m].sum()) / n
    return out


def ogm_coefficients(scores: Mapping[str, float | None], alpha: float) -> dict[str, float]:
    """OGM coefficients from confidences: rho_m = s_m / mean_{j != m} s_j, and

        k_m = 1 - tanh(alpha * (rho_m - 1))   if rho_m > 1   (m dominates: slow its encoder down)
        k_m = 1                               otherwise.

    With two modalities this is the paper's rule. Modalities without a score (absent from the batch)
    get k = 1 and are left out of the others' mean; with fewer than two scored modalities nothing is
    modulated.
    """
    out = {k: 1.0 for k in scores}
    scored = {k: float(v) for k, v in scores.items() if v is not None}
    if len(scored) < 2:
        return out
    for k, s in scored.items():
        ref = sum(v for j, v in scored.items() if j != k) / (len(scored) - 1)
        rho = s / ref if ref > 0 else (math.inf if s > 0 else 1.0)
        if rho > 1.0:
            out[k] = 1.0 - math.tanh(alpha * (rho - 1.0))
    return out


@torch.no_grad()
def _modality_logits(module: FusionModel, out, masks: dict[str, torch.Tensor], score: str) -> dict[str, torch.Tensor]:
    """Logits that say how well modality m alone drives the prediction, for s_m.

    "head": m's auxiliary head. "contribution": the *fused* head with every other modality set absent
    (the analogue of the paper's W_m z_m for a nonlinear fusion trunk), on this batch's embeddings,
    with dropout off so no random numbers are drawn.
    """
    if score == "head":
        return dict(out.aux_logits)
    was_training = module.training
    module.eval()
    try:
        res = {}
        for k in module.names:
            emb = {j: (z if j == k else module.absent[j].to(z.dtype).expand_as(z)) for j, z in out.embeddings.items()}
            msk = {j: (v if j == k else torch.zeros_like(v)) for j, v in masks.items()}
            res[k] = module.fuse(emb, msk).logits
        return res
    finally:
        module.train(was_training)


@torch.no_grad()
def _modulate(module: FusionModel, opt: torch.optim.Optimizer, coeffs: Mapping[str, float], train: TrainConfig) -> None:
    """Apply k_m to modality m's encoder and, with ``ogm_noise``, add N(0, std(g)) to its gradients.

    ``ogm_apply="grad"`` multiplies the gradients (the paper, which uses SGD); Adam divides by a
    running gradient scale, so it largely undoes a slowly varying k_m. ``"lr"`` scales the encoder's
    step size instead: the SGD-equivalent effect under AdamW. The noise std is that of the unscaled
    gradient, as in the paper's code; it is drawn from the trainer's seeded RNG.
    """
    for k, c in coeffs.items():
        for p in module.encoders[k].parameters():
            g = p.grad
            if g is None:
                continue
            std = float(g.std()) if (train.ogm_noise and g.numel() > 1) else 0.0
            if train.ogm_apply == "grad" and c != 1.0:
                g.mul_(c)
            if train.ogm_noise:
                g.add_(torch.randn_like(g) * (std + 1e-8))
    if train.ogm_apply == "lr":
        for group in opt.param_groups:
            mod = group.get("modality")
            group["lr"] = train.lr * (coeffs.get(mod, 1.0) if mod is not None else 1.0)


# --- MMPareto: Pareto gradient integration of multimodal and unimodal losses (Wei & Hu, ICML 2024) ---

def pareto_combine(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """MMPareto's final gradient from the multimodal and unimodal gradients of one encoder (flat vectors).

    Returns ``(g, alpha_1, conflict)``:

        no conflict (g_mm . g_u >= 0, i.e. cos >= 0; a zero vector never conflicts):
            alpha = (1/2, 1/2), and g = d ||g_mm + g_u|| / ||d|| is then exactly g_mm + g_u
        conflict:
            alpha_1 = clip((g_u - g_mm) . g_u / ||g_mm - g_u||^2, 0, 1), alpha_2 = 1 - alpha_1
            (the min-norm point of the segment [g_u, g_mm], as in MGDA for two tasks),
            d = alpha_1 g_mm + alpha_2 g_u,  g = d ||g_mm + g_u|| / ||d||

    Keeping the plain sum's magnitude is the paper's choice: the min-norm direction alone would shrink
    the step exactly when the two losses disagree. When ||d|| is ~0 (anti-parallel gradients) the
    direction is undefined and the plain sum is returned. Scalars are computed in float64 so the
    result does not depend on the device's summation order beyond rounding; g has g_mm's dtype.
    """
    a, b = g_mm.detach().double(), g_u.detach().double()
    total = a + b
    dot = float(a @ b)
    if not dot < 0.0:  # also covers a zero vector (and NaN, which then propagates in the sum)
        return total.to(g_mm.dtype), 0.5, False
    diff2 = float((a - b) @ (a - b))  # > 0: a negative dot product needs two distinct non-zero vectors
    alpha = min(max(float((b - a) @ b) / diff2, 0.0), 1.0)
    d = alpha * a + (1.0 - alpha) * b
    dn = float(d.norm())
    if dn <= 1e-12 * (float(a.norm()) + float(b.norm())):
        return total.to(g_mm.dtype), alpha, True
    return (d * (float(total.norm()) / dn)).to(g_mm.dtype), alpha, True


def _flat_grads(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector of ``grads`` (None, for a parameter a loss does not reach, as zeros)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def _pareto_backward(module: FusionModel, fused: torch.Tensor, aux: Mapping[str, torch.Tensor],
                     aux_weight: float) -> tuple[torch.Tensor, dict[str, bool]]:
    """Backward pass of ``_loss`` with MMPareto on each modality encoder's gradients (see train_model).

    ``fused``/``aux`` come from :func:`_loss_terms`. g_mm comes from one ``autograd.grad`` of the fused
    loss w.r.t. all encoders concerned, g_u from one per modality w.r.t. that encoder only (the graph
    is retained for both); then the usual ``loss.backward()`` fills every gradient and the encoders of
    conflicting modalities get :func:`pareto_combine`'s g instead. Returns the loss and, per modality,
    whether its gradients conflicted.
    """
    loss = fused + aux_weight * torch.stack(list(aux.values())).mean() if aux else fused
    conflicts = {k: False for k in module.names}
    enc = {k: [p for p in module.encoders[k].parameters() if p.requires_grad] for k in aux}
    targets = [k for k in aux if enc[k]]
    new: dict[str, torch.Tensor] = {}
    if targets:
        params = [p for k in targets for p in enc[k]]
        g_mm_all = torch.autograd.grad(fused, params, retain_graph=True, allow_unused=True)
        start = 0
        for k in targets:
            ps = enc[k]
            g_mm = _flat_grads(g_mm_all[start:start + len(ps)], ps)
            start += len(ps)
            l_u = aux_weight / len(aux) * aux[k]
            g_u = _flat_grads(torch.autograd.grad(l_u, ps, retain_graph=True, allow_unused=True), ps)
            g, _, conflicts[k] = pareto_combine(g_mm, g_u)
            if conflicts[k]:
                new[k] = g
    loss.backward()
    with torch.no_grad():
        for k, g in new.items():
            start = 0
            for p in enc[k]:
                part = g[start:start + p.numel()].view_as(p)
                start += p.numel()
                if p.grad is None:
                    p.grad = part.clone()
                else:
                    p.grad.copy_(part)
    return loss, conflicts
