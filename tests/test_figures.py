"""Figures (harness.figures): drawn only when there is something to draw, linked from the Markdown, never changing
results.csv; the image grid of ``python -m harness.figures images``."""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import harness.report
from harness.cli import main
from harness.figures import FOLDER, grid_figures, image_grid, run_figures
from harness.figures.plots import histograms

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
FAST_PREEMPT = ["--set", "use_autoattack=false", "--set", "preempt.maxiter=5"]


def drawn(folder: Path, name: str) -> bool:
    """PNG and PDF both there, non-empty and of their format."""
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    return (png.is_file() and pdf.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            and pdf.read_bytes()[:5] == b"%PDF-" and png.stat().st_size > 5000 and pdf.stat().st_size > 5000)


def linked(md: str, name: str) -> bool:
    return "## Figures" in md and f"]({FOLDER}/{name}.png)" in md and f"({FOLDER}/{name}.pdf)" in md


def run(out: Path, *args: str, figures: bool = True, monkeypatch=None) -> Path:
    if not figures:
        monkeypatch.setattr(harness.report, "write_report", functools.partial(harness.report.write_report, figures=False))
    assert main(["run", *args, "--out", str(out), "--quiet"]) == 0
    if not figures:
        monkeypatch.undo()
    return out


def test_several_budgets_draw_robust_vs_eps_and_leave_results_csv_alone(tmp_path, adv_model, monkeypatch):
    args = ["--defense", "none", "--attack", "fgsm", "--attack", "pgd_linf", "--eps", "0.05,0.1,0.2", "--n", "40"]
    on = run(tmp_path / "on", *args)
    off = run(tmp_path / "off", *args, figures=False, monkeypatch=monkeypatch)
    assert drawn(on / FOLDER, "robust_vs_eps")
    assert sorted(p.name for p in (on / FOLDER).iterdir()) == ["robust_vs_eps.pdf", "robust_vs_eps.png"]
    md = (on / "results.md").read_text()
    assert linked(md, "robust_vs_eps")
    assert not (off / FOLDER).exists()
    assert (on / "results.csv").read_bytes() == (off / "results.csv").read_bytes()
    assert md.startswith((off / "results.md").read_text()) and "## Figures" not in (off / "results.md").read_text()
    # the same folder reused by a one-budget run: the earlier run's figure goes, and so does the empty folder
    run(on, "--defense", "none", "--attack", "pgd_linf", "--n", "40")
    assert not (on / FOLDER).exists() and "## Figures" not in (on / "results.md").read_text()


def test_one_budget_default_run_draws_nothing(tmp_path, adv_model, monkeypatch):
    on = run(tmp_path / "on", "--defense", "none", "--attack", "pgd_linf", "--n", "40")
    off = run(tmp_path / "off", "--defense", "none", "--attack", "pgd_linf", "--n", "40", figures=False,
              monkeypatch=monkeypatch)
    assert not (on / FOLDER).exists()
    for name in ("results.csv", "results.md", "samples.csv", "timings.csv"):
        if name == "timings.csv":  # seconds differ run to run; the columns do not
            assert (on / name).read_text().splitlines()[0] == (off / name).read_text().splitlines()[0]
        else:
            assert (on / name).read_bytes() == (off / name).read_bytes(), name


