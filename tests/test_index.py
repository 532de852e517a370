"""Indexing DFDC, FaceForensics++ and labelled folders: ids, labels, originals, groups, absent files."""
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from preprocessing.index import INDEX_COLUMNS, build_index, index_dfdc, index_ffpp, index_folder
from tests.conftest import link_tree

DFDC_SAMPLE = "dfdc/train_sample_videos"
DFDC_VIDEOS = ("abofeumbvv.mp4", "abqwwspghj.mp4")
PAIR_FAKE = "manipulated_sequences/Deepfakes/c40/videos/183_253.mp4"


def test_dfdc_sample_indexes_the_2_present_videos_and_reports_the_398_absent_once(data_dir, caplog):
    metadata = json.loads((data_dir / DFDC_SAMPLE / "metadata.json").read_text())
    assert len(metadata) == 400
    with caplog.at_level(logging.WARNING, logger="preprocessing.index"):
        index = index_dfdc(data_dir / "dfdc")

    table = index.videos
    assert list(table.columns) == INDEX_COLUMNS
    assert table["video"].tolist() == [f"train_sample_videos/{Path(n).stem}" for n in DFDC_VIDEOS]
    assert table["path"].tolist() == [str((data_dir / DFDC_SAMPLE / n).resolve()) for n in DFDC_VIDEOS]
    assert table["label"].tolist() == [1, 1]
    assert table["original"].tolist() == [f"train_sample_videos/{Path(metadata[n]['original']).stem}"
                                          for n in DFDC_VIDEOS]
    assert set(table["group"]) == {"dfdc:train_sample_videos"}
    expected_absent = {f"train_sample_videos/{Path(n).stem}" for n in metadata} - set(table["video"])
    assert len(expected_absent) == 398 and index.absent == sorted(expected_absent)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "398 of 400" in warnings[0].getMessage()


def write_dfdc_parts(data_dir: Path, root: Path, parts: dict[str, dict[str, dict]]) -> Path:
    """DFDC parts under ``root``: each entry links the named sample video under a new name."""
    for part, entries in parts.items():
        metadata = {}
        for name, entry in entries.items():
            if "source" in entry:
                (root / part).mkdir(parents=True, exist_ok=True)
                (root / part / name).symlink_to(data_dir / DFDC_SAMPLE / entry.pop("source"))
            metadata[name] = {"split": "train", "original": None, **entry}
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / part / "metadata.json").write_text(json.dumps(metadata))
    return root


def test_dfdc_parts_are_groups_and_originals_are_resolved_in_their_part(data_dir, tmp_path):
    root = write_dfdc_parts(data_dir, tmp_path, {
        "dfdc_train_part_0": {"real.mp4": {"label": "REAL", "source": DFDC_VIDEOS[0]},
                              "fake.mp4": {"label": "FAKE", "original": "real.mp4", "source": DFDC_VIDEOS[1]}},
        "dfdc_train_part_1": {"orphan.mp4": {"label": "FAKE", "original": "gone.mp4", "source": DFDC_VIDEOS[0]},
                              "gone.mp4": {"label": "REAL"}},
    })
    table = index_dfdc(root).videos.set_index("video")
    assert table.loc["dfdc_train_part_0/fake", "original"] == "dfdc_train_part_0/real"
    assert table.loc["dfdc_train_part_1/orphan", "original"] == "dfdc_train_part_1/gone"  # kept, original absent
    assert table["label"].to_dict() == {"dfdc_train_part_0/fake": 1, "dfdc_train_part_0/real": 0,
                                        "dfdc_train_part_1/orphan": 1}
    assert table["group"].to_dict() == {"dfdc_train_part_0/fake": "dfdc:dfdc_train_part_0",
                                        "dfdc_train_part_0/real": "dfdc:dfdc_train_part_0",
                                        "dfdc_train_part_1/orphan": "dfdc:dfdc_train_part_1"}


def test_dfdc_bad_label_names_the_file(data_dir, tmp_path):
    root = write_dfdc_parts(data_dir, tmp_path, {"p": {"a.mp4": {"label": "fake", "source": DFDC_VIDEOS[0]}}})
    with pytest.raises(ValueError, match=r"metadata.json: a.mp4 has label 'fake', expected REAL or FAKE"):
        index_dfdc(root)


def test_ffpp_index_agrees_with_labels_csv(data_dir, labels):
    table = index_ffpp(data_dir / "ffpp").videos.set_index("video")
    expected = labels[labels["path"].str.startswith("ffpp/") & (labels["kind"] == "video")]
    assert len(table) == len(expected) == 43
    for row in expected.itertuples():
        video = table.loc[Path(row.path).relative_to("ffpp").with_suffix("").as_posix()]
        assert video["label"] == int(row.label == "FAKE")
        assert video["method"] == row.method
        assert Path(video["original"]).name == Path(row.original).stem if row.original else video["original"] == ""
    fake = table.loc["manipulated_sequences/NeuralTextures/c23/videos/004_982"]
    assert fake["original"] == "original_sequences/youtube/c23/videos/004"


