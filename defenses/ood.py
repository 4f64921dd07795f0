"""Out-of-distribution detection with safe spots (safe-spot paper, section 3.6) and its baselines.

Safe-spot OOD detector (section 3.6).  Training, eq. (4):

    min_theta  E_{(x_o, y_o) ~ D_in}[ CE(x_a*, y_o; theta) ]
             + E_{x^_o ~ D_out^train}[ gamma * KL(u || C(x^_o; theta)) - lambda * CE(x^_a*, c(x^_o); theta) ]

x_s* = the safe spot of x_o for y_o within B_delta(x_o), x_a* = the PGD adversarial example of x_s* within
B_eps(x_s*) (UP CE(., y_o)); x^_s*, x^_a* the same for an outlier with its PREDICTED label c(x^_o) (unlabelled).
u is the uniform distribution, C the softmax.  Signs as in the paper: the first term is safe-spot-aware adversarial
training (section 3.5), the second flattens the outliers' predictions (Outlier Exposure's term; KL(u || C) =
CE(u, C) - log K, so its gradient is OE's), and the third, with a MINUS sign, RAISES the loss of the outliers'
safe-spot adversarial examples: "minimize ... the probability of safe spot existence of the outlier samples".  That
third term is unbounded below (CE can grow without limit); the paper states no clipping and neither does this
code; its gradient in the logits is bounded (|softmax - onehot| <= sqrt 2), and weight decay plus the KL term hold
the logits.  On digits (fine-tuning, ``scripts/ood_table.py --sweep-lambda``) lambda <= 0.5 kept the outliers'
last-epoch CE(x^_a*, c) at 1.4-1.9 (log 5 = 1.61 is the uniform value); at lambda = 1 it ran to 4.6 (KL term 1.1,
validation FPR95 0 -> 38%) on one seed and diverged on the other (CE 238, KL 199): keep lambda well below 1.
The searches in training are section 3.5's approximations (S-FGSM / k-step S-PGD towards the label), as for
the ``s-fgsm+adv`` / ``s-pgd+adv`` recipes (``defenses.safe_spot``).

Score (section 3.6):  D(x_o) = mu * max_y C(x_o)_y + (1 - mu) * max_y C(x_a*)_y, where x_s* in B_delta(x_o) is the
safe spot found for c(x_o) (by Algorithm 1 = S-Full by default; ``method`` selects S-FGSM / S-PGD for speed) and
x_a* in B_eps(x_s*) is the adversarial example of x_s*: T-step PGD (random start, step eps/4) UP CE(., c(x_o))
from x_s* (the point whose loss is the safe-spot objective of eq. (2), Figure 3).  Higher = in-distribution; low
scores are filtered as OOD.  mu, gamma and lambda are not given in the paper body (supplementary E.2 is not in the
seed, and no code is public: REFERENCE-IMPLEMENTATIONS.md section 2); defaults mu = 0.5, gamma = 0.5 (OE's
weight) and lambda = 0.1 are our choices, stated in every table: lambda had the lowest validation FPR95 of D in
{0, 0.1, 0.25, 0.5, 1} (in-distribution validation images vs held-out TRAINING outliers, 2 seeds; the differences
below lambda = 0.5 are within noise: 0.6 vs 1.2% mean FPR95).  The paper's experiments likely fine-tune (Figure 3's
model is "a safe spot-aware adversarially trained model without fine-tuning"): ``train_ood`` fine-tunes when given a
trained model, and ``scripts/ood_table.py`` fine-tunes an S-PGD+ADV model with eq. (4).  ``adv_term="pred"`` replaces max_y C(x_a*)_y by
C(x_a*)_{c(x_o)} = exp(-CE(x_a*, c(x_o))), the safe-spot objective itself mapped to [0, 1] (an option, not the
paper's formula).

Baselines:
* MSP: max_y C(x)_y (Hendrycks & Gimpel 2017).
* Mahalanobis (Lee et al. 2018): class means and one tied covariance of (spatially averaged) features at several
  layers, fitted on the in-distribution training images; per layer the score is max_c -(f - mu_c)^T S^-1 (f - mu_c)/2
  at the input x~ = x - eps * sign(grad_x min_c Mahalanobis distance) (input preprocessing); the layer scores are
  combined by logistic regression.  eps (from Lee et al.'s grid) and the regression weights are tuned on
  in-distribution VALIDATION images against the TRAINING outliers D_out^train, never the test outliers (section 4.4:
  "we modify Mahalanobis to tune with D_out^train").
* Outlier Exposure (Hendrycks et al. 2019b): train on CE(in) + 0.5 * CE(u, C(x_out)) (OE's loss, lambda = 0.5);
  score MSP.

Detectors inside the harness (``Detector`` kind): ``safe_spot_ood`` and ``msp_detector`` reject an input (classify
returns -1) when its score is below a threshold set at 95% TPR on CLEAN in-distribution data: by default the
``calib_split`` = "train" split of ``dataset`` (the threshold is calibrated on the training split; on test data of
the same distribution the acceptance rate can be a little below 95% because the model fits its training images).
The adaptive attack on them is ``pgd_detector`` (``attacks/detector_pgd.py``).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.pgd import PGD
from harness.core.defense import ABSTAIN, Detector
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES
from harness.data import load
from harness.ood_metrics import TPR, auroc, fpr_at_tpr, threshold_at_tpr

from .safe_spot import SafeSpot, search

BATCH = 500

# --------------------------------------------------------------------------------------------------------------
# Scores (higher = in-distribution)
# --------------------------------------------------------------------------------------------------------------


def _chunks(x: torch.Tensor, batch: int):
    for i in range(0, len(x), batch):
        yield x[i:i + batch]


@torch.no_grad()
def msp(model, x: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Maximum softmax probability max_y C(x)_y (Hendrycks & Gimpel 2017)."""
    return torch.cat([F.softmax(model(xb), 1).amax(1) for xb in _chunks(x, batch)]) if len(x) else x.new_zeros(0)


