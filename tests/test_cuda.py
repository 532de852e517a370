"""The CUDA branches, run on this CPU machine by faking the cards' capabilities (``tests/fakecuda.py``):
the precision policy, the device checks, the ranks' devices, one device for every component and the
detection workers' share of the cards."""
import os
from pathlib import Path

import pytest
import torch

from kernels.api import Scorer, score_videos
from kernels.ensemble import Ensemble, choose_precision
from models.precision import Precision
from plumbing.strict import ConfigError
from models.zoo import ModelConfig, build_model
from plumbing.device import PER_CARD, DeviceError, default_device, worker_devices
from preprocessing import prepare_video
from preprocessing.detect import FaceDetector
from preprocessing.prepare import detection_plan
from preprocessing.prepare_video import PrepareConfig
from tests.conftest import DEMO_CLIPS, DEMO_WEIGHTS
from tests.fakecuda import fake_cuda, hide_cuda
from training import distributed
from training.crossval import scoring_precision

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.mark.parametrize("capability, card, expected, scaled", [
    ((7, 5), "Tesla T4", "fp16", True),           # Kaggle's T4: bf16 only emulated, no cuDNN bf16 convolutions
    ((7, 0), "Tesla V100-SXM2-16GB", "fp16", True),
    ((8, 0), "NVIDIA A100-SXM4-40GB", "bf16", False),
    ((9, 0), "NVIDIA H100 80GB HBM3", "bf16", False),
    ((6, 0), "Tesla P100-PCIE-16GB", "fp32", False),  # no tensor cores (under a torch build for sm_60)
])
def test_auto_resolves_from_the_cards_real_capability_for_training_and_the_kernel(monkeypatch, capability, card,
                                                                                     expected, scaled):
    fake_cuda(monkeypatch, capability, name=card, archs=("sm_60", "sm_70", "sm_75", "sm_80", "sm_90"))
    precision = Precision.resolve("auto", "cuda")
    assert (precision.device.type, precision.name, precision.scaler().is_enabled()) == ("cuda", expected, scaled)
    model = build_model(ModelConfig("mobilenetv3_small_050", 64))
    assert choose_precision(model, "auto", torch.device("cuda")) == expected  # the kernel's policy is the same


@pytest.mark.parametrize("capability, archs, runs", [
    ((6, 0), ("sm_75", "sm_80", "sm_90"), False),  # a P100 under the pinned CUDA 13 wheels
    ((7, 0), ("sm_75", "sm_80", "sm_90"), False),  # a V100 likewise
    ((8, 6), ("sm_75", "sm_80", "sm_90"), True),   # sm_80 machine code runs on every 8.x card
    ((12, 1), ("sm_90", "compute_120"), True),     # PTX is compiled for newer cards at load
])
def test_a_card_this_torch_build_cannot_run_is_refused_in_one_line(monkeypatch, capability, archs, runs):
    fake_cuda(monkeypatch, capability, name="Tesla P100-PCIE-16GB", archs=archs)
    if runs:
        assert default_device() == torch.device("cuda")
        return
    arch = f"sm_{capability[0]}{capability[1]}"
    message = rf"cuda:0 is a Tesla P100-PCIE-16GB \({arch}\), which torch .* cannot run: install .*docs/gpu.md"
    for make in (default_device, lambda: Precision.resolve("auto", "cuda"), lambda: FaceDetector(device="cuda")):
        with pytest.raises(DeviceError, match=message):
            make()


def test_a_device_the_machine_lacks_is_refused(monkeypatch):
    fake_cuda(monkeypatch, count=1)
    with pytest.raises(DeviceError, match=r"cuda:1: this machine has 1 CUDA device\(s\)"):
        Precision.resolve("fp32", "cuda:1")


def test_a_resume_across_precisions_converts_the_gradient_scaler_cleanly(monkeypatch):
    """bf16 (or CPU fp32) run resumed where ``auto`` picks fp16 and back: the empty state a disabled
    scaler saved starts a fresh fp16 scale (loading it into an enabled scaler would raise), and an fp16
    state is dropped when no scaler is needed."""
    fake_cuda(monkeypatch, (7, 5))
    fp16 = Precision.resolve("auto", "cuda")
    saved_by_bf16 = torch.amp.GradScaler("cuda", enabled=False).state_dict()
    assert saved_by_bf16 == {}
    with pytest.raises(RuntimeError):  # what a plain load_state_dict does with it
        torch.amp.GradScaler("cuda").load_state_dict(saved_by_bf16)
    fresh = fp16.scaler(saved_by_bf16)
    assert fresh.is_enabled() and fresh.state_dict()["scale"] == torch.amp.GradScaler("cuda").state_dict()["scale"]
    saved_by_fp16 = {**fresh.state_dict(), "scale": 1024.0, "_growth_tracker": 7}
    assert fp16.scaler(saved_by_fp16).state_dict()["scale"] == 1024.0
    fake_cuda(monkeypatch, (8, 0))
    bf16 = Precision.resolve("auto", "cuda")
    assert bf16.name == "bf16" and not bf16.scaler(saved_by_fp16).is_enabled()


