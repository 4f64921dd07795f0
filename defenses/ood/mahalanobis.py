"""The Mahalanobis baseline of the OOD tables (Lee et al. 2018; ``defenses.ood``): class means and a tied covariance
per feature layer, input preprocessing, and a logistic-regression layer ensemble tuned against D_out^train."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from harness.core.errors import UsageError
from harness.ood_metrics import auroc, fpr_at_tpr

from .scores import BATCH, _chunks

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