def safe_spot_parts(model, x: torch.Tensor, spot: SafeSpot, adv: PGD) -> dict:
    """For a batch: c(x_o), C(x_o), the safe spot x_s* (``spot``, towards c(x_o)), the adversarial example x_a* of
    x_s* (``adv`` UP CE(., c(x_o)) within B_eps(x_s*)) and C(x_a*)."""
    x = x.detach()
    with torch.no_grad():
        p0 = F.softmax(model(x), 1)
    c = p0.argmax(1)
    with torch.enable_grad():  # the searches differentiate even when called under no_grad (classify)
        x_s = spot.robustify(model, x, c)
        x_a = adv.iterate(model, x_s, c, None)
    with torch.no_grad():
        pa = F.softmax(model(x_a), 1)
    return {"c": c, "p0": p0, "x_s": x_s, "x_a": x_a, "pa": pa}


def combine(p0: torch.Tensor, pa: torch.Tensor, c: torch.Tensor, mu: float, adv_term: str = "msp") -> torch.Tensor:
    """D = mu * max_y C(x_o)_y + (1 - mu) * max_y C(x_a*)_y (section 3.6); ``adv_term="pred"``: C(x_a*)_{c(x_o)}."""
    term = pa.amax(1) if adv_term == "msp" else pa.gather(1, c[:, None])[:, 0]
    return mu * p0.amax(1) + (1 - mu) * term


def safe_spot_score(model, x: torch.Tensor, spot: SafeSpot, adv: PGD, mu: float = 0.5, adv_term: str = "msp",
                    batch: int = BATCH, parts: bool = False):
    """D(x) of section 3.6 for every image of ``x`` (in chunks of ``batch``).  ``parts=True`` also returns the
    per-image MSP(x) and MSP(x_a*) (so several mu can be evaluated from one search)."""
    p0s, pas, cs = [], [], []
    for xb in _chunks(x, batch):
        r = safe_spot_parts(model, xb, spot, adv)
        p0s.append(r["p0"])
        pas.append(r["pa"])
        cs.append(r["c"])
    p0, pa, c = torch.cat(p0s), torch.cat(pas), torch.cat(cs)
    score = combine(p0, pa, c, mu, adv_term)
    if parts:
        return score, {"msp": p0.amax(1), "msp_adv": pa.amax(1), "pred_adv": pa.gather(1, c[:, None])[:, 0]}
    return score


# Lee et al. (2018)'s input-preprocessing magnitudes (their official grid).
LEE_EPS = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01, 0.05, 0.1, 0.2)


