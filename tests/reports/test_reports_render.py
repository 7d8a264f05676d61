"""The HTML reports open offline in a real browser (headless Chromium) with every figure displayed.

Install the browser with ``apt-get install -y chromium`` (Debian); without it these tests skip.
A copy of each report gets a small script that writes, into the page title, how many images
failed to decode (``naturalWidth == 0``); Chromium's ``--dump-dom`` output is then parsed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.reports import figures as figs
from m2m_bids.reports.group import GroupMap, render_group
from m2m_bids.reports.participant import MapView, SessionView, StateView, render_participant

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  document.title = 'images=' + imgs.length + ';broken=' + broken;
});
</script>"""


def browser_image_check(html: Path, tmp: Path) -> tuple[int, int]:
    """(images, broken images) as the browser sees them."""
    probe = tmp / f"probe-{html.name}"
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=10000",
                             "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r"<title>images=(\d+);broken=(\d+)</title>", result.stdout)
    assert match, f"no probe result in the DOM; chromium said: {result.stderr[-800:]}"
    return int(match.group(1)), int(match.group(2))


def _stat_img():
    import nibabel as nib

    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = [-45, -63, -36]
    data = np.ones((16, 16, 16), np.float32)
    data[5:9, 8:12, 4:8] = 3.0
    return nib.Nifti1Image(data, affine)


def _save(out: Path, fig: object, path: Path) -> Path:
    """A figure saved as the app saves it (the derivatives sink, at the reports' resolution)."""
    return DerivativesWriter(out).save_figure(fig, path, dpi=figs.DPI)


@pytest.fixture(scope="module")
def participant_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    fig_dir = out / "sub-01" / "figures"
    prob = _save(out, figs.probability_figure({"CN": 0.3, "AD": 0.7}, "AD"), fig_dir / "sub-01_desc-m2m_predictions.png")
    stat = _save(out, figs.stat_map_figure(_stat_img(), "saliency · T1w"),
                 fig_dir / "sub-01_stat-saliency_desc-T1w_statmap.png")
    names = ["Hippocampus_L", "Hippocampus_R", "Precuneus_L"]
    conn = pd.DataFrame(np.eye(3), index=names, columns=names)
    rel = _save(out, figs.connectivity_figure(conn, "state 1"), fig_dir / "sub-01_task-rest_desc-state1_relmat.png")
    temporal = _save(out, figs.temporal_figure(np.linspace(0.5, 2, 30), 2.0, [29], "temporal attention"),
                                fig_dir / "sub-01_task-rest_desc-temporal_timeseries.png")
    qc = fig_dir / "sub-01_desc-registration_T1w.svg"  # what preprocessing leaves here (fMRIPrep-style SVG)
    from matplotlib.figure import Figure

    qc_fig = Figure(figsize=(3, 2))
    qc_fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    _save(out, qc_fig, qc)
    table = pd.DataFrame({"rank": [1, 2], "name": ["Hippocampus_L", "<script>x</script>"], "mean": [2.5, 1.9],
                          "n_voxels": [40, 12]})
    view = SessionView(session=None, prediction={"predicted_label": "AD", "n_windows": 3},
                       probabilities={"CN": 0.3, "AD": 0.7}, probability_figure=prob,
                       maps=[MapView("saliency · T1w", stat, table, out / "a.nii.gz", out / "a.tsv")],
                       states=[StateView("task-rest", "attention", temporal,
                                         pd.DataFrame({"state": [1], "peak_frame": [29]}), [("state 1", rel)])])
    return render_participant(out, "01", [view], "m2m@abc", in_training=True)


def test_participant_report_is_self_contained_and_escaped(participant_report: Path):
    html = participant_report.read_text()
    assert "src=\"data:image/png;base64," in html and "data:image/svg+xml;base64," in html
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    assert "training data" in html  # the leakage warning
    assert not re.search(r"(src|href)=\"(https?:|file:|/)", html)


def test_participant_report_displays_every_figure(participant_report: Path, tmp_path: Path):
    images, broken = browser_image_check(participant_report, tmp_path)
    assert images == 5 and broken == 0


def test_group_report_displays_every_figure(tmp_path: Path):
    out = tmp_path / "out"
    (out / "group" / "figures").mkdir(parents=True)
    pd.DataFrame({"split": ["fold-1", "mean", "sd"], "roc_auc": [0.8, 0.8, np.nan]}).to_csv(
        out / "group" / "metrics.tsv", sep="\t", index=False, na_rep="n/a")
    from matplotlib.figure import Figure

    roc = Figure(figsize=(3, 3))
    roc.add_subplot(1, 1, 1).plot([0, 0.2, 1], [0, 0.8, 1])
    _save(out, roc, out / "group" / "figures" / "roc.svg")
    coords = pd.DataFrame({"modality": ["fmri", "smri"] * 3, "label": ["AD", "AD", "CN", "CN", "AD", "CN"],
                           "tsne_1": np.arange(6.0), "tsne_2": np.arange(6.0)[::-1]})
    tsne = _save(out, figs.tsne_figure(coords), out / "group" / "figures" / "desc-tsne_latents.png")
    stat = _save(out, figs.stat_map_figure(_stat_img(), "AD"), out / "group" / "figures" / "class-AD.png")
    top = pd.DataFrame({"class": ["AD"], "modality": ["T1w"], "rank": [1], "name": ["Hippocampus_L"]})
    report = render_group(out, "m2m@abc", [GroupMap("AD · attention", stat, np.ones(1))], top, tsne)
    assert "Cross-validation" in report.read_text()
    images, broken = browser_image_check(report, tmp_path)
    assert images == 3 and broken == 0


def test_probe_detects_a_broken_image(tmp_path: Path):
    """Negative control: the check must fail when an image cannot be decoded."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="data:image/png;base64,AAAA"><img src="missing.png"></body></html>')
    images, broken = browser_image_check(page, tmp_path)
    assert images == 2 and broken == 2
