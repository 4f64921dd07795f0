"""Defense-GAN (Samangouei, Kabkab & Chellappa, "Defense-GAN: Protecting Classifiers Against Adversarial Attacks Using
Generative Models", ICLR 2018), and how BPDA breaks it (Athalye, Carlini & Wagner, ICML 2018, Sec. 5.4.1).

Lecture slides "Defense-GAN" (seed ``lecture-defenses-against-adversarial-attacks.md``):

* a generator G is trained on clean (unperturbed) training images only; here with WGAN-GP (Gulrajani et al.,
  "Improved Training of Wasserstein GANs", NeurIPS 2017, Algorithm 1), the official code's MNIST mode ``wgan-gp``;
* the classifier sees P(x) = G(z*(x)) with

      z*(x) = argmin_z ||G(z) - x||_2^2                                         (slide "Defense-GAN"; paper eq. 8)

  approximated by L steps of gradient descent z <- z - eta * grad_z ||G(z) - x||_2^2 from R random starts
  z_0 ~ N(0, I) (G's prior), keeping per sample the start with the smallest final error (paper Sec. 3.2,
  Figure 1 and Algorithm 1; slide: "L steps of gradient descent and R random re-initializations").
* "BPDA breaks it" (slide "Breaking preprocessing-based defenses"): z* is not differentiated (the slide:
  "non-differentiable"), so a plain gradient attack through P sees a zero gradient; BPDA (``attacks.bpda``) runs
  the forward pass through G(z*(.)) and replaces it by the identity on the backward pass (``approx(x) = x``).
  Plain white-box FGSM/PGD through P do nothing (zero gradient).  Measured on digits
  (``reports/grids/defense_gan_digits.toml``, 200 test images, ``digits_cnn``): BPDA-PGD brings the paper setting
  (L = 200, R = 10) from 73.0% (oblivious FGSM) to 66.5% at eps 0.1 and from 32.0% to 19.5% at eps 0.2 - below the
  oblivious attack, but not far below: on 8x8 digits the reconstruction is imperfect (the identity a rough backward)
  and oblivious FGSM already hurts.
  P is randomized: an attack that stops a sample on the first draw that fools it (the registered ``bpda``'s inner
  PGD has ``early_stop`` on) is judged on a fresh draw, so use ``early_stop=False`` or the engine's ``--passes``.

Settings.  ``L``, ``R`` and the step size eta are the defense's parameters.  The paper's (and the official code's,
github.com/kabkabm/defensegan ``experiments/cfgs/gans/mnist.yml``) MNIST setting is L = 200, R = 10.  The step size
here is on the slide's objective, the SUM of squares ||G(z) - x||_2^2: the brief's paper value 0.01 is that of the
official code expressed on this scale (it minimises the per-pixel MEAN with rec_lr = 10, i.e. 10/784 = 0.013 on the
sum for 28x28 images, with momentum 0.7 and the rate divided by 10 after 80% of the steps - plain gradient descent
here, as the slides).  The quick CPU default (digits, 8x8 = 64 pixels) is L = 50, R = 5, eta = 0.1: on 200 digits
test images the reconstruction then reaches a per-pixel MSE of about 0.01 and the standard classifier ``digits_cnn``
keeps 94% (its own clean accuracy: 94.5%); eta = 0.01 is too small for 64 pixels at L = 200, R = 10 (MSE 0.015,
90.5%).  Table and BPDA results: ``reports/grids/defense_gan_digits.toml`` (MNIST: ``defense_gan_mnist.toml``).

Generator and critic (``Generator``, ``Critic``): DCGAN-style, small, for 8x8 (digits) and 28x28 (MNIST) images:
G: z (``latent_dim``) -> linear -> (2w, s/4, s/4) -> 2x [transposed conv 4x4 stride 2] -> sigmoid image, batch norm
and ReLU in between (the official ``mnist_generator``: linear, two deconvolutions, batch norm, sigmoid output);
critic: 2x [conv 4x4 stride 2, leaky ReLU 0.2] -> linear, no batch norm (WGAN-GP: the penalty is per sample).
Training (``train_generator``): WGAN-GP's Algorithm 1, lambda = 10, n_critic = 5, Adam beta = (0.5, 0.9) (the
paper's and the official code's values); on digits 1000 generator iterations of batch 64 at lr 5e-4 (the official
code: 30,000 iterations at lr 1e-4, batch 32; ``PAPER_TRAINING``), about a minute on one CPU thread.  The generator
is trained on first use, seeded, on one thread, and cached through ``harness.core.artifacts.load_or_train`` keyed by
its settings and the dataset (and split); ``checkpoint`` loads a saved one (``save_generator``) with
``weights_only=True``.

Layout: ``networks`` (G and the critic), ``training`` (WGAN-GP, ``train_generator``), ``checkpoints`` (saving,
caching and loading G, ``SHIPPED``), ``projection`` (z*(x), ``reconstruct``) and ``defense`` (the registered
``defense_gan``).
"""
from __future__ import annotations

from .checkpoints import SHIPPED, cache_key, load_or_train_generator, save_generator
from .defense import BATCH, MAX_L, MAX_R, PAPER, QUICK, DefenseGAN
from .networks import Critic, Generator
from .projection import reconstruct, reconstruction_error
from .training import PAPER_TRAINING, TRAIN_DEFAULTS, TRAIN_SPLIT, gradient_penalty, resolve_settings, train_generator

__all__ = ["BATCH", "MAX_L", "MAX_R", "PAPER", "PAPER_TRAINING", "QUICK", "SHIPPED", "TRAIN_DEFAULTS", "TRAIN_SPLIT",
           "Critic", "DefenseGAN", "Generator", "cache_key", "gradient_penalty", "load_or_train_generator",
           "reconstruct", "reconstruction_error", "resolve_settings", "save_generator", "train_generator"]