def test_ffpp_groups_join_identity_pairs_and_actors(data_dir):
    table = index_ffpp(data_dir / "ffpp").videos
    group = table.set_index("video")["group"]
    originals = {Path(v).name: g for v, g in group.items() if v.startswith("original_sequences")}
    for video, g in group.items():
        if video.startswith("manipulated_sequences"):
            x, y = Path(video).name.split("_")
            assert g == originals.get(x, g) == originals.get(y, g), video  # X, Y and X_Y together
    assert group["original_sequences/youtube/c40/videos/183"] == group["original_sequences/youtube/c40/videos/253"]
    assert group["manipulated_sequences/Face2Face/c40/videos/253_183"] == \
        group["original_sequences/youtube/c40/videos/183"]
    actors = table[table["video"].str.contains("/actors/")].set_index("video")["group"]
    assert actors["original_sequences/actors/c40/videos/08__podium_speech_happy"] == \
        actors["original_sequences/actors/c40/videos/08__talking_against_wall"]  # one actor, two scenes
    assert actors.nunique() == 5  # actors 01, 06, 07, 08, 09
    # 3 c40 pairs, 4 c23 groups (004, 519, 634, and 750_743 alone: its original is absent), 5 actors
    assert table["group"].nunique() == 3 + 4 + 5


def test_ffpp_reads_deepfakedetection_names_and_skips_mask_videos(data_dir, tmp_path):
    source = data_dir / "ffpp"
    root = link_tree(source, tmp_path, ["original_sequences/actors/c40/videos/01__kitchen_pan.mp4"])
    for name in ("DeepFakeDetection/c40/videos/01_07__kitchen_pan__ABCD1234.mp4",
                 "Deepfakes/masks/videos/183_253.mp4", "Deepfakes/c40/videos/not-a-pair.mp4"):
        (root / "manipulated_sequences" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "manipulated_sequences" / name).symlink_to(source / PAIR_FAKE)
    link_tree(source, root, ["original_sequences/actors/c40/videos/07__talking_against_wall.mp4"])
    table = index_ffpp(root).videos.set_index("video")
    fake = table.loc["manipulated_sequences/DeepFakeDetection/c40/videos/01_07__kitchen_pan__ABCD1234"]
    assert fake["original"] == "original_sequences/actors/c40/videos/01__kitchen_pan"
    assert fake["method"] == "DeepFakeDetection"
    assert table["group"].nunique() == 1  # actor 01's fake with actor 07's face joins both actors
    assert len(table) == 3  # the masks/ video and the unparseable name are left out


def write_labels(root: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_folder_reads_labels_originals_and_groups(data_dir, tmp_path):
    clips = sorted(p.relative_to(data_dir).as_posix() for p in (data_dir / "dfdc_face_crops").rglob("*.mp4"))[:4]
    root = link_tree(data_dir, tmp_path, clips)
    write_labels(root, [
        {"path": clips[0], "label": "REAL", "original": "", "group": "", "notes": "ignored column"},
        {"path": clips[1], "label": "fake", "original": clips[0], "group": "", "notes": ""},
        {"path": clips[2], "label": "1", "original": "", "group": "g", "notes": "", "dataset": "DFDC"},
        {"path": clips[3], "label": "0", "original": "", "group": "g", "notes": "", "dataset": "DFDC"},
        {"path": "missing/video.mp4", "label": "0", "original": "", "group": "", "notes": ""},
    ])
    index = build_index("folder", root)
    table = index.videos.set_index("video")
    ids = [str(Path(c).with_suffix("").as_posix()) for c in clips]
    assert table.loc[ids, "label"].tolist() == [0, 1, 1, 0]
    assert table.loc[ids[1], "original"] == ids[0]
    assert table.loc[ids[0], "group"] == table.loc[ids[1], "group"] != table.loc[ids[2], "group"]
    assert table.loc[ids[2], "group"] == table.loc[ids[3], "group"] == "group:g"
    assert table.loc[ids, "dataset"].tolist() == ["folder", "folder", "DFDC", "DFDC"]  # named where given
    assert index.absent == ["missing/video"]


@pytest.mark.parametrize("rows, message", [
    ([{"path": "a.mp4", "label": "maybe"}], r"labels.csv:2: label 'maybe' is not one of 0, 1, REAL, FAKE"),
    ([{"path": "a.mp4"}], r"missing column\(s\) \['label'\]"),
    ([{"path": "a.txt", "label": "0"}], r"labels.csv:2: 'a.txt' does not end in a video extension"),
    ([{"path": "a.mp4", "label": "0"}, {"path": "a.avi", "label": "1"}], r"share the video id 'a'"),
])
def test_folder_rejects_bad_labels_files(tmp_path, rows, message):
    for name in ("a.mp4", "a.avi"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        index_folder(write_labels(tmp_path, rows))


@pytest.mark.parametrize("dataset, message", [
    ("kinetics", r"unknown dataset 'kinetics'; choose one of dfdc, ffpp, folder"),
    ("dfdc", r"no metadata.json found"),
    ("ffpp", r"neither original_sequences/ nor manipulated_sequences/ found"),
    ("folder", r"labels.csv: no such labels file"),
])
def test_wrong_root_gets_a_clear_error(tmp_path, dataset, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_index(dataset, tmp_path)
