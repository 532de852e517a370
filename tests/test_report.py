"""Pictures and the HTML report: what each plot draws, and a page whose every image decodes."""
import base64
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kernels import plots, report
from tests.conftest import DEMO_WEIGHTS

FAKE, REAL = "FAKE/0_aaqaifqrwn.mp4_0_0.mp4", "REAL/0_aayrffkzxn.mp4_0_0.mp4"
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The ``<img>`` tags (alt, decoded image) and the ids of the ``<h2>`` headings, in order."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.headings = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            head, _, data = attrs["src"].partition(",")
            assert head == "data:image/png;base64", head[:40]
            raw = base64.b64decode(data, validate=True)
            assert raw.startswith(PNG)
            self.images.append((attrs["alt"], cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)))
        elif tag == "h2" and "id" in attrs:
            self.headings.append(attrs["id"])


@pytest.mark.parametrize("count, keep, expected", [
    (0, 8, []), (1, 8, [0]), (3, 8, [0, 1, 2]), (10, 2, [0, 9]), (10, 4, [0, 3, 6, 9]), (9, 5, [0, 2, 4, 6, 8]),
])
def test_spread_keeps_first_and_last_evenly(count, keep, expected):
    assert plots.spread(count, keep).tolist() == expected


def test_crop_strip_shows_chosen_crops_in_frame_order_with_their_probabilities(demo_scores):
    scores, *_ = demo_scores
    frames = scores.video(REAL).frames  # 2 tracks over 3 frames
    fig = plots.crop_strip(frames, max_crops=2)
    ordered = frames.sort_values(["frame", "track"])
    chosen = ordered.iloc[[0, len(ordered) - 1]]
    assert [ax.get_title() for ax in fig.axes] == [f"frame {r.frame} · t{r.track}\np = {r.prob:.2f}" for r in chosen.itertuples()]
    for ax, p in zip(fig.axes, chosen["prob"]):
        red = ax.spines["top"].get_edgecolor()[0] > 0.5
        assert red == (p > 0.5)
    assert plots.png_bytes(fig).startswith(PNG)


def test_gradcam_strip_overlays_the_crops_and_agrees_with_the_kernels_probabilities(demo_scores):
    scores, ensemble, *_ = demo_scores
    frames = scores.video(FAKE).frames
    plain, heat = (plots.crop_strip(frames, model=m) for m in (None, ensemble.models[0]))
    assert [ax.get_title() for ax in heat.axes] == [ax.get_title() for ax in plain.axes]  # same p, 2 decimals
    pixels = [np.asarray(ax.get_images()[0].get_array(), dtype=float) for ax in (plain.axes[0], heat.axes[0])]
    assert np.abs(pixels[0] - pixels[1]).mean() > 5  # the heat is drawn


def test_timeline_draws_one_line_per_track_and_the_video_score(demo_scores):
    scores, *_ = demo_scores
    one = scores.video(REAL)
    fig = plots.timeline(one.frames, one.videos["label"][0], "confident")
    lines = fig.axes[0].get_lines()
    tracks = [line for line in lines if line.get_label().startswith("track")]
    assert len(tracks) == one.frames["track"].nunique() == 2
    for line, (_, part) in zip(tracks, one.frames.sort_values("frame").groupby("track")):
        np.testing.assert_allclose(line.get_ydata(), part["prob"])
    video = [line for line in lines if line.get_label().startswith("video")][0]
    assert video.get_ydata()[0] == pytest.approx(one.videos["label"][0])


def test_histogram_counts_each_label_as_numpy_does():
    rng = np.random.default_rng(0)
    probs, y = rng.random(50), rng.integers(0, 2, 50)
    fig = plots.histogram(probs, y, bins=5)
    heights = [[p.get_height() for p in c] for c in fig.axes[0].containers]
    for label, h in zip((0, 1), heights):
        assert h == np.histogram(probs[y == label], bins=np.linspace(0, 1, 6))[0].tolist()


@pytest.mark.parametrize("crop, message", [(None, "was not kept"), (Path("/nonexistent/x.png"), "not a readable image")])
def test_load_crop_names_the_problem(crop, message):
    with pytest.raises(ValueError, match=message):
        plots.load_crop(crop)


