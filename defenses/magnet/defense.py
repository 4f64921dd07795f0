"""The registered ``magnet`` (``defenses.magnet``): the reformer and the detectors around the classifier, each
detector's threshold set at ``fpr`` on clean images."""
from __future__ import annotations

import torch
from torch import nn

from harness.core.capabilities import TrainsAlone
from harness.core.defense import ABSTAIN
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES
from harness.data import load
from harness.ood_metrics import threshold_at_tpr

from ..ood import ThresholdDetector
from ..purifiers.training import parse_settings, train_to_file, weights_digest
from .autoencoder import DEFAULTS
from .detectors import jsd, parse_detectors, reconstruction_error
from .training import NoTarget, load_or_train_autoencoder

BATCH = 500


class _Reformed(nn.Module):
    """Z(ae(x)): the classifier behind the reformer, the white-box surface of MagNet."""

    def __init__(self, ae: nn.Module, classifier: nn.Module):
        super().__init__()
        self.ae, self.classifier = ae, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.ae(x))


@DEFENSES.register("magnet", "MagNet (Meng & Chen 2017): autoencoder reformer + detectors (l1/l2 reconstruction error, "
                             "jsd<T>), each rejecting fpr of clean images")
class MagNet(ThresholdDetector, nn.Module, TrainsAlone):
    """MagNet (module docstring): ``detectors`` (comma-separated ``l1``, ``l2``, ``jsd<T>``, or ``none``), each
    rejecting at most ``fpr`` of the clean ``calib_split`` images of ``dataset`` (the first ``calib_n``; None: all);
    ``reformer``: classify ae(x) (else x).  The autoencoder: ``checkpoint`` (a state dict), else trained on first
    use (``structure``, ``noise``, ``train_epochs``, ``train_seed``) and cached."""

    # TrainsAlone: the autoencoder learns from clean images (harness train --defense magnet --out ae.pt).

    @classmethod
    def train_to_file(cls, out, *, dataset, split, data_dir, epochs, seed, device, settings) -> str:
        """``harness train --defense magnet --out ae.pt [--set noise=0.1]``: the purifier loop's ``train_to_file``
        with the autoencoder's settings (no classifier is involved)."""
        data = load(dataset, split or "train", data_dir)
        cfg = {"seed": seed, **parse_settings("magnet", settings)}
        train_to_file("magnet", NoTarget(device), data, out, epochs=epochs, **cfg)
        return f"magnet.checkpoint={out}"

    def __init__(self, detectors: str = "l2,l1", fpr: float = 0.01, reformer: bool = True,
                 checkpoint: str | None = None, dataset: str = "digits", structure: str = DEFAULTS["structure"],
                 noise: float = DEFAULTS["noise"], train_epochs: int = DEFAULTS["epochs"], train_seed: int = 0,
                 calib_split: str = "train", calib_n: int | None = None, data_dir: str | None = None):
        nn.Module.__init__(self)
        if not 0 < fpr < 1:
            raise UsageError(f"magnet: fpr must be in (0, 1), got {fpr}")
        ThresholdDetector.__init__(self, 1 - fpr, None, dataset, calib_split, calib_n, data_dir)
        self._detectors = parse_detectors(detectors)
        self.detectors = ",".join(d[0] for d in self._detectors) or "none"
        self.fpr, self.reformer = float(fpr), bool(reformer)
        if not self._detectors and not self.reformer:
            raise UsageError("magnet: with no detector and no reformer nothing is left of the defense")
        cfg = {"structure": structure, "noise": float(noise), "epochs": int(train_epochs), "seed": int(train_seed)}
        self.ae, self._source = load_or_train_autoencoder(cfg, dataset=dataset, checkpoint=checkpoint,
                                                          data_dir=data_dir)
        self._params = {"detectors": self.detectors, "fpr": self.fpr, "reformer": self.reformer,
                        "checkpoint": checkpoint, "dataset": dataset, "calib_split": calib_split, "calib_n": calib_n,
                        **({} if checkpoint else cfg), "weights": weights_digest(self.ae)}
        self.thresholds: dict[str, float] = {}
        self.eval()

    @property
    def kind(self) -> str:
        """"detector"; "preprocessor" for the reformer alone (``detectors="none"``).  Declared, not assigned: it
        follows the detectors fixed at construction."""
        return "detector" if self._detectors else "preprocessor"

    # ---------------------------------------------------------------- scores
    def describe(self) -> dict:
        return dict(self._params)

    def reform(self, x: torch.Tensor) -> torch.Tensor:
        """R(x) = ae(x) (already in [0, 1]: sigmoid output)."""
        return self.ae(x)

    def parts(self, model: nn.Module, x: torch.Tensor) -> dict:
        """One pass of the bare classifier ``model`` (differentiable when ``x`` requires a gradient): the reformed
        image, the logits the defended classifier decides on (Z(ae(x)), or Z(x) without the reformer) and every detector's D(x)."""
        recon = self.ae(x)
        z_r = model(recon) if self.reformer or any(k == "jsd" for _, k, _ in self._detectors) else None
        z_x = model(x) if not self.reformer or any(k == "jsd" for _, k, _ in self._detectors) else None
        values = {}
        for name, kind, arg in self._detectors:
            values[name] = reconstruction_error(x, recon, int(arg)) if kind == "recon" else jsd(z_x, z_r, arg)
        return {"recon": recon, "logits": z_r if self.reformer else z_x, "values": values}

    def combine(self, values: dict, like: torch.Tensor) -> torch.Tensor:
        """s = min_i (1 - D_i / tau_i) (>= 0: accepted); zeros without detectors."""
        if not self._detectors:
            return like.new_zeros(len(like))
        return torch.stack([1 - values[n] / self.thresholds[n] for n, _, _ in self._detectors]).amin(0)

    @torch.no_grad()
    def detector_values(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every detector's D(x), in chunks of ``BATCH`` images."""
        chunks = [self.parts(model, x[i:i + BATCH])["values"] for i in range(0, len(x), BATCH)]
        return {n: torch.cat([c[n] for c in chunks]) if chunks else x.new_zeros(0) for n, _, _ in self._detectors}

    def _score(self, model, x):
        if self._tau is None:
            self.calibrate(model)
        return self.combine(self.detector_values(model, x), x)

    def surrogate_score(self, model, x: torch.Tensor) -> torch.Tensor:
        """The score itself, differentiable (D and ae are): what ``pgd_detector`` ascends (``model``: the bare
        classifier, as ``Detector.surrogate_score`` says)."""
        if self._tau is None:
            self.calibrate(model)
        return self.combine(self.parts(model, x)["values"], x)

    def attack_parts(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of the defended classifier, score) in one differentiable pass (for ``magnet_cw``)."""
        if self._tau is None:
            self.calibrate(model)
        r = self.parts(model, x)
        return r["logits"], self.combine(r["values"], x)

    # ---------------------------------------------------------------- calibration and decisions
    @property
    def tau(self) -> float | None:
        return self._tau

    def calibrate(self, model, x: torch.Tensor | None = None) -> float:
        """tau_i = the largest threshold with at most ``fpr`` of the clean images (``x``, default: the calibration
        split) having D_i > tau_i (MagNet's per-detector drop rate); the combined score's threshold is 0."""
        if x is None:

            data = load(self.dataset, self.calib_split, self.data_dir)
            x = data.take(None if self.calib_n is None else min(self.calib_n, len(data))).x
        device = next(self.ae.parameters()).device
        values = self.detector_values(model, x.to(device))
        self.thresholds = {n: max(-threshold_at_tpr(-v.cpu(), 1 - self.fpr), 1e-12) for n, v in values.items()}
        self._tau, self._cache = 0.0, None
        return self._tau

    @torch.no_grad()
    def classify(self, model, x: torch.Tensor) -> torch.Tensor:
        if self._tau is None:
            self.calibrate(model)
        r = self.parts(model, x)
        pred = r["logits"].argmax(1)
        s = self.combine(r["values"], x).detach()
        self._cache = (x, x._version, s)  # ``score`` on the same tensor reuses it
        return torch.where(s >= self._tau, pred, torch.full_like(pred, ABSTAIN))

    def surface(self, model, threat):
        return model if threat == "oblivious" or not self.reformer else _Reformed(self.ae, model)

    def extra_repr(self) -> str:
        return f"detectors={self.detectors}, fpr={self.fpr}, reformer={self.reformer}, weights from {self._source}"
