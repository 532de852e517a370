"""Submission tools: validate, merge and score, against sklearn as the oracle."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from preprocessing.image import IMAGE_EXTENSIONS
from preprocessing.video import VIDEO_EXTENSIONS
from submission import io, merge, score, validate


def write(path: Path, rows) -> Path:
    pd.DataFrame(rows, columns=["filename", "label"]).to_csv(path, index=False)
    return path


def test_video_rule_matches_the_kernels():
    assert io.VIDEO_EXTENSIONS == VIDEO_EXTENSIONS
    assert io.IMAGE_EXTENSIONS == IMAGE_EXTENSIONS


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("a.mp4", 0.2), ("b.mp4", 0.7)], None),
        ([("a.mp4", 0.2)], "1 video(s) missing, e.g. b.mp4"),
        ([("a.mp4", 0.2), ("b.mp4", 0.7), ("a.mp4", 0.3)], "1 duplicated filename(s), e.g. a.mp4"),
        ([("a.mp4", 0.2), ("b.mp4", None)], "1 label(s) missing or not numbers, e.g. b.mp4"),
        ([("a.mp4", 1.2), ("b.mp4", 0.7)], "1 label(s) outside [0, 1]"),
        ([("a.mp4", 0.2), ("b.mp4", 0.7), ("c.mp4", 0.5)], "1 row(s) for no video in the folder, e.g. c.mp4"),
    ],
)
def test_validate(tmp_path, capsys, rows, message):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "notes.txt"):
        (videos / name).write_bytes(b"")
    path = write(tmp_path / "s.csv", rows)
    code = validate.main([str(path), "--videos", str(videos)])
    err = capsys.readouterr().err
    assert (code, message is None or message in err) == (0 if message is None else 1, True), err


def test_validate_rejects_a_wrong_header(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("name,prob\na.mp4,0.5\n")
    with pytest.raises(io.SubmissionError, match=r"columns are \['name', 'prob'\]"):
        io.read_submission(path)


@pytest.mark.parametrize("label, problem", [(float("nan"), "1 label(s) missing or not numbers, e.g. b.mp4"),
                                            (float("inf"), "1 label(s) outside [0, 1]")])
def test_a_submission_with_a_nan_or_infinite_label_is_never_written(tmp_path, label, problem):
    path = tmp_path / "submission.csv"
    io.write_submission(path, pd.DataFrame({"filename": ["a.mp4", "b.mp4"], "label": [0.2, 0.7]}))
    with pytest.raises(io.SubmissionError, match=rf"submission.csv: not written: {re.escape(problem)}"):
        io.write_submission(path, pd.DataFrame({"filename": ["a.mp4", "b.mp4"], "label": [0.2, label]}))
    assert io.read_submission(path)["label"].tolist() == [0.2, 0.7]  # the earlier file stands


def test_merge_joins_shards_and_refuses_duplicates_and_gaps(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (videos / name).write_bytes(b"")
    first = write(tmp_path / "0.csv", [("c.mp4", 0.9), ("a.mp4", 0.1)])
    second = write(tmp_path / "1.csv", [("b.mp4", 0.4)])
    out = tmp_path / "merged.csv"
    assert merge.main([str(first), str(second), "--out", str(out), "--videos", str(videos)]) == 0
    assert pd.read_csv(out)["filename"].tolist() == ["a.mp4", "b.mp4", "c.mp4"]
    with pytest.raises(io.SubmissionError, match="duplicated filename"):
        merge.merge([first, second, write(tmp_path / "2.csv", [("a.mp4", 0.3)])])
    with pytest.raises(io.SubmissionError, match="missing, e.g. b.mp4"):
        merge.merge([first], io.videos_in(videos))


def test_score_reproduces_sklearn_on_the_shared_labels(labels, tmp_path, capsys):
    clips = labels[labels["kind"] == "video"].reset_index(drop=True)
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.02, 0.98, len(clips))
    path = write(tmp_path / "s.csv", list(zip(clips["path"], probs)))
    labels_csv = tmp_path / "labels.csv"
    clips.to_csv(labels_csv, index=False)

    matched = score.match(io.read_submission(path), score.read_labels(labels_csv))
    table = score.score(matched).set_index("group")
    y = (clips["label"] == "FAKE").astype(int)
    assert table.loc["all", "log_loss"] == pytest.approx(log_loss(y, probs), abs=1e-6)  # 6 decimals in the CSV
    assert table.loc["all", "auc"] == roc_auc_score(y, np.round(probs, 6))
    assert table.loc["all", "baseline_log_loss"] == pytest.approx(np.log(2))
    part = clips["method"] == "Deepfakes"
    assert table.loc["method=Deepfakes", "videos"] == part.sum()
    assert table.loc["method=Deepfakes", "log_loss"] == pytest.approx(log_loss(y[part], probs[part], labels=[0, 1]), abs=1e-6)

    assert score.main(["--submission", str(path), "--labels", str(labels_csv), "--plots", str(tmp_path / "plots")]) == 0
    assert "log_loss" in capsys.readouterr().out
    for name in ("s_roc.png", "s_reliability.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 5000


def test_score_matches_names_by_path_suffix_and_refuses_ambiguity(labels, data_dir, tmp_path):
    table = score.read_labels(data_dir / "dfdc" / "train_sample_videos" / "metadata.json")
    assert len(table) == 400 and set(table["label"]) == {0, 1}
    sub = pd.DataFrame({"filename": ["Deepfakes/c40/videos/183_253.mp4"], "label": [0.7]})
    shared = score.read_labels(data_dir / "labels.csv")
    assert score.match(sub, shared)["y"].tolist() == [1]
    with pytest.raises(io.SubmissionError, match="183_253.mp4 matches 4 labelled files"):
        score.match(pd.DataFrame({"filename": ["183_253.mp4"], "label": [0.7]}), shared)
