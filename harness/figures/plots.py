"""The drawing: matplotlib, imported here only, and only when a figure is drawn (it costs about a second).

Each function draws one figure and saves it as ``<stem>.png`` (150 dpi) and ``<stem>.pdf``, each written to a
temporary name and renamed into place.  Rendering is headless and touches no global state: figures are
``matplotlib.figure.Figure`` objects on an Agg canvas (no pyplot, so neither a figure manager nor the backend of
a host process, a notebook say, is involved).  The PDF carries no creation date, so the same data give the same
bytes.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

DPI = 150
FORMATS = ("png", "pdf")
METADATA = {"png": {}, "pdf": {"CreationDate": None}}
WORST = "worst case"


def _figure(n_panels: int, *, ncols: int = 3, panel=(4.8, 3.5), extra_h: float = 0.0):
    """A constrained-layout figure on an Agg canvas with ``n_panels`` axes (at most ``ncols`` a row)."""
    import matplotlib

    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType in the PDF: text stays text
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows + extra_h), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    return fig, list(axes[:n_panels])


def save(fig, stem: Path) -> list[Path]:
    """``stem``.png and ``stem``.pdf, atomically; returns their paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        final = stem.parent / f"{stem.name}.{fmt}"
        fd, tmp = tempfile.mkstemp(dir=stem.parent, prefix=f".{final.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=fmt, dpi=DPI, metadata=METADATA[fmt])
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(final)
    return written


def _colors():
    from matplotlib import colormaps

    return list(colormaps["tab10"].colors)


def _eps_text(e: float) -> str:
    return f"{e:.3g}"


def robust_vs_eps(panels: list[tuple[str, list[tuple[str, list[tuple[float, float, float, float]]]], list | None]],
                  stem: Path, *, title: str, xlabel: str) -> list[Path]:
    """Robust accuracy (%) against the budget: one panel per ``(panel title, lines, clean)``, each line
    ``(label, [(eps, acc, ci_low, ci_high), ...])`` with its 95% interval as a shaded band.  A line labelled
    ``WORST`` is drawn wide and pale beneath the others; ``clean`` (``[(eps, accuracy)]`` or None), a grey dashed line.  The
    colour of a label is the same in every panel, and one legend below the panels names them."""
    fig, axes = _figure(len(panels), ncols=3, panel=(5.6, 4.0) if len(panels) == 1 else (4.8, 3.6), extra_h=0.7)
    labels = list(dict.fromkeys(label for _, lines, _ in panels for label, _ in lines if label != WORST))
    palette = _colors()
    color = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    markers = "osD^vP*Xh<>"
    marker = {label: markers[i % len(markers)] for i, label in enumerate(labels)}
    handles = {}
    all_eps = sorted({p[0] for _, lines, _ in panels for _, pts in lines for p in pts})
    for ax, (name, lines, clean) in zip(axes, panels):
        if clean:  # [(eps, clean accuracy)]: a level line, or a line over eps where the defense follows the budget
            if len({c for _, c in clean}) == 1:
                handles["clean"] = ax.axhline(clean[0][1], color="0.45", ls="--", lw=1.2, label="clean")
            else:
                (handles["clean"],) = ax.plot(*zip(*sorted(clean)), color="0.45", ls="--", lw=1.2, label="clean")
        for label, pts in lines:
            pts = sorted(pts)
            xs, ys, lo, hi = ([p[i] for p in pts] for i in range(4))
            if label == WORST:  # wide and pale, beneath: the attack that makes the worst case shows on top of it
                (h,) = ax.plot(xs, ys, color="black", lw=5, alpha=0.35, solid_capstyle="round", label=label, zorder=2)
                ax.fill_between(xs, lo, hi, color="black", alpha=0.08, lw=0, zorder=1)
            else:
                (h,) = ax.plot(xs, ys, color=color[label], lw=1.6, marker=marker[label], ms=5, label=label, zorder=3)
                ax.fill_between(xs, lo, hi, color=color[label], alpha=0.14, lw=0, zorder=1)
            handles.setdefault(label, h)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-3, 103)
        if len(all_eps) <= 8:
            ax.set_xticks(all_eps, [_eps_text(e) for e in all_eps])
        ax.grid(True, alpha=0.3)
    order = [k for k in ["clean", WORST, *labels] if k in handles]
    fig.legend([handles[k] for k in order], order, loc="outside lower center", fontsize=9, frameon=False,
               ncols=min(len(order), 2 if len(panels) == 1 else 4))
    fig.suptitle(title + "\n(shaded: exact 95% intervals)", fontsize=11)
    return _done(fig, stem)


