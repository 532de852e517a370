"""Training on real face crops with a tiny timm encoder: loss, metrics, overfitting, resume, DDP."""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss, roc_auc_score
from torch.utils.data import Dataset

from models.checkpoint import load_model, read_checkpoint
from models.metrics import label_metrics
from models.precision import Precision
from models.zoo import ConfigError, ModelConfig, build_model, default_spec, to_batch
from training import distributed
from training import train as train_module
from training.dataset import LANDMARK_COLUMNS, read_crop
from training.engine import balanced_bce, train_one_epoch, video_metrics
from training.config import RunConfig, TrainConfig, load_config
from training.freeze import freeze_early
from training.train import _seed, fit, main, make_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ModelConfig("mobilenetv3_small_050", 64, dropout=0.2)  # dropout: resume must reproduce the RNG too


class FaceCrops(Dataset):
    """Real face crops (PNG) of the shared data, labelled by their folder, preprocessed as validation is.

    The video id is the file name without its frame suffix (``DF__000_003__025`` -> ``DF__000_003``).
    """

    def __init__(self, files, config: ModelConfig = TINY):
        self.files = [Path(f) for f in files]
        crops = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in self.files]
        self.images = to_batch(crops, config)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        f = self.files[i]
        return {"image": self.images[i], "target": float(f.parent.name == "FAKE"),
                "video": f.stem.rsplit("__" if "__" in f.stem else "-", 1)[0]}


