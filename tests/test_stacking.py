"""The stacked ensemble: fitted out of fold on planted scores, its file strict, its members checked
by name and sha256 where the kernel, the default rule and the bundle read it."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from kernels import bundle, calibrate, inputs, predict
from kernels.ensemble import Ensemble
from models.calibration import Calibration, logit
from models.checkpoint import amend_checkpoint, read_checkpoint
from models.metrics import paired_intervals
from models.stacking import Stacking, StackingError
from plumbing.fileio import file_digest
from preprocessing.folds import assign_folds
from preprocessing.index import index_folder
from tests.conftest import DEMO_WEIGHTS, REPO

LRNET_WEIGHTS = REPO / "weights" / "lrnet_dfo.pt"


def planted(videos: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, an informative score (three times too sure of the true logit) and a pure noise score."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, videos)
    labels = (rng.random(videos) < expit(z)).astype(int)
    return labels, expit(3 * z), expit(rng.normal(0, 2, videos))


def crossval_folder(folder, configs: dict[str, np.ndarray], labels, folds) -> None:
    """A ``training.crossval`` ``crops.csv``: per config, two identical crops per video (one track)."""
    rows = [{"config": config, "checkpoint": "last", "fold": folds[v], "video": f"v{v:03d}", "frame": frame,
             "track": 0, "label": labels[v], "prob": probs[v]}
            for config, probs in configs.items() for v in range(len(labels)) for frame in range(2)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "crops.csv", index=False)


def copies(tmp_path, *names: str):
    """Copies of the demo frame checkpoint under ``names``, each with its own calibration (so its own sha256)."""
    paths = []
    for i, name in enumerate(names):
        shutil.copy(DEMO_WEIGHTS, tmp_path / f"{name}.pt")
        amend_checkpoint(tmp_path / f"{name}.pt", calibration=Calibration(1.0 + i, 0.0, "confident").to_dict())
        paths.append(tmp_path / f"{name}.pt")
    return paths


def test_the_fit_gives_the_informative_member_the_weight_and_measures_it_out_of_fold(tmp_path, caplog):
    labels, good, noise = planted(1000)
    crossval_folder(tmp_path / "cv", {"good": good, "noise": noise}, labels, np.arange(1000) % 4)
    good_pt, noise_pt = copies(tmp_path, "good", "noise")
    out = tmp_path / "stacking.json"
    argv = ["--stack", str(out), "--member", str(tmp_path / "cv"), "good", str(good_pt),
            "--member", str(tmp_path / "cv"), "noise", str(noise_pt)]
    with caplog.at_level(logging.INFO):
        assert calibrate.main(argv) == 0
    stacking = Stacking.load(out)
    by_name = {m.name: m for m in stacking.members}
    # the checkpoints' calibrations (T = 1 and 2) are what the kernel applies; the regression undoes them:
    # good's logit 3z / 1 needs a coefficient near 1/3, noise's (of std 1) none: within its standard error, 0.07
    assert by_name["good"].logit == pytest.approx(1 / 3, abs=0.06)
    assert abs(by_name["noise"].logit) < 0.07 and by_name["noise"].abstained == by_name["good"].abstained == 0.0
    assert by_name["good"].sha256 == file_digest(good_pt) and by_name["noise"].checkpoint == "noise.pt"
    assert by_name["good"].strategy == "confident" and by_name["good"].score == "calibrated"
    rows = stacking.report["out_of_fold"]
    assert set(rows) == {"good", "noise", "mean", "stack"} and all(r["videos"] == 1000 for r in rows.values())
    assert rows["stack"]["logloss"] < rows["mean"]["logloss"] - 0.05  # the noise no longer dilutes the mean
    assert rows["stack"]["logloss"] == pytest.approx(rows["good"]["logloss"], abs=0.02)
    assert rows["noise"]["auc_lo"] < 0.5 < rows["noise"]["auc_hi"] and rows["stack"]["auc_lo"] > 0.8
    assert rows["stack"]["logloss_lo"] < rows["stack"]["logloss"] < rows["stack"]["logloss_hi"]
    assert set(stacking.report["per_fold_balanced_logloss"]) == {"0", "1", "2", "3"}
    assert "mean" in caplog.text and "good: logit" in caplog.text
    # the file's formula on all videos: what the kernel will compute from score_<model>
    calibrated = np.column_stack([Calibration(1.0)(good), Calibration(2.0)(noise)])
    expected = expit(stacking.intercept + logit(calibrated) @ [by_name["good"].logit, by_name["noise"].logit])
    assert np.allclose(stacking.predict(calibrated), expected)


@pytest.fixture
def shared_like(tmp_path):
    """120 (empty) video files in 60 identity groups, their labels file and the folds prepare deals them."""
    root = tmp_path / "videos"
    root.mkdir()
    labels, good, noise = planted(120, seed=1)
    for v in range(120):
        (root / f"v{v:03d}.mp4").touch()
    pd.DataFrame({"path": [f"v{v:03d}.mp4" for v in range(120)], "label": labels,
                  "group": [f"person{v // 2}" for v in range(120)]}).to_csv(tmp_path / "labels.csv", index=False)
    index = index_folder(root, tmp_path / "labels.csv").videos
    folds = dict(zip(index["video"], assign_folds(index["group"], index["label"], 5)))
    return root, labels, good, noise, np.array([folds[f"v{v:03d}"] for v in range(120)])


def test_an_abstaining_member_is_stacked_by_its_indicator(shared_like, tmp_path):
    """A detail-file member that abstains on a third of the videos, mostly fakes: its abstention is evidence."""
    root, labels, good, noise, folds = shared_like
    crossval_folder(tmp_path / "cv", {"frame": good}, labels, folds)
    sequence = noise.copy()
    rng = np.random.default_rng(2)
    abstains = rng.random(120) < np.where(labels == 1, 0.6, 0.1)
    sequence[abstains] = np.nan
    details = pd.DataFrame({"filename": [f"v{v:03d}.mp4" for v in range(120)], "status": "ok", "score_seq": sequence})
    details.loc[5, "status"] = "prior"  # no face: the kernel gives it the prior, the stack never sees it
    details["abstained_seq"] = np.where(abstains, "video shorter than one run", "")
    alone = np.flatnonzero(abstains)[np.flatnonzero(abstains) != 5][0]
    details.loc[alone, "status"] = "prior"  # a run of this model alone: its abstention, not a lost video
    details.to_csv(tmp_path / "submission_details.csv", index=False)
    frame_pt, seq_pt = copies(tmp_path, "frame", "seq")
    fitted = calibrate.stack([(tmp_path / "cv", "frame", frame_pt), (tmp_path / "submission_details.csv", "seq", seq_pt)],
                             root, tmp_path / "labels.csv")
    frame, seq = fitted.members
    assert fitted.report["videos"] == 119 and seq.strategy is None
    # abstaining says fake (odds 6:1 against 0.6:1 overall); its scores, of std 2 on 80 videos, say nothing
    assert seq.abstained > 1.0 and abs(seq.logit) < 0.25
    p = 0.8
    assert fitted({"frame": p}) == pytest.approx(expit(fitted.intercept + frame.logit * logit(p) + seq.abstained))
    assert fitted({"frame": p, "seq": 0.5}) == pytest.approx(expit(fitted.intercept + frame.logit * logit(p)))

    # a video dealt to another fold by one member is refused, by name
    crossval_folder(tmp_path / "cv", {"frame": good}, labels, np.where(np.arange(120) == 3, (folds + 1) % 5, folds))
    with pytest.raises(calibrate.CalibrationError, match=r"video v003: its fold differs between members"):
        calibrate.stack([(tmp_path / "cv", "frame", frame_pt), (tmp_path / "submission_details.csv", "seq", seq_pt)],
                        root, tmp_path / "labels.csv")


@pytest.fixture
def stacked(tmp_path):
    """A stacking file beside two frame checkpoints (copies of the demo), with hand-set coefficients."""
    paths = copies(tmp_path, "a", "b")
    members = [{"name": p.stem, "checkpoint": p.name, "sha256": file_digest(p), "logit": 0.7, "abstained": -0.2,
                "strategy": "confident"} for p in paths]
    (tmp_path / "stacking.json").write_text(json.dumps({"members": members, "intercept": 0.1, "report": {}}))
    return tmp_path / "stacking.json", paths


def test_a_missing_or_retrained_member_is_refused_naming_it_and_the_file(stacked, monkeypatch, caplog):
    path, (a, b) = stacked
    ensemble = Ensemble.load([a, b], device="meta", stacking=path)
    assert ensemble.combine({"a": 0.9, "b": 0.2}) == pytest.approx(expit(0.1 + 0.7 * (logit(0.9) + logit(0.2))))
    assert ensemble.stacking_digest == file_digest(path)
    with pytest.raises(StackingError, match=rf"^{path}: member 'b' is not among the models given \(\['a'\]\)"):
        Ensemble.load([a], device="meta", stacking=path)
    amend_checkpoint(b, calibration=Calibration(3.0).to_dict())  # recalibrated: another file
    with pytest.raises(StackingError, match=rf"^{path}: member 'b': its checkpoint's sha256 is .* the stack was fitted on"):
        Ensemble.load([a, b], device="meta", stacking=path)
    b.unlink()
    with pytest.raises(StackingError, match=rf"^{path}: member 'b': its checkpoint {b} is missing"):
        inputs.resolve_models(None, path)
    with caplog.at_level(logging.ERROR):
        assert predict.main(["--stacking", str(path), "--videos", str(path.parent)]) == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == \
        [f"{path}: member 'b': its checkpoint {b} is missing"]


def test_the_default_rule_and_the_bundle_apply_the_stacking_file(stacked, monkeypatch, tmp_path):
    path, (a, b) = stacked
    monkeypatch.setattr(inputs, "STACKING", tmp_path / "absent.json")
    assert inputs.resolve_models(None, None) == (inputs.default_weights(), None)  # no file: every frame model, averaged
    monkeypatch.setattr(inputs, "STACKING", path)
    assert inputs.resolve_models(None, None) == ([a, b], path)  # its members, from beside it
    assert inputs.resolve_models([a], None) == ([a], None)  # --weights alone: averaged
    code = tmp_path / "code"
    bundle.copy_code([a, b], path, code)
    assert json.loads((code / "weights" / "stacking.json").read_text()) == json.loads(path.read_text())
    bad = bundle.BundleConfig(tmp_path / "bundle", weights=[a], stacking=path)
    with pytest.raises(bundle.BundleError, match=rf"{path}: member 'b' is not among the models given"):
        bundle.build(bad)  # refused before anything is resolved or downloaded


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(weights=1), r"unknown key\(s\) \['weights'\]"),
    (lambda s: s["members"][0].update(sha256="abc"), r"member 'a': sha256 must be 64 hex digits"),
    (lambda s: s["members"][1].update(name="a"), r"distinct names"),
    (lambda s: s["members"][0].update(score="raw"), r"member 'a': score must be 'calibrated'"),
    (lambda s: s["members"][0].pop("logit"), r"missing 1 required positional argument: 'logit'"),
    (lambda s: s.update(intercept=None), r"intercept must be a finite number"),
])
def test_a_bad_stacking_file_is_one_error_naming_it(stacked, change, message):
    path, _ = stacked
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))
    with pytest.raises(StackingError, match=rf"^{path}: .*{message}"):
        Stacking.load(path)
    path.write_text("{")
    with pytest.raises(StackingError, match=rf"^{path}: not a readable stacking file"):
        Stacking.load(path)


def test_the_report_breaks_the_scores_down_by_source(shared_like, tmp_path):
    root, labels, good, noise, folds = shared_like
    listed = pd.read_csv(tmp_path / "labels.csv")
    listed["dataset"] = np.where(np.arange(120) < 40, "A", "B")
    listed["method"] = np.where(listed.label == 1, np.where(np.arange(120) % 3 == 0, "swap", "reenact"), "")
    listed.to_csv(tmp_path / "labels.csv", index=False)
    crossval_folder(tmp_path / "cv", {"frame": good, "other": noise}, labels, folds)
    frame_pt, other_pt = copies(tmp_path, "frame", "other")
    fitted = calibrate.stack([(tmp_path / "cv", "frame", frame_pt), (tmp_path / "cv", "other", other_pt)],
                             root, tmp_path / "labels.csv", resamples=100)
    rows = pd.DataFrame(fitted.report["by_source"]).set_index(["score", "group"])
    assert set(rows.index.get_level_values("score")) == {"frame", "other", "mean", "stack"}
    reals = int((labels == 0).sum())
    for score in ("frame", "stack"):
        assert rows.loc[(score, "dataset A"), "videos"] == 40 and rows.loc[(score, "dataset B"), "videos"] == 80
        for dataset in "AB":
            fakes = int(((listed.dataset == dataset) & (listed.method == "swap")).sum())
            assert rows.loc[(score, f"{dataset} swap vs all reals"), "videos"] == reals + fakes
    assert rows.loc[("frame", "dataset B"), "auc"] > rows.loc[("other", "dataset B"), "auc"] + 0.2  # informative vs noise
    assert (rows.auc_lo <= rows.auc).all() and (rows.auc <= rows.auc_hi).all()



def test_a_sequence_models_crossval_member_abstains_on_the_videos_without_a_sequence(shared_like, tmp_path):
    """A landmark model's out-of-fold blocks: its video score is the kernel's rule for blocks (the sigmoid of
    their mean logit), and a listed video with no block is an abstention, not a video left out."""
    root, labels, good, noise, folds = shared_like
    crossval_folder(tmp_path / "cv", {"frame": good}, labels, folds)
    has_blocks = np.arange(120) % 4 != 0  # the others have no landmark sequence: absent from its crops.csv
    rows = [{"config": "seq", "checkpoint": "last", "fold": folds[v], "video": f"v{v:03d}", "frame": start,
             "track": 0, "label": labels[v], "prob": expit(logit(noise[v]) + shift)}
            for v in np.flatnonzero(has_blocks) for start, shift in ((0, -1.0), (30, 1.0))]
    (tmp_path / "seq_cv").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "seq_cv" / "crops.csv", index=False)
    frame_pt, = copies(tmp_path, "frame")
    seq_pt = shutil.copy(LRNET_WEIGHTS, tmp_path / "seq.pt")
    member = calibrate.member_scores(tmp_path / "seq_cv", "seq", seq_pt, root, tmp_path / "labels.csv")[0]
    assert len(member) == 120 and member.prob.isna().sum() == 30
    calibrated = Calibration.from_dict(read_checkpoint(seq_pt)["calibration"])
    np.testing.assert_allclose(member.prob.dropna(), calibrated(noise[has_blocks]), rtol=1e-6)  # mean logit: the video's
    fitted = calibrate.stack([(tmp_path / "cv", "frame", frame_pt), (tmp_path / "seq_cv", "seq", seq_pt)],
                             root, tmp_path / "labels.csv", resamples=10)
    assert fitted.report["videos"] == 120 and fitted.members[1].strategy is None


def test_the_gain_over_the_first_member_is_paired_and_signed(tmp_path):
    """An informative second member makes the mean better than a weak first member alone: a positive gain
    whose paired interval excludes 0; against itself, every draw's gain is exactly 0."""
    labels, good, noise = planted(400, seed=4)
    weak = expit(0.3 * logit(good) + np.random.default_rng(5).normal(0, 1, 400))
    gains = paired_intervals(labels, (weak + good) / 2, weak, resamples=200)
    assert gains["auc_gain_lo"] > 0 and gains["logloss_gain_lo"] > 0
    assert gains["auc_gain_lo"] <= gains["auc_gain"] <= gains["auc_gain_hi"]
    same = paired_intervals(labels, weak, weak, resamples=50)
    assert all(value == 0 for value in same.values())
    crossval_folder(tmp_path / "cv", {"weak": weak, "good": good}, labels, np.arange(400) % 4)
    members = [(tmp_path / "cv", name, path) for name, path in zip(("weak", "good"), copies(tmp_path, "weak", "good"))]
    report = calibrate.stack(members, resamples=50).report
    assert report["gain_over_first"]["member"] == "weak" and report["gain_over_first"]["stack"]["logloss_gain"] > 0