@pytest.mark.parametrize("cards, local_rank, device", [(2, 1, "cuda:1"), (1, 1, None), (1, 0, "cuda:0")])
def test_each_rank_gets_its_own_card_or_one_clear_error(monkeypatch, cards, local_rank, device):
    fake_cuda(monkeypatch, count=cards)
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    if device is None:  # two ranks on one card: the old rule mapped both to cuda:0
        with pytest.raises(ConfigError, match=r"LOCAL_RANK=1 but this machine has 1 CUDA device\(s\).*nproc_per_node"):
            distributed.context()
    else:
        assert distributed.context().device == torch.device(device)


def test_the_apis_device_reaches_face_detection(monkeypatch, data_dir, tmp_path):
    """A notebook asking for the CPU on a machine with a GPU: MTCNN runs there too (no GPU exists here,
    so a detector that went to CUDA would fail), for a Scorer and for an ensemble given to score_videos."""
    fake_cuda(monkeypatch, (8, 0))
    with Scorer([DEMO_WEIGHTS], device="cpu", precision="fp32", frames=2, workers=0) as scorer:
        assert scorer.ensemble.device == torch.device("cpu")
        assert scorer.workers.detector.device == torch.device("cpu")
        assert {p.device.type for p in scorer.workers.detector.mtcnn.parameters()} == {"cpu"}
    ensemble = Ensemble.load([DEMO_WEIGHTS], device="cpu", precision="fp32")
    scores = score_videos(data_dir / DEMO_CLIPS[0], ensemble, tmp_path / "submission.csv", frames=2, workers=0)
    assert scores.videos["status"].tolist() == ["ok"] and len(scores.frames) >= 2


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((8, 0), "bf16"), (None, "fp32")])
def test_crossval_scores_on_the_gpu_in_the_configs_resolved_precision(monkeypatch, capability, expected):
    if capability:
        fake_cuda(monkeypatch, capability)
    else:
        hide_cuda(monkeypatch)
    precision = scoring_precision(CONFIGS / "xception.json")  # precision auto
    assert (precision.device.type, precision.name) == ("cuda" if capability else "cpu", expected)


@pytest.mark.parametrize("cards, workers, device, expected", [
    (1, 16, None, ["cuda:0"] * PER_CARD + ["cpu"] * (16 - PER_CARD)),  # 1 GPU, 16 cores: never 16 contexts on it
    (2, 5, None, ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]),  # every card busy, none idle
    (2, 3, "cuda", ["cuda:0", "cuda:1", "cuda:0"]),
    (2, 3, "cuda:1", ["cuda:1"] * 3),  # a device named with its index holds them all
    (2, 3, "cpu", ["cpu"] * 3),
    (0, 3, None, ["cpu"] * 3),
    (1, 0, None, ["cuda:0"]),  # 0 workers: detection in the calling process
])
def test_detection_workers_share_the_cards_by_the_stated_rule(monkeypatch, cards, workers, device, expected):
    if cards:
        fake_cuda(monkeypatch, count=cards)
    else:
        hide_cuda(monkeypatch)
    assert worker_devices(workers, device) == [torch.device(d) for d in expected]


def test_prepare_on_a_one_gpu_16_core_machine_shares_the_card_by_the_rule(monkeypatch, tmp_path):
    """By default one worker per core: four detect on the card (not sixteen CUDA contexts on it), twelve on
    the CPU; a worker told its device by the plan detects there whatever the config says."""
    fake_cuda(monkeypatch, count=1)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    config = PrepareConfig("dfdc", str(tmp_path), str(tmp_path / "out")).resolved()
    assert (config.workers, config.device) == (16, "cuda")
    assert detection_plan(config) == ["cuda:0"] * PER_CARD + ["cpu"] * (16 - PER_CARD)
    monkeypatch.setattr(prepare_video, "_detectors", {})
    monkeypatch.setattr(prepare_video, "_device", None)
    prepare_video.use_device("cpu")  # what the plan gives the fifth worker
    assert prepare_video._detector(config).device == torch.device("cpu")  # on the (absent) card it would fail