def face_files(data_dir: Path, n_per_class: int) -> list[Path]:
    """``n_per_class`` real and fake FF++ and DFDC face PNGs, in a fixed order."""
    files = []
    for label in ("REAL", "FAKE"):
        found = sorted((data_dir / "face_images").glob(f"*/{label}/*.png"))
        files += found[:: max(1, len(found) // n_per_class)][:n_per_class]
    return files


def prepare_faces(data_dir: Path, out: Path, n_per_class: int) -> Path:
    """A prepared folder (the README's contract) of ``n_per_class`` real and fake single-face PNGs of
    different people, one video each, alternating between folds 0 and 1; no landmarks, no masks."""
    videos, crops = [], []
    for i, file in enumerate(face_files(data_dir, n_per_class)):
        video, label, fold = f"{file.parent.parent.name}/{file.stem}", int(file.parent.name == "FAKE"), i % 2
        crop = f"crops/{video}/00000_0.png"
        (out / crop).parent.mkdir(parents=True)
        shutil.copy(file, out / crop)
        videos.append({"video": video, "path": str(file), "label": label, "original": "", "dataset": "faces",
                       "method": "", "group": video, "fold": fold, "frame_count": 1, "width": 0, "height": 0,
                       "status": "ok", "boxes_from": "self"})
        crops.append({"video": video, "crop": crop, "mask": "", "real_crop": "", "frame": 0, "track": 0,
                      "label": label, "group": video, "fold": fold, **{c: "" for c in LANDMARK_COLUMNS}})
    pd.DataFrame(videos).to_csv(out / "videos.csv", index=False)
    pd.DataFrame(crops).to_csv(out / "crops.csv", index=False)
    return out


@pytest.fixture(scope="module")
def faces_prepared(data_dir, tmp_path_factory) -> Path:
    return prepare_faces(data_dir, tmp_path_factory.mktemp("faces_prepared"), 12)


def tiny_train_config(**changes) -> TrainConfig:
    values = {"epochs": 3, "batch_size": 4, "iterations": 3, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0,
              "schedule": "poly", "precision": "fp32", "workers": 0, "seed": 3}
    return TrainConfig(**{**values, **changes})


# --- the loss and the metrics ------------------------------------------------------------------


@pytest.mark.parametrize("logits, targets", [
    ([2.0, -1.0, 0.5, 3.0, -2.0], [1.0, 0.0, 1.0, 0.0, 0.0]),
    ([0.3, -0.7, 1.5], [0.99, 0.01, 0.7]),  # clipped and mixup targets: > 0.5 is the fake side
])
def test_balanced_bce_is_the_mean_of_the_fake_and_real_losses(logits, targets):
    logits, targets = torch.tensor(logits), torch.tensor(targets)
    each = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    fake = targets > 0.5
    expected = (each[fake].mean() + each[~fake].mean()) / 2
    assert balanced_bce(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    # Each class weighs half whatever the mix: repeating the fakes changes nothing.
    more_fakes = balanced_bce(torch.cat([logits, logits[fake]]), torch.cat([targets, targets[fake]]))
    assert more_fakes.item() == pytest.approx(expected.item(), rel=1e-6)


def test_balanced_bce_of_a_one_class_batch_is_plain_bce():
    logits, targets = torch.tensor([0.5, -1.0, 2.0]), torch.zeros(3)
    plain = F.binary_cross_entropy_with_logits(logits, targets)
    assert balanced_bce(logits, targets).item() == pytest.approx(plain.item())


def test_video_metrics_average_crops_per_video_and_match_sklearn():
    videos = ["a", "a", "b", "c", "c", "c", "d"]
    targets = [0, 0, 0, 1, 1, 1, 0.99]  # d: a clipped fake target
    probs = [0.2, 0.4, 0.1, 0.9, 0.6, 0.3, 0.8]
    metrics, table = video_metrics(videos, targets, probs)
    assert table.video.tolist() == ["a", "b", "c", "d"]
    assert table.crops.tolist() == [2, 1, 3, 1]
    assert table.label.tolist() == [0, 0, 1, 1]
    video_probs = np.array([0.3, 0.1, 0.6, 0.8])
    assert table.prob.to_numpy() == pytest.approx(video_probs)
    real = -np.mean(np.log(1 - video_probs[:2]))
    fake = -np.mean(np.log(video_probs[2:]))
    assert metrics["logloss_real"] == pytest.approx(real)
    assert metrics["logloss_fake"] == pytest.approx(fake)
    assert metrics["logloss_fake"] == pytest.approx(log_loss([1, 1], video_probs[2:], labels=[0, 1]))
    assert metrics["logloss"] == pytest.approx((real + fake) / 2)
    assert metrics["auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1], video_probs)) and metrics["videos"] == 4


@pytest.mark.parametrize("seed", range(5))
def test_label_metrics_equal_sklearns_with_ties_and_certain_answers(seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[0, 1, rng.integers(0, 2, 40)]
    probs = np.r_[0.0, 1.0, np.round(rng.random(40), 1)]  # certain answers, many ties
    metrics = label_metrics(labels, probs)
    real, fake = labels == 0, labels == 1
    assert metrics["logloss_real"] == pytest.approx(log_loss(labels[real], probs[real], labels=[0, 1]))
    assert metrics["logloss_fake"] == pytest.approx(log_loss(labels[fake], probs[fake], labels=[0, 1]))
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)


def test_video_metrics_of_one_class_leave_the_other_and_auc_undefined():
    metrics, _ = video_metrics(["a", "b"], [0, 0], [0.2, 0.4])
    assert metrics["logloss"] == metrics["logloss_real"] == pytest.approx(-np.mean(np.log([0.8, 0.6])))
    assert math.isnan(metrics["logloss_fake"]) and math.isnan(metrics["auc"])
    with pytest.raises(ValueError, match="no validation crops"):
        video_metrics([], [], [])


# --- configs and precision ---------------------------------------------------------------------


@pytest.mark.parametrize("name, device, expected", [
    ("auto", "cpu", "fp32"), ("fp32", "cpu", "fp32"), ("bf16", "cpu", "bf16"),
])
def test_precision_resolves_per_device(name, device, expected):
    assert Precision.resolve(name, device).name == expected


@pytest.mark.parametrize("name, message", [("fp16", "fp16 needs CUDA"), ("fp8", "expected one of")])
def test_impossible_precisions_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        Precision.resolve(name, "cpu")


@pytest.mark.parametrize("changes, message", [
    ({"epoch": 3}, r"unknown key\(s\) \['epoch'\]; valid keys are .*'epochs'"),
    ({"optimizer": "adam"}, "optimizer must be one of"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"precision": "half"}, "precision must be one of"),
    ({"batch_size": 0}, "batch_size must be an int > 0"),
    ({"iterations": 2.5}, "iterations must be null or an int > 0"),
    ({"ema_decay": 1.0}, r"ema_decay must be null or in \(0, 1\)"),
    ({"freeze_epochs": 1}, "freeze_epochs and freeze_stages: set both or neither"),
    ({"freeze_epochs": 1, "freeze_stages": -1}, "must be ints >= 0"),
])
def test_train_config_is_strict(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({**tiny_train_config().to_dict(), **changes})


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.json"
    model = {"encoder": "mobilenetv3_small_050", "input_size": 64}
    path.write_text(json.dumps({"model": model, "train": {"epochs": 1}, "extra": 1}))
    with pytest.raises(ConfigError, match=r"bad.json: config: unknown key\(s\) \['extra'\]"):
        load_config(path)
    path.write_text(json.dumps({"model": model, "train": {"epochs": 1}}))
    with pytest.raises(ConfigError, match="bad.json: .*batch_size"):
        load_config(path)
    config = RunConfig(TINY, tiny_train_config())
    path.write_text(json.dumps(config.to_dict()))
    assert load_config(path) == config


# --- the training loop -------------------------------------------------------------------------


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("bf16", True)])
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(data_dir, precision, channels_last):
    crops = FaceCrops(face_files(data_dir, 4))
    batch = {key: [crops[i][key] for i in range(len(crops))] for key in ("image", "target", "video")}
    batch = {"image": torch.stack(batch["image"]), "target": torch.tensor(batch["target"]), "video": batch["video"]}
    torch.manual_seed(0)
    mode = Precision.resolve(precision, "cpu", channels_last)
    model = mode.model(build_model(ModelConfig("mobilenetv3_small_050", 64)))
    model.train()  # batch statistics: the loss then depends on the weights only

    def loss() -> float:
        with torch.no_grad(), mode.autocast():
            return balanced_bce(model(mode.images(batch["image"])), batch["target"]).item()

    before = loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    stats = train_one_epoch(model, [batch], optimizer, scheduler, mode, clip_grad_norm=1.0)
    assert stats["step"] == 1 and stats["images"] == 8
    assert stats["loss"] == pytest.approx(before, rel=0.05)  # the epoch's loss is that of the batch before the step
    assert loss() < before - 0.01


def test_a_few_epochs_overfit_a_handful_of_augmented_crops(data_dir, tmp_path):
    """Proof that the loop, the targets and the augmentation wiring are right: through the full training
    recipe (balancing, clipped targets, cutout, compression, colour, affine...), 8 crops are learnt."""
    # seed 0: with 8 crops the last epoch's noise decides the final loss for some seeds (3 of 4 end below 0.04)
    config = RunConfig(TINY, tiny_train_config(epochs=10, iterations=4, batch_size=8, lr=5e-3, seed=0))
    train_set, val_set = make_datasets(prepare_faces(data_dir, tmp_path / "data", 4), None, config)
    assert train_set.pipeline is not val_set.pipeline and train_set.clip_targets == 0.01
    history = fit(TINY, config.train, train_set, val_set, tmp_path / "run").history
    assert history[-1]["val_logloss"] < 0.2 < history[0]["val_logloss"]
    assert history[-1]["val_auc"] == 1.0
    # One batch holds all 8 crops: each of the 4 steps of an epoch is a new pass, rebalanced and reshuffled.
    assert train_set.epoch == 10 * 4 - 1


def test_schedules_follow_their_formula(data_dir, tmp_path):
    crops = FaceCrops(face_files(data_dir, 4))
    for schedule in ("poly", "cosine"):
        config = tiny_train_config(epochs=3, iterations=2, schedule=schedule, optimizer="sgd", lr=0.01)
        history = fit(TINY, config, crops, crops, tmp_path / schedule).history
        steps = np.arange(3) * 2 / 6  # the fraction of the schedule done when each epoch starts
        expected = 0.01 * ((1 - steps) ** 0.9 if schedule == "poly" else (1 + np.cos(np.pi * steps)) / 2)
        assert [row["lr"] for row in history] == pytest.approx(expected, rel=1e-6)


def test_a_new_run_never_overwrites_an_old_one(data_dir, tmp_path):
    crops = FaceCrops(face_files(data_dir, 2))
    fit(TINY, tiny_train_config(epochs=1, iterations=1), crops, crops, tmp_path)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        fit(TINY, tiny_train_config(epochs=1, iterations=1), crops, crops, tmp_path)
    with pytest.raises(ConfigError, match=r"cannot resume with a different config: train.lr 0.003 -> 0.1"):
        fit(TINY, tiny_train_config(epochs=1, iterations=1, lr=0.1), crops, crops, tmp_path, resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(TINY, tiny_train_config(), crops, crops, tmp_path / "new", resume=True)


# --- resume and DDP (in other processes) -------------------------------------------------------


def _train_in_child(prepared, config_dict, out):
    torch.set_num_threads(1)
    config = RunConfig(TINY, TrainConfig(**config_dict))
    fit(TINY, config.train, *make_datasets(prepared, 0, config), out)


@pytest.mark.usefixtures("cpu_only")  # bit for bit, and forks: the child must not touch CUDA
def test_a_killed_run_resumes_where_it_stopped_and_ends_as_if_never_killed(faces_prepared, tmp_path, monkeypatch):
    """The project's ``CropDataset`` (augmented, two loader workers) in a run killed after an epoch:
    the resumed run trains only the epochs left, and ends with the weights of an unbroken run."""
    config = tiny_train_config(epochs=3, iterations=3, ema_decay=0.9, workers=2)
    train_set, val_set = make_datasets(faces_prepared, 0, RunConfig(TINY, config))
    whole = fit(TINY, config, train_set, val_set, tmp_path / "whole")

    out = tmp_path / "killed"
    child = multiprocessing.get_context("fork").Process(target=_train_in_child,
                                                        args=(faces_prepared, config.to_dict(), out))
    child.start()
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.join()
    killed_after = read_checkpoint(out / "last.pt")["epoch"]
    assert killed_after < config.epochs - 1, "the kill came too late to test anything"

    trained = []  # the epochs the resumed run really trains (a restart from epoch 0 ends alike)
    monkeypatch.setattr(train_module, "train_one_epoch",
                        lambda *args, desc, **kwargs: trained.append(desc) or train_one_epoch(*args, desc=desc, **kwargs))
    resumed = fit(TINY, config, train_set, val_set, out, resume=True)
    assert trained == [f"epoch {e}" for e in range(killed_after + 1, config.epochs)]
    assert [row["epoch"] for row in resumed.history] == list(range(config.epochs))
    assert [row["lr"] for row in resumed.history] == [row["lr"] for row in whole.history]
    assert pd.read_csv(out / "metrics.csv").epoch.tolist() == list(range(config.epochs))
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert read_checkpoint(out / "last.pt")["step"] == config.epochs * config.iterations
    pd.testing.assert_frame_equal(pd.read_csv(out / "epoch_crops.csv"), pd.read_csv(tmp_path / "whole" / "epoch_crops.csv"))


class _Killed(Exception):
    """Stands for a kill after the first epoch."""


def test_a_run_killed_after_an_epochs_scores_keeps_one_row_per_epoch_and_crop_when_resumed(faces_prepared, tmp_path,
                                                                                           monkeypatch):
    """Killed after writing epoch 1's rows of ``epoch_crops.csv`` and before its ``last.pt``: the resumed
    run repeats epoch 1 and its rows replace the killed run's, with epoch 0's kept as they were."""
    config = tiny_train_config(epochs=2, iterations=1)
    train_set, val_set = make_datasets(faces_prepared, 0, RunConfig(TINY, config))
    save = train_module.save_checkpoint

    def killed_at_epoch_1(path, model, **extra):
        if Path(path).name == "last.pt" and extra["epoch"] == 1:
            raise _Killed
        save(path, model, **extra)

    monkeypatch.setattr(train_module, "save_checkpoint", killed_at_epoch_1)
    with pytest.raises(_Killed):
        fit(TINY, config, train_set, val_set, tmp_path)
    killed = pd.read_csv(tmp_path / "epoch_crops.csv")
    assert killed.epoch.tolist() == [0] * len(val_set) + [1] * len(val_set)
    killed.loc[killed.epoch == 1, "prob"] = -1.0  # marks the killed run's rows of the epoch to repeat
    killed.to_csv(tmp_path / "epoch_crops.csv", index=False)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    fit(TINY, config, train_set, val_set, tmp_path, resume=True)
    resumed = pd.read_csv(tmp_path / "epoch_crops.csv")
    assert resumed.columns.tolist() == ["epoch", "video", "frame", "track", "label", "prob"]
    assert (resumed.groupby(["epoch", "video", "frame", "track"]).size() == 1).all() and len(resumed) == 2 * len(val_set)
    assert resumed.video.tolist() == val_set.table.video.tolist() * 2 and (resumed.label == resumed.video.map(
        val_set.table.set_index("video").label)).all()
    pd.testing.assert_frame_equal(resumed[resumed.epoch == 0], killed[killed.epoch == 0])
    assert (resumed.prob >= 0).all()
    videos = pd.read_csv(tmp_path / "best_videos.csv")  # the best epoch's video scores are its crops' means
    best = resumed[resumed.epoch == read_checkpoint(tmp_path / "best.pt")["epoch"]]
    assert np.allclose(best.groupby("video").prob.mean()[videos.video], videos.prob)


@pytest.mark.usefixtures("cpu_only")
@pytest.mark.parametrize("first, then", [("fp32", "fp16"), ("fp16", "fp32")])
def test_a_run_resumed_where_auto_resolves_otherwise_converts_its_gradient_scaler(data_dir, tmp_path, monkeypatch,
                                                                                  caplog, first, then):
    """``auto`` on the CPU (fp32: a disabled scaler saves an empty state) resumed where it means fp16 (a
    T4, stood in for by fp16 autocast on the CPU), and back: the run continues, says so, and
    ``last.pt`` records what it resolved; never an empty state loaded into an enabled scaler."""
    def auto_means(name):
        dtype = {"fp32": None, "fp16": torch.float16}[name]
        monkeypatch.setattr(Precision, "resolve", classmethod(
            lambda cls, asked, device, channels_last=False: cls(torch.device("cpu"), dtype, channels_last)))

    crops = FaceCrops(face_files(data_dir, 2))
    config = tiny_train_config(epochs=2, iterations=1, precision="auto")
    epochs = []

    def killed_after_one(*args, **kwargs):
        epochs.append(kwargs["desc"])
        if len(epochs) == 2:
            raise _Killed
        return train_one_epoch(*args, **kwargs)

    auto_means(first)
    monkeypatch.setattr(train_module, "train_one_epoch", killed_after_one)
    with pytest.raises(_Killed):
        fit(TINY, config, crops, crops, tmp_path)
    saved = read_checkpoint(tmp_path / "last.pt")
    assert (saved["precision"], bool(saved["scaler"])) == (first, first == "fp16")
    auto_means(then)
    monkeypatch.setattr(train_module, "train_one_epoch", train_one_epoch)
    resumed = fit(TINY, config, crops, crops, tmp_path, resume=True)
    assert [row["epoch"] for row in resumed.history] == [0, 1]
    saved = read_checkpoint(tmp_path / "last.pt")
    assert (saved["precision"], bool(saved["scaler"])) == (then, then == "fp16")
    assert f"trained in {first}; it continues in {then} on cpu" in caplog.text


def _ddp_rank(rank, port, files, config_dict, out):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    torch.set_num_threads(1)
    sync_state, epochs = distributed.sync_state, []

    def observed_sync_state(module):  # keep what this rank holds before rank 0's state is broadcast
        epochs.append({k: v.clone() for k, v in module.state_dict().items()})
        sync_state(module)

    distributed.sync_state = observed_sync_state  # this forked child's module only
    crops = FaceCrops(files)
    run = fit(TINY, TrainConfig(**config_dict), crops, crops, out)
    torch.save({"before_sync": epochs, "after": run.model.state_dict()}, out.parent / f"rank{rank}.pt")


@pytest.mark.usefixtures("cpu_only")  # gloo ranks on the CPU, forked: never two ranks on one GPU
def test_two_gloo_processes_train_data_parallel_to_identical_weights(data_dir, tmp_path):
    """Each rank draws other crops; DDP's averaged gradients keep the parameters equal step after step
    within an epoch (before ``sync_state`` copies rank 0's batch-norm statistics at its end), and
    validation scores every crop exactly once between the two ranks. The stem, frozen in the first
    epoch, learns in the second in step on both ranks (DDP is remade when it thaws)."""
    files = face_files(data_dir, 4)
    config = tiny_train_config(epochs=2, iterations=2, batch_size=2, freeze_epochs=1, freeze_stages=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_ddp_rank, args=(port, files, config.to_dict(), tmp_path / "run"), nprocs=2,
                                          start_method="fork")  # forked: no second import of torch and timm
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    parameters = {name for name, _ in build_model(TINY).named_parameters()}
    for epoch, (zero, one) in enumerate(zip(ranks[0]["before_sync"], ranks[1]["before_sync"], strict=True)):
        for key in parameters:
            assert torch.equal(zero[key], one[key]), f"epoch {epoch}: {key} differs between the ranks before the sync"
        assert any(not torch.equal(zero[k], one[k]) for k in zero if k.endswith("running_mean")), \
            f"epoch {epoch}: the ranks' batch-norm statistics agree: they did not see different crops"
    for key in ranks[0]["after"]:  # parameters and batch-norm statistics alike
        assert torch.equal(ranks[0]["after"][key], ranks[1]["after"][key]), f"{key} differs between the ranks"
    _seed(config.seed, 0, 0)
    initial = build_model(TINY).state_dict()
    assert not torch.equal(ranks[0]["after"]["head.weight"], initial["head.weight"]), "nothing was trained"
    stem = [key for key in parameters if key.startswith(("encoder.conv_stem.", "encoder.bn1."))]
    assert stem and all(torch.equal(ranks[0]["before_sync"][0][k], initial[k]) for k in stem), "the stem learned while frozen"
    assert not all(torch.equal(ranks[0]["before_sync"][1][k], initial[k]) for k in stem), "the stem never thawed"
    saved = read_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["world_size"] == 2 and saved["step"] == 4
    assert all(torch.equal(saved["state_dict"][k], ranks[0]["after"][k]) for k in ranks[0]["after"])
    # Validation gathered each crop once from the two ranks and scored every video.
    videos = pd.read_csv(tmp_path / "run" / "best_videos.csv")
    crops = FaceCrops(files)
    assert sorted(videos["video"]) == sorted({crops[i]["video"] for i in range(len(crops))})
    assert videos["crops"].sum() == len(crops), "a crop was validated twice (or missed)"
    # epoch_crops.csv holds each epoch's crops in the dataset's order, however the ranks shared them
    recorded = pd.read_csv(tmp_path / "run" / "epoch_crops.csv")
    order = [crops[i]["video"] for i in range(len(crops))]
    assert recorded.video.tolist() == order * config.epochs and recorded.epoch.tolist() == sorted([0, 1] * len(crops))


def test_freezing_every_stage_is_refused_naming_the_count():
    with pytest.raises(ConfigError, match="freeze_stages 99: .* at most"):
        freeze_early(build_model(TINY), 99)


# --- the command line --------------------------------------------------------------------------


def write_config(path: Path, **train_changes) -> Path:
    path.write_text(json.dumps(RunConfig(TINY, tiny_train_config(**train_changes)).to_dict()))
    return path


def test_the_cli_trains_a_fold_into_a_checkpoint_the_kernel_reads_alike(faces_prepared, tmp_path):
    config = write_config(tmp_path / "tiny.json", epochs=2, iterations=2)
    out = tmp_path / "run"
    assert main(["--config", str(config), "--data", str(faces_prepared), "--fold", "1", "--out", str(out)]) == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["model"] == TINY.to_dict() and resolved["train"]["epochs"] == 2 and resolved["precision"] == "fp32"
    assert resolved["data"]["fold"] == 1 and resolved["data"]["folder"] == str(faces_prepared.resolve())
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.epoch.tolist() == [0, 1] and (metrics.val_videos == 12).all()
    assert {"lr", "train_loss", "val_logloss", "val_logloss_real", "val_logloss_fake", "val_auc"} <= {*metrics}
    # The best checkpoint, loaded as the kernel loads it and fed the kernel's tensors, scores every
    # validation video as validation did.
    model = load_model(out / "best.pt")
    assert read_checkpoint(out / "best.pt")["crop_spec"] == default_spec(TINY).to_dict()  # its input contract travels
    crops = pd.read_csv(faces_prepared / "crops.csv")
    videos = pd.read_csv(out / "best_videos.csv").set_index("video")
    assert set(videos.index) == set(crops.video[crops.fold == 1])
    for video, rows in crops[crops.fold == 1].groupby("video"):
        with torch.no_grad():
            probs = torch.sigmoid(model(to_batch([read_crop(faces_prepared / c) for c in rows.crop], TINY)))
        assert probs.mean().item() == pytest.approx(videos.loc[video, "prob"], abs=1e-5)
        assert videos.loc[video, "label"] == rows.label.iloc[0]


def test_fold_all_trains_on_every_fold(faces_prepared, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "tiny.json", epochs=1, iterations=1)
    monkeypatch.chdir(tmp_path)  # the default output folder names the fold
    assert main(["--config", str(config), "--data", str(faces_prepared), "--fold", "all"]) == 0
    out = tmp_path / "runs" / "tiny-foldall"
    assert json.loads((out / "config.json").read_text())["data"]["fold"] is None
    crops = pd.read_csv(faces_prepared / "crops.csv")
    assert set(pd.read_csv(out / "best_videos.csv").video) == set(crops.video)  # every fold's videos
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--data", str(faces_prepared), "--fold", "some"])
    assert "--fold: a fold number or 'all', not 'some'" in capsys.readouterr().err


#: Bad command lines, and the error each must log.
CLI_ERRORS = {
    "no data": "crops.csv: missing .*preprocessing.prepare",
    "bad config": "unknown key",
    "nothing to resume": "nothing to resume",
    "empty fold": "no crops for fold 7",
    "corrupt crop": r"^crop file .*00000_0.png: cannot be decoded",  # read in a DataLoader worker
}


@pytest.mark.parametrize("case", CLI_ERRORS)
def test_cli_errors_are_one_clear_line(faces_prepared, tmp_path, caplog, case):
    config = write_config(tmp_path / "tiny.json", epochs=1, iterations=1, workers=1 if case == "corrupt crop" else 0)
    args = {"--config": str(config), "--data": str(faces_prepared), "--fold": "1", "--out": str(tmp_path / "run")}
    extra = []
    if case == "no data":
        args["--data"] = str(tmp_path)
    elif case == "bad config":
        config.write_text(json.dumps({**json.loads(config.read_text()), "optimiser": {}}))
    elif case == "nothing to resume":
        extra = ["--resume"]
    elif case == "empty fold":
        args["--fold"] = "7"
    else:
        data = shutil.copytree(faces_prepared, tmp_path / "data")
        for crop in (data / "crops").rglob("*.png"):
            crop.write_bytes(crop.read_bytes()[:100])
        args["--data"] = str(data)
    assert main([x for pair in args.items() for x in pair] + extra) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and re.search(CLI_ERRORS[case], errors[0]), errors
    assert not (tmp_path / "run" / "last.pt").exists()


def test_set_overrides_replace_keys_last_and_stay_strict():
    """``--set`` replaces a key after the base chain, parses JSON values, reaches nested sections, and
    an unknown or malformed key is refused naming it."""
    path = Path(__file__).resolve().parents[1] / "training" / "configs" / "selfblend" / "both.json"
    base = load_config(path)
    config = load_config(path, ["train.epochs=3", "train.optimizer=sgd", "data.augment.flip=0.25",
                                "model.dropout=0.5"])
    assert (config.train.epochs, config.train.optimizer) == (3, "sgd")
    assert config.data.augment == {**base.data.augment, "flip": 0.25}
    assert config.model.dropout == 0.5
    assert config.data.mix == base.data.mix and config.train.lr == base.train.lr  # the chain's keys survive
    with pytest.raises(ConfigError, match=r"both.json with train.epoch=3: .*unknown key\(s\) \['epoch'\]"):
        load_config(path, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"--set 'epochs=3': expected SECTION.KEY=VALUE"):
        load_config(path, ["epochs=3"])
    with pytest.raises(ConfigError, match=r"'epochs' holds a value"):
        load_config(path, ["train.epochs.x=1"])


def test_set_flag_reaches_the_run(faces_prepared, tmp_path):
    """The CLI's ``--set`` trains with the overridden value and records it beside the run."""
    config, out = write_config(tmp_path / "tiny.json", epochs=3, iterations=1), tmp_path / "run"
    argv = ["--config", str(config), "--data", str(faces_prepared), "--fold", "1", "--out", str(out)]
    assert main(argv + ["--set", "train.epochs=1", "--set", "train.seed=7"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["train"]["epochs"], saved["train"]["seed"]) == (1, 7)
    assert saved["overrides"] == ["train.epochs=1", "train.seed=7"]
    assert len(pd.read_csv(out / "metrics.csv")) == 1
