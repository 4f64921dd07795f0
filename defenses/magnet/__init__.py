"""MagNet (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples", CCS 2017).

MagNet neither changes the classifier nor looks at adversarial examples: it trains an autoencoder ``ae`` on clean
images only and uses it twice (lecture slides "MagNet", "MagNet: detector", "MagNet: reformer"):

* **Training** (slide "MagNet: detector"): minimise the reconstruction error over the training set,

      L(X_train) = 1/|X_train| sum_{x in X_train} ||x - ae(x)||_2   (the slide; the official code minimises the MSE)

  as a *denoising* autoencoder: the inputs get Gaussian noise, ae(clip(x + v N(0, I), 0, 1)) is fitted to x
  (official ``defensive_models.py``: ``v_noise = 0.1`` for MNIST, MSE loss, Adam, batch 256, 100 epochs).  Here
  the noise is drawn afresh for every batch (the official code draws it once for the whole run) - the standard
  denoising-autoencoder recipe; ``noise`` = 0.1 by default.  Training goes through the purifier loop of
  ``defenses.purifiers.training`` (``train_purifier``; this module registers the method ``magnet`` there, so
  ``harness train --defense magnet --out ae.pt`` saves an autoencoder and ``--set magnet.checkpoint=ae.pt`` loads
  it); the autoencoder does not depend on the classifier, so the cache key has no target model in it.

* **Detectors** (slide "MagNet: detector"; reject when ANY detector fires, as MagNet's ``Operator.filter``):
  - reconstruction error ``l1`` / ``l2``: D(x) = ||x - ae(x)||_p.  The slide writes p = 2; MagNet's MNIST setting
    (official ``test_defense.py``) uses two such detectors, detector I with p = 2 and detector II with p = 1
    (on two different autoencoders; the default here is that pair on the one autoencoder, ``detectors="l2,l1"``,
    since the JSD detectors add little on digits and reject clean images of their own).  The official
    ``AEDetector`` scores mean(|x - ae(x)|^p) = ||x - ae(x)||_p^p / dim: a monotone function of ||.||_p for a fixed
    image size, so thresholds set at a false-positive rate, the decisions and the AUROC are the same.
  - ``jsd<T>`` (e.g. ``jsd10``, ``jsd40``): D(x) = JSD(p || q), p = softmax(Z(x)/T), q = softmax(Z(ae(x))/T), Z the
    classifier's logits, JSD(p || q) = KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2 (natural log, as the official
    ``worker.JSD`` with scipy's ``entropy``).  MagNet uses T = 10 and T = 40 (its CIFAR-10 detectors).
  Each detector i gets its own threshold tau_i, set on clean images so that it rejects at most ``fpr`` of them
  (MagNet's ``Operator.get_thrs``: a "drop rate" per detector on validation data; 0.001 in the official MNIST
  script).  Default ``fpr`` = 0.01 per detector on the digits TRAINING split (1437 images: 0.1% would be one or
  two images, so 1% is the smallest rate with a stable quantile; a held-out part of digits would be smaller
  still).  The default autoencoder has 142 parameters and hardly overfits, so the test-split rate is close;
  for the JSD detectors the classifier also saw the training split, so its test-split rate can be a little
  higher.  Several detectors reject up to the sum of their rates.

* **Reformer** (slide "MagNet: reformer"): the classifier sees ae(x) instead of x (the official ``SimpleReformer``
  clips ae(x) to [0, 1]; the sigmoid output layer is already in [0, 1]).  ``reformer=False`` classifies x itself
  (detector only); ``detectors="none"`` is the reformer alone (then the defense reports itself as a preprocessor).

Harness contract (the ``Detector`` kind, as ``defenses.ood``): ``score`` is higher for accepted inputs,

    s(x) = min_i (1 - D_i(x) / tau_i),   tau = 0:   accepted iff s(x) >= 0 iff D_i(x) <= tau_i for every i,

(the relative margin of the detector closest to firing; for a single detector s = 1 - D/tau ranks inputs as -D
does, so ``det_auroc`` is the detector's own AUROC); ``classify`` = argmax Z(ae(x)) when accepted, -1 (ABSTAIN)
when rejected; ``calibrate`` sets every tau_i (on first use with the evaluated model: the JSD detectors depend
on it); ``surrogate_score`` = s itself (D and the reformer are differentiable, so the adaptive attack sees the
exact score); ``surface``: white-box attackers differentiate Z(ae(x)), oblivious ones attack the bare Z(x).
The adaptive attacks are ``pgd_detector`` (PGD on CE - lambda max(-s, 0)) and ``magnet_cw`` (Carlini & Wagner's
attack on MagNet, ``attacks/magnet_cw.py``).

Autoencoder (``MagNetAutoencoder``): MagNet's ``DenoisingAutoEncoder``: for each entry of ``structure`` a 3x3
convolution with that many channels and the ``activation`` (sigmoid in MagNet's MNIST models), or a 2x2 pooling
("average" / "max"); the decoder mirrors it (pooling -> 2x nearest upsampling), and a last 3x3 convolution with
a sigmoid gives the image.  MagNet's MNIST autoencoder I is ``"3,average,3"`` (the reformer and detector I),
autoencoder II ``"3"``; the default here is autoencoder II's structure (see ``DEFAULTS``).  The official activity
regulariser (L2, 1e-9) is left out (negligible).

Layout: ``autoencoder`` (the network and its settings), ``training`` (its training, caching and loading,
``SHIPPED``; the purifier method ``magnet``), ``detectors`` (the detectors' D(x)) and ``defense`` (the registered
``magnet``).
"""
from __future__ import annotations

from ..purifiers.training import weights_digest
from .autoencoder import DEFAULTS, PAPER, MagNetAutoencoder, parse_structure
from .defense import BATCH, MagNet
from .detectors import jsd, parse_detectors, reconstruction_error
from .training import METHOD, SHIPPED, cache_key, load_or_train_autoencoder, train_autoencoder

__all__ = ["BATCH", "DEFAULTS", "METHOD", "PAPER", "SHIPPED", "MagNet", "MagNetAutoencoder", "cache_key", "jsd",
           "load_or_train_autoencoder", "parse_detectors", "parse_structure", "reconstruction_error",
           "train_autoencoder", "weights_digest"]