def test_page_has_folder_plots_then_videos_most_fake_first(demo_scores):
    scores, *_ = demo_scores
    labels = pd.DataFrame({"path": [FAKE, REAL, "broken.mp4"], "label": [1, 0, 1]})
    page = Page(report.render(scores, labels, ensemble=demo_scores[1]))
    assert page.headings == list(scores.videos["filename"])  # sorted by label, descending
    alts = [alt for alt, _ in page.images]
    assert alts[:3] == ["folder_roc", "folder_reliability", "histogram"]
    assert alts[3:] == [f"{v} {kind}" for v in scores.videos["filename"] if v != "broken.mp4"
                        for kind in ("crops", "gradcam cpu_demo", "timeline")]
    assert all(image is not None and image.shape[0] > 50 and image.shape[1] > 50 for _, image in page.images)
    assert "prior: not a readable video" in report.render(scores)


def test_cli_writes_a_self_contained_page_and_its_config(demo_scores, tmp_path):
    _, _, folder, _ = demo_scores
    labels = tmp_path / "labels.csv"
    labels.write_text(f"filename,label\n{FAKE},FAKE\n{REAL},REAL\nbroken.mp4,FAKE\n")
    out = tmp_path / "report"
    assert report.main(["--videos", str(folder), "--out", str(out), "--weights", str(DEMO_WEIGHTS),
                        "--frames", "2", "--workers", "0", "--precision", "fp32", "--labels", str(labels), "--no-gradcam"]) == 0
    text = (out / "report.html").read_text()
    assert "src=\"http" not in text and "<script" not in text  # nothing fetched when opened
    page = Page(text)
    assert len(page.images) == 3 + 2 * 2 and "Grad-CAM" not in text and set(page.headings) == {FAKE, REAL, "broken.mp4"}
    config = json.loads((out / "config.json").read_text())
    assert (config["frames"], config["strategy"], config["models"]) == (2, "confident", ["cpu_demo"])
    assert pd.read_csv(out / "submission.csv").shape == (3, 2)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "nope.pt"], "nope.pt"),
    (["--labels", "tests/test_report.py"], "tests/test_report.py: Error tokenizing"),
    (["--labels", "pyproject.toml"], "pyproject.toml: labels need 'path'"),
])
def test_cli_refuses_bad_inputs_with_one_line(argv, message, tmp_path, caplog):
    assert report.main(["--videos", str(tmp_path), "--out", str(tmp_path / "r"), *argv]) == 2
    assert message in caplog.text
    assert not (tmp_path / "r" / "report.html").exists()


def screenshot(page: Path, png: Path) -> np.ndarray:
    """The page as headless Chromium draws it (no network, no profile), as a BGR array."""
    if shutil.which("chromium") is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={png.parent / 'profile'}", "--hide-scrollbars", "--window-size=1000,3000",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)
    return cv2.imread(str(png))


def test_a_browser_shows_the_pages_pictures(demo_scores, tmp_path):
    """Rendered headlessly, the page shows its plots and crops; with its images broken it does not."""
    scores, ensemble, *_ = demo_scores
    labels = pd.DataFrame({"path": [FAKE, REAL, "broken.mp4"], "label": [1, 0, 1]})
    text = report.render(scores, labels, ensemble=ensemble)
    good, broken = tmp_path / "good.html", tmp_path / "broken.html"
    good.write_text(text, encoding="utf-8")
    broken.write_text(text.replace("data:image/png;base64,", "data:image/png;base64,AAAA"), encoding="utf-8")
    drawn = [screenshot(page, tmp_path / f"{page.stem}.png") for page in (good, broken)]

    def colourful(image):  # share of pixels that are neither white-ish nor grey text
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        return float(((hsv[..., 1] > 60) & (hsv[..., 2] > 40)).mean())

    assert drawn[0].shape[:2] == (3000, 1000)
    assert colourful(drawn[0]) > 0.005 and colourful(drawn[0]) > 5 * colourful(drawn[1])