def default_layers(model: nn.Module) -> list[nn.Module]:
    """Feature layers for Mahalanobis: every pooling module (the end of each block of a CNN) and the last Linear
    layer, whose INPUT (the penultimate features) is used."""
    mods = [m for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError("Mahalanobis: the model has no nn.Linear layer; pass the feature layers explicitly")
    return mods + [linears[-1]]


class Mahalanobis:
    """Mahalanobis-distance detector of Lee et al. (2018) with input preprocessing and a layer ensemble.

    ``fit(x, y)``: per layer, class means mu_c and the tied covariance S = (1/N) sum_c sum_{i in c} (f_i - mu_c)
    (f_i - mu_c)^T of the spatially averaged features (pseudo-inverse for S^-1).  ``tune(x_in, x_out)``: for each
    eps of ``eps_grid`` the per-layer scores of both sets are split in halves; a logistic regression (standardised
    features, in-distribution = 1) is fitted on one half and judged on the other by FPR at 95% TPR (ties: AUROC);
    the best eps is kept and the regression refitted on both halves.  ``score(x)``: the regression's decision
    function (higher = in-distribution).
    """

    def __init__(self, model: nn.Module, layers: list[nn.Module] | None = None, eps_grid=LEE_EPS, batch: int = BATCH):
        self.model, self.layers = model, layers or default_layers(model)
        self.eps_grid, self.batch = tuple(eps_grid), batch
        self.means: list[torch.Tensor] = []
        self.precisions: list[torch.Tensor] = []
        self.eps: float | None = None
        self.regression = None

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor | None] = [None] * len(self.layers)
        hooks = []
        for i, layer in enumerate(self.layers):
            def hook(mod, inp, out, i=i):
                f = inp[0] if isinstance(mod, nn.Linear) else out
                feats[i] = f.flatten(2).mean(2) if f.dim() > 2 else f.flatten(1)
            hooks.append(layer.register_forward_hook(hook))
        try:
            self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return feats

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "Mahalanobis":
        feats = [torch.cat(fs) for fs in zip(*(self._features(xb) for xb in _chunks(x, self.batch)))]
        classes = torch.unique(y)
        self.means, self.precisions = [], []
        for f in feats:
            f = f.double()
            mu = torch.stack([f[y == c].mean(0) for c in classes])
            centred = f - mu[torch.searchsorted(classes, y)]
            cov = centred.T @ centred / len(f)
            self.means.append(mu)
            self.precisions.append(torch.linalg.pinv(cov, hermitian=True))
        return self

    def _distances(self, f: torch.Tensor, layer: int) -> torch.Tensor:
        d = f.double()[:, None, :] - self.means[layer][None]
        return torch.einsum("ncd,de,nce->nc", d, self.precisions[layer], d)  # (n, classes) squared distances

    def layer_scores(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """(n, layers): per layer, max_c -d_c/2 at the input preprocessed against that layer's closest-class distance."""
        out = []
        for xb in _chunks(x.detach(), self.batch):
            cols = []
            for layer in range(len(self.layers)):
                xt = xb
                if eps > 0:
                    xg = xb.clone().requires_grad_(True)
                    with torch.enable_grad():
                        dmin = self._distances(self._features(xg)[layer], layer).amin(1)
                        (g,) = torch.autograd.grad(dmin.sum(), xg)
                    xt = xb - eps * g.sign()  # x~ = x - eps * sign(grad of the distance): raises the score
                with torch.no_grad():
                    cols.append(-0.5 * self._distances(self._features(xt)[layer], layer).amin(1))
            out.append(torch.stack(cols, 1))
        return torch.cat(out).float()

    def tune(self, x_in: torch.Tensor, x_out: torch.Tensor, seed: int = 0) -> "Mahalanobis":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler


        gen = torch.Generator().manual_seed(seed)
        pi, po = torch.randperm(len(x_in), generator=gen), torch.randperm(len(x_out), generator=gen)
        halves = [(pi[: len(pi) // 2], po[: len(po) // 2]), (pi[len(pi) // 2:], po[len(po) // 2:])]
        best = None
        for eps in self.eps_grid:
            s_in, s_out = self.layer_scores(x_in, eps).numpy(), self.layer_scores(x_out, eps).numpy()
            (a_in, a_out), (b_in, b_out) = halves
            X = np.concatenate([s_in[a_in], s_out[a_out]])
            Y = np.r_[np.ones(len(a_in)), np.zeros(len(a_out))]
            reg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, Y)
            v_in, v_out = reg.decision_function(s_in[b_in]), reg.decision_function(s_out[b_out])
            key = (fpr_at_tpr(v_in, v_out), -auroc(v_in, v_out))
            if best is None or key < best[0]:
                best = (key, eps, s_in, s_out)
        _, self.eps, s_in, s_out = best
        X = np.concatenate([s_in, s_out])
        Y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
        self.regression = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, Y)
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:
        if self.regression is None:
            raise UsageError("Mahalanobis: call fit(...) and tune(...) before score(...)")
        return torch.from_numpy(self.regression.decision_function(self.layer_scores(x, self.eps).numpy())).float()


# --------------------------------------------------------------------------------------------------------------
# Training: standard, Outlier Exposure, and eq. (4)
# --------------------------------------------------------------------------------------------------------------


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(u || softmax(logits)) = -log K - (1/K) sum_k log C_k (eq. (4), second term)."""
    return -math.log(logits.shape[1]) - F.log_softmax(logits, 1).mean(1)


def uniform_ce(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy to the uniform distribution, -(mean_k z_k - logsumexp z) (OE's outlier loss)."""
    return -(logits.mean(1) - torch.logsumexp(logits, 1))


def eq4_loss(logits_adv_in: torch.Tensor, y: torch.Tensor, logits_out: torch.Tensor | None = None,
             logits_adv_out: torch.Tensor | None = None, c_out: torch.Tensor | None = None, gamma: float = 0.5,
             lam: float = 0.1) -> tuple[torch.Tensor, dict]:
    """The batch estimate of eq. (4): mean CE(x_a*, y_o) + gamma * mean KL(u || C(x^_o)) - lam * mean CE(x^_a*, c(x^_o)).

    ``logits_adv_in`` = model(x_a*), ``logits_out`` = model(x^_o), ``logits_adv_out`` = model(x^_a*), ``c_out`` =
    c(x^_o).  Outlier terms are skipped when their inputs are None or their weight is 0.  Returns (loss, terms)."""
    terms = {"ce_adv_in": F.cross_entropy(logits_adv_in, y)}
    loss = terms["ce_adv_in"]
    if logits_out is not None and gamma != 0:
        terms["kl_uniform_out"] = uniform_kl(logits_out).mean()
        loss = loss + gamma * terms["kl_uniform_out"]
    if logits_adv_out is not None and lam != 0:
        terms["ce_adv_out"] = F.cross_entropy(logits_adv_out, c_out)
        loss = loss - lam * terms["ce_adv_out"]
    return loss, terms


def oe_loss(logits_in: torch.Tensor, y: torch.Tensor, logits_out: torch.Tensor, weight: float = 0.5) -> tuple[torch.Tensor, dict]:
    """Outlier Exposure: mean CE(x_in, y) + weight * mean CE(u, C(x_out)) (Hendrycks et al. 2019b; weight 0.5)."""
    terms = {"ce_in": F.cross_entropy(logits_in, y), "ce_uniform_out": uniform_ce(logits_out).mean()}
    return terms["ce_in"] + weight * terms["ce_uniform_out"], terms


OBJECTIVES = ("standard", "oe", "safe_spot")


def train_ood(model: nn.Module, x_in: torch.Tensor, y_in: torch.Tensor, x_out: torch.Tensor | None,
              objective: Literal["standard", "oe", "safe_spot"] = "safe_spot", *, epochs: int = 15, lr: float = 0.1,
              batch_size: int = 128, out_batch_size: int = 256, weight_decay: float = 5e-4, seed: int = 0,
              gamma: float = 0.5, lam: float = 0.1, oe_weight: float = 0.5, norm: str = "linf", eps: float = 0.1,
              delta: float | None = None, search_method: Literal["fgsm", "pgd"] = "pgd", search_steps: int = 10,
              steps: int = 5, alpha: float | None = None, history: list | None = None) -> nn.Module:
    """Train ``model`` in place, from its current weights (so a trained model is fine-tuned): the training loop of
    ``harness.models.recipes.fit`` (SGD momentum 0.9, cosine decay of ``lr`` to 0, seeded shuffling; eval mode while
    searching/attacking, train mode for the loss step).

    ``objective``:
      "standard": CE(x_in).
      "oe": CE(x_in) + ``oe_weight`` * mean uniform_ce(x_out) (Outlier Exposure, lambda = 0.5).
      "safe_spot": eq. (4) with ``gamma``, ``lam``; searches by ``search_method`` (S-FGSM, or S-PGD with
      ``search_steps`` steps of delta/4; section 3.5) and x_a* by ``steps``-step PGD (step eps/4, random start).
      gamma = lam = 0 (or x_out None) is safe-spot-aware adversarial training alone (the ``s-pgd+adv`` recipe).
    Outlier batches of ``out_batch_size`` (OE: 256 for 128 in-distribution images) cycle through a fresh seeded
    permutation of ``x_out`` whenever it runs out.  ``history`` (a list) receives per epoch the mean of each loss term.
    """
    if objective not in OBJECTIVES:
        raise UsageError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    use_out = objective != "standard" and x_out is not None and len(x_out) > 0
    if objective == "oe" and not use_out:
        raise UsageError("Outlier Exposure needs outliers")
    device = next(model.parameters()).device
    delta = eps if delta is None else delta
    attack = PGD(norm=norm, eps=eps, steps=steps, alpha=alpha, early_stop=False)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_in) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps_per_epoch))))
    out_perm, out_pos = None, 0

    def next_outliers():
        nonlocal out_perm, out_pos
        take = []
        need = min(out_batch_size, len(x_out))
        while need > 0:
            if out_perm is None or out_pos >= len(out_perm):
                out_perm, out_pos = torch.randperm(len(x_out), generator=gen), 0
            part = out_perm[out_pos:out_pos + need]
            out_pos += len(part)
            need -= len(part)
            take.append(part)
        return x_out[torch.cat(take)].to(device)

    def spot_adversarial(xb, yb):  # x_a* of section 3.5: S-FGSM/S-PGD towards yb, then PGD up CE(., yb)
        x_s = search(model, xb, yb, search_method, norm, delta, search_steps, None, True)
        return attack.iterate(model, x_s, yb, None)

    for _ in range(epochs):
        perm = torch.randperm(len(x_in), generator=gen)
        sums, count = {}, 0
        for i in range(0, len(x_in), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x_in[idx].to(device), y_in[idx].to(device)
            xo = next_outliers() if use_out else None
            model.eval()
            if objective == "safe_spot":
                xa = spot_adversarial(xb, yb).detach()
                if use_out and lam != 0:
                    with torch.no_grad():
                        c_out = model(xo).argmax(1)  # c(x^_o): outliers are unlabelled
                    xoa = spot_adversarial(xo, c_out).detach()
            model.train()
            if objective == "standard":
                terms = {"ce_in": F.cross_entropy(model(xb), yb)}
                loss = terms["ce_in"]
            elif objective == "oe":
                loss, terms = oe_loss(model(xb), yb, model(xo), oe_weight)
            else:
                loss, terms = eq4_loss(model(xa), yb, model(xo) if use_out and gamma != 0 else None,
                                       model(xoa) if use_out and lam != 0 else None,
                                       c_out if use_out and lam != 0 else None, gamma, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
            count += len(idx)
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"train_ood ({objective}): a loss term became non-finite: {sums}")
        if history is not None:
            history.append({k: v / count for k, v in sums.items()})
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# Detectors in the harness
# --------------------------------------------------------------------------------------------------------------


class ThresholdDetector(Detector):
    """A Detector that rejects (classify -> -1) inputs whose score is below tau, and otherwise returns the
    classifier's prediction.  tau = ``threshold`` if given, else the largest value that accepts >= ``tpr`` of the
    clean ``calib_split`` images of ``dataset`` (calibrated on first use with the evaluated model, on the first
    ``calib_n`` = 1000 images of the split, all of them for None: the safe-spot score costs a search per image, so a
    whole CIFAR training split would take far longer than the evaluation).  Scores of the last ``classify`` call are reused by a ``score`` call
    on the very same tensor (so the harness's rejection and detection numbers come from one scoring)."""

    def __init__(self, tpr: float = TPR, threshold: float | None = None, dataset: str = "digits",
                 calib_split: str = "train", calib_n: int | None = 1000, data_dir: str | None = None):
        if not 0 < tpr <= 1:
            raise UsageError(f"detector: tpr must be in (0, 1], got {tpr}")
        self.tpr, self.threshold, self.dataset, self.calib_split = float(tpr), threshold, dataset, calib_split
        self.calib_n, self.data_dir = calib_n, data_dir
        self._tau: float | None = None if threshold is None else float(threshold)
        self._cache = None

    def _score(self, model, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, model, x: torch.Tensor) -> torch.Tensor:
        c = self._cache
        if c is not None and c[0] is x and c[1] == x._version:
            return c[2]
        s = self._score(model, x.detach()).detach()
        self._cache = (x, x._version, s)
        return s

    @property
    def tau(self) -> float | None:
        return self._tau

    def calibrate(self, model, x: torch.Tensor | None = None) -> float:
        """Set tau at ``tpr`` of the scores of ``x`` (default: the calibration split)."""
        if x is None:

            data = load(self.dataset, self.calib_split, self.data_dir)
            x = data.take(None if self.calib_n is None else min(self.calib_n, len(data))).x
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self._tau = threshold_at_tpr(self.score(model, x.to(device)).cpu(), self.tpr)
        return self._tau

    def prepare(self, model, x, y):
        if self._tau is None:
            self.calibrate(model)
        return x

    @torch.no_grad()
    def classify(self, model, x: torch.Tensor) -> torch.Tensor:
        if self._tau is None:
            self.calibrate(model)
        pred = model(x).argmax(1)
        return torch.where(self.score(model, x) >= self._tau, pred, torch.full_like(pred, ABSTAIN))


@DEFENSES.register("msp_detector", "maximum-softmax-probability OOD detector (Hendrycks & Gimpel 2017): rejects below "
                                   "the 95%-TPR threshold")
class MSPDetector(ThresholdDetector):
    """Score max_y C(x)_y; rejects inputs below tau (95% TPR on the clean training split by default)."""

    def _score(self, model, x):
        return msp(model, x)

    def surrogate_score(self, model, x):
        return F.softmax(model(x), 1).amax(1)


@DEFENSES.register("safe_spot_ood", "safe-spot OOD detector (safe-spot paper, sec. 3.6): D = mu MSP(x) + (1-mu) MSP(x_a*), "
                                    "rejects below the 95%-TPR threshold")
class SafeSpotOOD(ThresholdDetector):
    """Score D(x) = mu * MSP(x) + (1 - mu) * MSP(x_a*) (section 3.6): x_s* = the safe spot of x for c(x) by
    ``method`` (default "full" = Algorithm 1 with ``maxiter``, ``inner_steps``, ``n_starts``, ``beta``, ``init``;
    "pgd" = S-PGD with ``steps``; "fgsm" = S-FGSM), x_a* = ``adv_steps``-step PGD (step ``adv_alpha`` = eps/4, random
    start) up CE(., c(x)) within B_eps(x_s*).  Rejects inputs below tau (95% TPR on the clean training split by
    default).  The model should be trained for it (eq. (4), ``train_ood``; or at least safe-spot-aware, e.g. the zoo's
    ``digits_cnn_spgd_adv``, the model of Figure 3).  ``surrogate_score``: D with x_a* - x held constant (straight-
    through), what ``pgd_detector`` differentiates.
    """

    def __init__(self, mu: float = 0.5, method: Literal["fgsm", "pgd", "full"] = "full",
                 norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, delta: float | None = None, steps: int = 20,
                 maxiter: int = 100, inner_steps: int = 20, n_starts: int = 1, beta: float | None = None,
                 init: Literal["clean", "random"] = "clean", adv_steps: int = 20, adv_alpha: float | None = None,
                 adv_term: Literal["msp", "pred"] = "msp", tpr: float = TPR, threshold: float | None = None,
                 dataset: str = "digits", calib_split: str = "train", calib_n: int | None = 1000,
                 data_dir: str | None = None):
        super().__init__(tpr, threshold, dataset, calib_split, calib_n, data_dir)
        if not 0 <= mu <= 1:
            raise UsageError(f"safe_spot_ood: mu must be in [0, 1], got {mu}")
        self.mu, self.method, self.adv_steps, self.adv_alpha, self.adv_term = float(mu), method, int(adv_steps), adv_alpha, adv_term
        self.spot = SafeSpot(method=method, norm=norm, eps=eps, delta=delta, steps=steps, maxiter=maxiter,
                             inner_steps=inner_steps, n_starts=n_starts, beta=beta, init=init)
        self.norm, self.eps, self.delta = self.spot.norm, self.spot.eps, self.spot.delta
        self.steps, self.maxiter, self.inner_steps, self.n_starts, self.beta, self.init = steps, maxiter, inner_steps, n_starts, beta, init

    def adversary(self) -> PGD:
        return PGD(norm=self.norm, eps=self.eps, steps=self.adv_steps, alpha=self.adv_alpha, random_start=True,
                   early_stop=False)

    def _score(self, model, x):
        return safe_spot_score(model, x, self.spot, self.adversary(), self.mu, self.adv_term)

    def surrogate_score(self, model, x):
        r = safe_spot_parts(model, x.detach(), self.spot, self.adversary())
        x_a = x + (r["x_a"] - x).detach()  # straight-through: the safe-spot/adversarial displacement held constant
        return combine(F.softmax(model(x), 1), F.softmax(model(x_a), 1), r["c"], self.mu, self.adv_term)
