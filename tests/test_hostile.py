"""Hostile inputs and faults: nothing crashes, every file is accounted for, nothing is lost."""
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.corpus import build_corpus
from models.checkpoint import CheckpointError, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, build_corpus(data_dir, folder)


def run_module(module: str, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def kernel_run(corpus, checkpoint, tmp_path_factory):
    folder, _ = corpus
    out = tmp_path_factory.mktemp("kernel") / "submission.csv"
    result = run_module("kernels.predict", "--videos", folder, "--out", out, "--weights", checkpoint,
                        "--frames", "2", "--workers", "0")
    details = pd.read_csv(out.with_name("submission_details.csv"), keep_default_na=False)
    return result, details.set_index("filename")


@pytest.fixture(scope="module")
def extract_run(corpus, tmp_path_factory):
    folder, _ = corpus
    out = tmp_path_factory.mktemp("faces")
    result = run_module("preprocessing.extract_faces", "--videos", folder, "--out", out, "--frames", "2")
    return result, out


def test_the_kernel_ends_cleanly_with_a_row_per_video(corpus, kernel_run):
    folder, expected = corpus
    result, details = kernel_run
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert sorted(details.index) == sorted(expected)  # notes.txt is no video; the sub-folder is searched


def test_the_corpus_covers_every_case(corpus):
    _, expected = corpus
    assert len(expected) == 22 and sum(status == "prior" for status, _ in expected.values()) == 8


@pytest.mark.parametrize("index", range(22))
def test_each_corpus_entry_gets_its_outcome_and_one_warning(corpus, kernel_run, index):
    _, expected = corpus
    name = sorted(expected)[index]
    status, cause = expected[name]
    result, details = kernel_run
    row = details.loc[name]
    assert row["status"] == status and cause in row["reason"], (name, row.to_dict())
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING") and name in line]
    if status == "prior":
        assert row["label"] == 0.5 and len(warnings) == 1, (name, warnings)
    else:
        assert row["faces"] >= 1 and not warnings, (name, warnings)


def test_extract_faces_skips_bad_files_and_records_them(corpus, extract_run):
    folder, expected = corpus
    result, out = extract_run
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    unreadable = {name for name, (status, cause) in expected.items() if status == "prior" and cause != "no face found"}
    assert {Path(p).relative_to(folder).as_posix() for p in summary["failures"]} == unreadable
    for name in unreadable:
        assert sum(name in line for line in result.stderr.splitlines() if line.startswith("WARNING")) == 1
    for name in set(expected) - unreadable:
        meta = json.loads((out / name / "faces.json").read_text())
        assert (len(meta["faces"]) == 0) == (name == "no-face.mp4"), name
    assert json.loads((out / "8k.avi" / "faces.json").read_text())["scale"] == 0.5  # read shrunk to 3840 px


@pytest.mark.parametrize("call, named", [
    (os.system, "posix.system"),
    (exec, "exec"),
])
def test_a_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch, call, named):
    """Saved as the project saves checkpoints (``torch.save``'s zip), so torch's weights-only loader
    reaches the call itself, not an opcode it does not know, and the project's own message fires."""
    class RunsCode:
        def __reduce__(self):
            return call, ("open('pwned', 'w').close()" if call is exec else "touch pwned",)

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "deepfake-detector", "payload": RunsCode()}, path)
    try:
        with pytest.raises(CheckpointError, match=f"evil.pt: refused: the file holds {named}, code that would run"):
            read_checkpoint(path)
    finally:
        assert not (tmp_path / "pwned").exists()


def test_a_full_disk_fails_clearly_and_keeps_earlier_outputs(data_dir, checkpoint, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((data_dir / "ffpp/original_sequences/youtube/c40/videos/469.mp4").read_bytes())
    out = tmp_path / "out" / "submission.csv"
    args = ["--videos", videos, "--out", out, "--weights", checkpoint, "--frames", "2", "--workers", "0"]
    assert run_module("kernels.predict", *args).returncode == 0
    before = out.read_text()
    (videos / "b.mp4").write_bytes((videos / "a.mp4").read_bytes())  # new work for the next run

    def small_disk():  # files may not grow past 300 bytes, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))

    result = run_module("kernels.predict", *args, preexec_fn=small_disk)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and "cannot write" in errors[0] and "File too large" in errors[0]
    assert out.read_text() == before
    assert not list(out.parent.glob(".*.tmp"))


def _command(name: str, videos: Path, out: Path, checkpoint: Path) -> tuple:
    """``(main, argv)`` of each command, reading ``videos`` and writing under ``out``."""
    from kernels import predict, report
    from preprocessing import extract_faces, prepare

    common = ["--weights", str(checkpoint), "--frames", "2", "--workers", "0"]
    return {"predict": (predict.main, ["--videos", str(videos), "--out", str(out / "submission.csv"), *common]),
            "report": (report.main, ["--videos", str(videos), "--out", str(out), *common]),
            "extract_faces": (extract_faces.main, ["--videos", str(videos), "--out", str(out), "--frames", "2"]),
            "prepare": (prepare.main, ["--dataset", "ffpp", "--root", str(videos), "--out", str(out), "--workers", "0"]),
            }[name]


@pytest.mark.parametrize("command", ["predict", "report", "extract_faces", "prepare"])
@pytest.mark.parametrize("problem", ["missing", "no video"])
def test_a_wrong_path_on_the_command_line_stops_with_one_line_and_exit_2(command, problem, checkpoint, tmp_path, caplog):
    videos = tmp_path / ("does_not_exist" if problem == "missing" else "empty")
    if problem == "no video":  # a dataset layout and a stray file, but nothing that is a video
        (videos / "original_sequences").mkdir(parents=True)
        (videos / "notes.txt").write_text("not a video")
    main, argv = _command(command, videos, tmp_path / "out", checkpoint)
    assert main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{videos}: "), errors
    assert ("no such" if problem == "missing" else "no video") in errors[0]
    assert not (tmp_path / "out").exists()  # nothing written
