"""The Kaggle bundle: which wheels it keeps, what it refuses, and a round trip through a fresh environment."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import torchvision

from kernels import bundle, kaggle, predict
from preprocessing.sample import KAGGLE_TEST_VIDEOS
from tests.conftest import DEMO_WEIGHTS

#: Shared clips and an image for the round trip, placed where Kaggle mounts the test videos.
ROUND_TRIP = ("ffpp/original_sequences/youtube/c40/videos/183.mp4",
              "ffpp/manipulated_sequences/Deepfakes/c40/videos/183_253.mp4",
              "face_images/dfdc/FAKE/aagfhgtpmv-009-00.png")
ROUND_TRIP_RUNS = bool(os.environ.get("CI") or os.environ.get("DEEPFAKE_BUNDLE_TEST"))


def item(name: str, version: str, requires: list[str], requested: bool = False) -> dict:
    """One entry of pip's installation report."""
    return {"metadata": {"name": name, "version": version, "requires_dist": requires}, "requested": requested}


def test_skipping_a_package_leaves_out_what_only_it_needs():
    resolved = [
        item("timm", "1.0", ["torch", "torchvision", "PyYAML", "huggingface_hub"], requested=True),
        item("Torch", "2.0", ["nvidia-cublas; platform_system == 'Linux'", "sympy>=1", "typing_extensions"]),
        item("torchvision", "0.1", ["torch", "numpy"]),
        item("nvidia-cublas", "13", []), item("sympy", "1.14", ["mpmath"]), item("mpmath", "1.3", []),
        item("typing-extensions", "4", []), item("numpy", "2", []), item("pyyaml", "6", []),
        item("huggingface-hub", "2", ["typing-extensions", "pytest; extra == 'testing'"]), item("pytest", "9", []),
        item("Pillow", "13", [], requested=True),
    ]
    kept = bundle.keep(resolved, ["torch", "torchvision"])
    # huggingface-hub needs typing-extensions too; numpy only through torchvision; pytest only for an extra
    assert kept == {"huggingface-hub": "2", "pillow": "13", "pyyaml": "6", "timm": "1.0", "typing-extensions": "4"}
    assert "torch" in bundle.keep(resolved, []) and "nvidia-cublas" in bundle.keep(resolved, [])


def test_a_requirement_without_a_binary_wheel_is_refused_by_name(tmp_path, monkeypatch, caplog):
    index = tmp_path / "index"
    index.mkdir()
    (index / "nowheel-0.1.tar.gz").write_bytes(b"an sdist: it would have to be built")
    (tmp_path / "requirements.txt").write_text("nowheel==0.1\n")
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    out = tmp_path / "bundle"
    argv = ["--out", str(out), "--weights", str(DEMO_WEIGHTS), "--requirements", str(tmp_path / "requirements.txt")]
    with caplog.at_level(logging.ERROR):
        assert bundle.main(argv) == 2
    assert "nowheel==0.1: no binary wheel for CPython 3.11 on manylinux x86_64" in caplog.text
    assert not out.exists() and not out.with_name("bundle.partial").exists()


def test_a_missing_checkpoint_is_refused_before_anything_is_resolved(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert bundle.main(["--out", str(tmp_path / "bundle"), "--weights", str(tmp_path / "absent.pt")]) == 2
    assert f"{tmp_path / 'absent.pt'}: no such checkpoint" in caplog.text and not (tmp_path / "bundle").exists()


def test_the_notebook_is_valid_and_runs_the_bundles_kernel():
    notebook = nbformat.read(bundle.BUNDLED / "kernel.ipynb", as_version=4)
    nbformat.validate(notebook)
    source = "".join(cell.source for cell in notebook.cells)
    compile(source, "kernel.ipynb", "exec")
    assert "bundle / 'kernel.py'" in source and "['main']([])" in source


def test_inside_kaggle_the_submission_goes_to_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle, "KAGGLE_INPUT", tmp_path / "absent")
    assert predict.build_parser().parse_args([]).out == Path("submission/submission.csv")
    (tmp_path / "input").mkdir()
    monkeypatch.setattr(kaggle, "KAGGLE_INPUT", tmp_path / "input")
    assert predict.build_parser().parse_args([]).out == Path("submission.csv")


def torch_environment() -> Path:
    """The site-packages of a virtual environment holding only this torch and torchvision (and their own
    dependencies), made once per machine in the user's cache: installing them takes minutes."""
    pins = [f"{m.__name__}=={m.__version__.split('+')[0]}" for m in (torch, torchvision)]
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepfake-pipeline" / "-".join(pins).replace("==", "-")
    site = home / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if not site.is_dir():
        partial = home.with_name(home.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True)
        subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins], check=True)
        partial.rename(home)
    return site


@pytest.mark.skipif(not ROUND_TRIP_RUNS, reason="the bundle round trip builds a bundle and a fresh environment "
                    "(minutes, GBs on first use): it runs under CI, or with DEEPFAKE_BUNDLE_TEST=1")
def test_the_bundle_installs_offline_and_its_kernel_submits_what_the_repository_does(data_dir, checkpoint, tmp_path):
    kaggle_root = tmp_path / "kaggle"
    videos = kaggle_root / "input" / KAGGLE_TEST_VIDEOS.relative_to(kaggle.KAGGLE_INPUT)
    videos.mkdir(parents=True)
    for clip in ROUND_TRIP:
        shutil.copy(data_dir / clip, videos / Path(clip).name)
    built = kaggle_root / "input" / "our-bundle"
    assert bundle.main(["--out", str(built), "--weights", str(checkpoint), "--skip", "torch", "torchvision"]) == 0
    assert "torch" not in (built / "requirements.txt").read_text().split("==")

    fresh = tmp_path / "venv"  # no pip, no setuptools of its own: torch's environment lends them
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    site = fresh / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "torch_environment.pth").write_text(f"{torch_environment()}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, no extra wheel folders: only the bundle's wheels
    flags = ["--frames", "2", "--workers", "0", "--precision", "fp32"]
    working = kaggle_root / "working"
    result = subprocess.run([str(fresh / "bin" / "python"), str(built / "kernel.py"), "--input", str(kaggle_root / "input"),
                             "--working", str(working), *flags], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    repository = tmp_path / "repository" / "submission.csv"
    assert predict.main(["--videos", str(videos), "--out", str(repository), "--weights", str(checkpoint), *flags]) == 0
    submitted, expected = pd.read_csv(working / "submission.csv"), pd.read_csv(repository)
    assert list(submitted["filename"]) == sorted(Path(c).name for c in ROUND_TRIP)
    pd.testing.assert_frame_equal(submitted, expected, check_exact=True)
    assert pd.read_csv(working / "submission_details.csv")["status"].eq("ok").all()
