"""Still images: one-frame inputs to the kernel, the notebook API and face extraction."""
import json
import logging
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kernels import predict, runner
from kernels.api import load_ensemble, score_videos
from preprocessing import extract_faces
from preprocessing.image import find_inputs, read_image, read_input
from preprocessing.video import VideoReadError, read_frames

#: Shared face images, one of each source and label.
IMAGES = ("face_images/dfdc/FAKE/aagfhgtpmv-009-00.png", "face_images/dfdc/REAL/abarnvbtwb-006-00.png",
          "face_images/ffpp/FAKE/FS__000_003__009.png", "face_images/ffpp/REAL/real__000__038.png")


def one_frame_video(rgb: np.ndarray, path: Path) -> Path:
    """``rgb`` as a one-frame FFV1 video: lossless, so it decodes to the very same pixels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 1.0, (rgb.shape[1], rgb.shape[0]))
    assert writer.isOpened(), "OpenCV cannot write FFV1 here"
    writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def truncated_jpeg(source: Path, path: Path) -> Path:
    """``source`` encoded as JPEG and cut in half."""
    encoded = cv2.imencode(".jpg", cv2.imread(str(source)))[1].tobytes()
    path.write_bytes(encoded[: len(encoded) // 2])
    return path


@pytest.fixture(scope="module")
def folder(data_dir, tmp_path_factory) -> Path:
    """The shared images (one as .JPG), a one-frame video of the first, a truncated JPEG, a text file."""
    folder = tmp_path_factory.mktemp("images") / "in"
    for image in IMAGES:
        (folder / Path(image).parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / image, folder / Path(image).parent.name / Path(image).name)
    cv2.imwrite(str(folder / "REAL" / "again.JPG"), cv2.imread(str(data_dir / IMAGES[1])))
    one_frame_video(read_image(data_dir / IMAGES[0]).images[0], folder / "FAKE" / "as_video.mkv")
    truncated_jpeg(data_dir / IMAGES[1], folder / "cut.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def kernel_run(folder, checkpoint):
    """``kernels.predict`` on the folder; returns the detail table and the warning lines logged."""
    out = folder.parent / "out" / "submission.csv"
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    try:
        code = predict.main(["--videos", str(folder), "--out", str(out), "--weights", str(checkpoint),
                             "--workers", "0", "--precision", "fp32", "--frames", "4"])
    finally:
        logging.getLogger().removeHandler(handler)
    assert code == 0
    return pd.read_csv(runner.details_path(out), keep_default_na=False).set_index("filename"), warnings


def test_each_image_is_one_scored_frame(kernel_run):
    details, _ = kernel_run
    images = [f"{Path(i).parent.name}/{Path(i).name}" for i in IMAGES] + ["REAL/again.JPG"]
    assert sorted(details.index) == sorted(images + ["FAKE/as_video.mkv", "cut.jpg"])
    scored = details.loc[images]
    assert (scored["status"] == "ok").all() and (scored["frames_read"] == 1).all()
    assert (scored["faces"] >= 1).all() and (scored["tracks"] == scored["faces"]).all()
    assert scored["label"].nunique() > 1  # the model sees each face, not one constant


def test_an_image_scores_as_its_one_frame_video(kernel_run):
    details, _ = kernel_run
    image, video = details.loc[f"FAKE/{Path(IMAGES[0]).name}"], details.loc["FAKE/as_video.mkv"]
    assert video["status"] == "ok" and video["frames_read"] == 1
    assert video["label"] == image["label"] and video["faces"] == image["faces"]


def test_a_truncated_jpeg_gets_the_prior_and_one_warning(kernel_run, folder):
    details, warnings = kernel_run
    cut = details.loc["cut.jpg"]
    assert (cut["status"], cut["label"]) == ("prior", 0.5)
    assert "not a readable image" in cut["reason"] and "truncated" in cut["reason"]
    assert sum("cut.jpg" in w for w in warnings) == 1, warnings


def test_the_notebook_api_scores_an_image_and_its_video_alike(folder, checkpoint, tmp_path):
    files = [folder / "FAKE" / Path(IMAGES[0]).name, folder / "FAKE" / "as_video.mkv"]
    scores = score_videos(files, load_ensemble([checkpoint], precision="fp32"), tmp_path / "submission.csv", workers=0)
    frames = scores.frames.set_index("filename")
    assert (frames["frame"] == 0).all() and len(frames) == 2 * len(frames.loc[[files[0].name]])
    np.testing.assert_array_equal(frames.loc[[files[0].name], "crop"].iloc[0], frames.loc[[files[1].name], "crop"].iloc[0])
    assert scores.videos["label"].nunique() == 1


def test_extract_faces_crops_images_and_skips_a_truncated_one(folder, tmp_path):
    out = tmp_path / "faces"
    files = [folder / "FAKE" / Path(IMAGES[0]).name, folder / "REAL" / "again.JPG", folder / "cut.jpg"]
    assert extract_faces.main(["--videos", *map(str, files), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["videos"], summary["done"]) == (3, 2) and list(summary["failures"]) == [str(files[2])]
    meta = json.loads((out / Path(IMAGES[0]).name / "faces.json").read_text())
    assert (meta["frames"], meta["frame_count"]) == ([0], 1) and len(meta["faces"]) >= 1
    assert (out / Path(IMAGES[0]).name / meta["faces"][0]["crop"]).is_file()


def test_read_image_matches_the_one_frame_video_and_applies_orientation(data_dir, tmp_path):
    image = read_image(data_dir / IMAGES[0])
    video = read_frames(one_frame_video(image.images[0], tmp_path / "v.mkv"), 32)
    assert (image.indices.tolist(), image.frame_count, image.scale) == (video.indices.tolist(), 1, 1.0)
    np.testing.assert_array_equal(image.images[0], video.images[0])
    np.testing.assert_array_equal(image.images[0], cv2.cvtColor(cv2.imread(str(data_dir / IMAGES[0])), cv2.COLOR_BGR2RGB))

    rotated = Image.fromarray(image.images[0])
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: shown turned 90 degrees clockwise
    rotated.save(tmp_path / "phone.png", exif=exif)
    upright = read_input(tmp_path / "phone.png", 32).images[0]
    np.testing.assert_array_equal(upright, np.rot90(image.images[0], k=-1))

    Image.fromarray(image.images[0]).convert("L").save(tmp_path / "grey.webp", lossless=True)
    assert read_image(tmp_path / "grey.webp").images[0].shape == image.images[0].shape


@pytest.mark.parametrize("content, cause", [(b"", "empty file (0 bytes)"), (b"\x89PNG not really", "not a readable image")])
def test_bad_images_name_the_file_and_the_cause(tmp_path, content, cause):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: {cause}")):
        read_image(path)


def test_find_inputs_takes_videos_and_images_by_ending(tmp_path):
    for name in ("a.mp4", "b.PNG", "sub/c.jpeg", "d.webp", "e.bmp", "f.txt", "g.gif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_inputs(tmp_path)] == ["a.mp4", "b.PNG", "d.webp", "e.bmp", "sub/c.jpeg"]