def test_one_budget_run_does_not_import_matplotlib(tmp_path):
    code = ("import sys; from harness.cli import main; "
            f"assert main(['run', '--n', '20', '--out', {str(tmp_path / 'r')!r}, '--quiet']) == 0; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_adaptive_attack_draws_the_distance_histograms(tmp_path, adv_model):
    out = run(tmp_path / "pre", "--defense", "preempt", "--attack", "adaptive_l2", "--n", "20", *FAST_PREEMPT)
    assert drawn(out / FOLDER, "distances") and not (out / FOLDER / "robust_vs_eps.png").exists()
    assert linked((out / "results.md").read_text(), "distances")


def test_no_samples_still_draws_from_the_verdicts(tmp_path, adv_model):
    out = run(tmp_path / "pre", "--defense", "preempt", "--attack", "adaptive_l2", "--n", "8", "--no-samples", *FAST_PREEMPT)
    assert drawn(out / FOLDER, "distances") and not (out / "samples.csv").exists()


def test_detector_draws_the_score_histograms(tmp_path, adv_model):
    out = run(tmp_path / "det", "--defense", "msp_detector", "--attack", "pgd_linf", "--n", "40")
    assert drawn(out / FOLDER, "detector_scores")
    assert linked((out / "results.md").read_text(), "detector_scores")


def test_certify_draws_the_curve(tmp_path):
    out = tmp_path / "cert"
    assert main(["certify", "--model", "digits_cnn_gauss", "--n", "10", "--N", "500", "--eps", "0.5", "--norm", "l2",
                 "--out", str(out), "--quiet"]) == 0
    assert drawn(out / FOLDER, "certified_vs_radius")
    assert linked((out / "certified.md").read_text(), "certified_vs_radius")


def test_grid_draws_robust_vs_eps_over_its_cells(tmp_path, adv_model):
    toml = tmp_path / "g.toml"
    toml.write_text('[axes]\ndefense = ["none"]\nattack = ["fgsm", "pgd_linf"]\neps = [0.05, 0.1]\n'
                    '"set.pgd_linf.steps" = [2, 3]\n[settings]\nn = 20\n')
    out = tmp_path / "grid"
    assert main(["grid", str(toml), "--out", str(out), "--quiet"]) == 0
    assert drawn(out / FOLDER, "robust_vs_eps")
    assert linked((out / "results.md").read_text(), "robust_vs_eps")
    assert all(drawn(c / FOLDER, "robust_vs_eps") for c in (out / "cells").iterdir() if c.is_dir())
    assert not [p for p in (out / "cells").iterdir() if p.is_file() and p.suffix in (".png", ".pdf")]


def test_images_command_draws_the_grid(tmp_path):
    out = tmp_path / "img"
    proc = subprocess.run([sys.executable, "-m", "harness.figures", "images", "--defense", "preempt", "--attack",
                           "adaptive_l2", "--n", "4", "--out", str(out), "--quiet", *FAST_PREEMPT],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert drawn(out, "images")


def test_images_command_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from harness.figures.images import main as images_main

    assert images_main(["images", "--defense", "no_such_defense", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_defense" in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_of_grey_and_colour_images(tmp_path, channels):
    rng = np.random.default_rng(0)
    x_o = rng.random((3, channels, 8, 8))
    x_r = np.clip(x_o + 0.1 * rng.standard_normal(x_o.shape), 0, 1)
    written = image_grid(x_o, x_r, x_r, tmp_path / "g.png", labels=[1, 2, 3], pred_r=[1, 2, 3], pred_adv=[1, 0, -1])
    assert [p.name for p in written] == ["g.png", "g.pdf"] and drawn(tmp_path, "g")
    with pytest.raises(ValueError):
        image_grid(x_o, x_r[:2], x_r, tmp_path / "bad")


def test_figures_are_the_same_bytes_for_the_same_data(tmp_path):
    panels = [("p", [("a", [0.1, 0.2, 0.2, 0.5]), ("b", [0.4, 0.6])], [("eps", 0.3, None), ("band", 0.35, 0.45)])]
    for d in ("a", "b"):
        histograms(panels, tmp_path / d / "h", title="t", xlabel="x")
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"h.{ext}").read_bytes() == (tmp_path / "b" / f"h.{ext}").read_bytes()


def test_nothing_to_draw_writes_nothing(tmp_path):
    rows = [{"dataset": "digits", "model": "m", "defense": "none", "attack": a, "threat": "white-box", "norm": "linf",
             "eps": "0.1", "clean_acc": "90.00", "robust_acc": "50.00", "robust_ci_low": "40.00", "robust_ci_high": "60.00",
             "cell": "c1"} for a in ("pgd_linf", "worst-case")]
    samples = [{"index": 0, "label": 1, "defense": "none", "attack": "pgd_linf", "eps": "0.1", "attacked": 1}]
    assert run_figures(tmp_path, rows, samples, {"dataset": "digits", "model": "m"}) == ""
    assert grid_figures(tmp_path, rows, {"c1": {"defense": "none"}}, ["defense"], "g") == ""
    assert not list(tmp_path.iterdir())


def test_a_configured_detector_threshold_is_drawn(tmp_path):
    from harness.figures.samples import _threshold

    info = {"config": {"defenses": [{"name": "msp_detector", "threshold": 0.8}, {"name": "other", "threshold": None}]}}
    assert _threshold("msp_detector", info) == 0.8 and _threshold("other", info) is None and _threshold("x", None) is None