def histograms(panels: list[tuple[str, list[tuple[str, list[float]]], list[tuple[str, float, float | None]]]],
               stem: Path, *, title: str, xlabel: str, lo: float | None = 0.0) -> list[Path]:
    """Overlaid histograms: one panel per ``(panel title, series, marks)``, each series ``(label, values)``
    (shared bins in a panel), each mark ``(label, x, x2)``: a dotted vertical line at ``x``, or a hatched band
    from ``x`` to ``x2``.  ``lo``: the left end of the bins (None: the smallest value)."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(len(panels), ncols=3, panel=(6.0, 4.4) if len(panels) == 1 else (4.8, 4.2), extra_h=0.3)
    palette = _colors()
    for ax, (name, series, marks) in zip(axes, panels):
        values = [v for _, vals in series for v in vals]
        xs = [m[1] for m in marks] + [m[2] for m in marks if m[2] is not None]
        left = min(values + xs) if lo is None else lo
        right = max(values + xs + [left])
        pad = 0.04 * (right - left) or 0.05
        n = max(len(vals) for _, vals in series)
        bins = np.linspace(left - (pad if lo is None else 0), right + pad, max(20, min(40, int(2 * math.sqrt(n)) + 1)) + 1)
        for i, (label, vals) in enumerate(series):
            c = palette[i % len(palette)]
            ax.hist(vals, bins=bins, color=c, alpha=0.45, label=label)
            ax.hist(vals, bins=bins, color=c, histtype="step", lw=1.4)
        for label, x, x2 in marks:
            if x2 is None:
                ax.axvline(x, color="black", ls=":", lw=1.8, label=label)
            else:
                ax.axvspan(x, x2, facecolor="none", edgecolor="black", hatch="///", lw=0.8, alpha=0.6, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _done(fig, stem)


def certified_curve(radius: list[float], acc: list[float], points: list[tuple[str, float, float, float, float]],
                    stem: Path, *, title: str, eps: tuple[str, float] | None = None) -> list[Path]:
    """Certified accuracy (%) against the L2 radius (a step curve), the table's radii as points with their 95%
    intervals, and the attack budget's radius (``eps``: (label, radius)) as a dotted line."""
    fig, (ax,) = _figure(1, panel=(6.4, 4.4))
    right = max([*radius, *(p[1] for p in points), *([eps[1]] if eps else []), 1e-3])
    if radius and acc[-1] == 0 and radius[-1] < right:  # past the largest certified radius nothing is certified
        radius, acc = [*radius, right], [*acc, 0.0]
    ax.plot(radius, acc, drawstyle="steps-post", color="tab:blue", lw=1.8, label="certified accuracy")
    if points:
        xs = [p[1] for p in points]
        ys = [p[2] for p in points]
        err = [[p[2] - p[3] for p in points], [p[4] - p[2] for p in points]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color="tab:orange", ms=5, capsize=3, lw=1.2,
                    label="at the table's radii (95% interval)")
    if eps is not None:
        ax.axvline(eps[1], color="black", ls=":", lw=1.6, label=eps[0])
    ax.set_xlabel("L2 radius r")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_xlim(-0.02 * right, 1.03 * right)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="upper right", framealpha=0.9)
    ax.set_title(title, fontsize=10)
    return _done(fig, stem)


def _np(x):
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def image_grid(x_o, x_r, x_adv, path, *, labels=None, pred_r=None, pred_adv=None, title: str | None = None,
               notes=None) -> list[Path]:
    """Figure 6 style (preemptive paper): a column per image, rows x_o, x_r, x_adv and |x_r - x_o|.

    ``x_o``, ``x_r``, ``x_adv``: N x C x H x W in [0, 1] (tensors or arrays; C = 1 grey, 3 colour).  |x_r - x_o|
    is the largest difference over the channels, on one colour scale from 0 with a colour bar.  ``labels``: the
    true class of each image (column titles); ``pred_r`` / ``pred_adv``: the defended predictions on x_r and x_adv
    (under each image, red where wrong; -1 is a rejection); ``notes``: a short text under each x_adv (e.g.
    "invalid").  Writes ``path`` with .png and .pdf (a suffix of ``path`` is replaced); returns the two paths.
    """
    import numpy as np

    xo, xr, xa = (_np(x) for x in (x_o, x_r, x_adv))
    if not (xo.shape == xr.shape == xa.shape) or xo.ndim != 4:
        raise ValueError(f"x_o, x_r and x_adv must be N x C x H x W of one shape, got {xo.shape}, {xr.shape}, {xa.shape}")
    n = len(xo)
    diff = np.abs(xr - xo).max(axis=1)
    top = float(diff.max()) if diff.size else 0.0
    side = 1.25 if xo.shape[-1] <= 32 else 1.8
    fig, axes = _figure(4 * n, ncols=n, panel=(side, side), extra_h=0.9 + 0.25 * (title or "").count("\n"))
    fig.set_figwidth(max(side * n + 1.6, 6.5))
    axes = np.array(axes).reshape(4, n)

    def show(ax, img):
        if img.shape[0] == 1:
            return ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        return ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")

    def caption(ax, text, wrong=False):
        ax.set_xlabel(text, fontsize=8, color="crimson" if wrong else "black", labelpad=2)

    im = None
    for j in range(n):
        show(axes[0, j], xo[j])
        show(axes[1, j], xr[j])
        show(axes[2, j], xa[j])
        im = axes[3, j].imshow(diff[j], cmap="magma", vmin=0, vmax=max(top, 1e-6), interpolation="nearest")
        if labels is not None:
            axes[0, j].set_title(f"label {int(labels[j])}", fontsize=9)
        for row, preds in ((1, pred_r), (2, pred_adv)):
            if preds is not None:
                p = int(preds[j])
                text = "rejected" if p < 0 else f"pred {p}"
                if row == 2 and notes is not None and notes[j]:
                    text += f"\n{notes[j]}"
                caption(axes[row, j], text, labels is not None and p != int(labels[j]))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for row, name in enumerate(("$x_o$", "$x_r$", "$x_{adv}$", "$|x_r - x_o|$")):
        axes[row, 0].set_ylabel(name, fontsize=11, rotation=0, ha="right", va="center", labelpad=8)
    cax = axes[3, -1].inset_axes([1.08, 0.0, 0.09, 1.0])  # beside the last panel: every row keeps its columns
    fig.colorbar(im, cax=cax, label="$|x_r - x_o|$")
    if title:
        fig.suptitle(title, fontsize=10)
    stem = Path(path)
    return _done(fig, stem.with_suffix("") if stem.suffix in (".png", ".pdf") else stem)


def _done(fig, stem: Path) -> list[Path]:
    try:
        return save(fig, stem)
    finally:
        fig.clf()
