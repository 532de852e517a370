"""The Ray engine, embedded (one session for the module, 2 CPUs, on 127.0.0.1): the same outputs as
the local engine, a killed worker retried, the deadline kept, preparation unchanged."""
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from kernels import runner, scoring
from kernels.ensemble import Ensemble
from kernels.ray_engine import replica_device
from plumbing.cluster import ray_session
from plumbing.device import DeviceError
from preprocessing.prepare import PrepareConfig, Task, prepare
from preprocessing.ray_prepare import groups
from submission.io import read_submission, videos_in
from tests.conftest import PREPARED_CLIPS, link_tree
from tests.test_kernel import CLIPS

FRAMES = 2


@pytest.fixture(scope="module")
def embedded():
    """Ray embedded with 2 CPUs for this module, started although a crashed run left a dead cluster
    recorded in /tmp/ray (unless a live session is recorded there, which is left alone)."""
    record = Path("/tmp/ray/ray_current_cluster")
    stale = not record.exists()
    if stale:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("127.0.0.1:1")  # nothing listens on port 1
    try:
        with ray_session(num_cpus=2) as session:
            yield session
    finally:
        if stale:
            record.unlink(missing_ok=True)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ensemble(checkpoint) -> Ensemble:
    return Ensemble.load([checkpoint], precision="fp32")


@pytest.fixture(scope="module")
def folder(data_dir, tmp_path_factory) -> Path:
    """Three real clips and an unreadable .mp4."""
    videos = tmp_path_factory.mktemp("ray") / "videos"
    link_tree(data_dir / "ffpp", videos, [Path(c).relative_to("ffpp") for c in CLIPS])
    (videos / "broken.mp4").write_bytes(b"\x00" * 1000)
    return videos


def named(folder: Path) -> list[tuple[str, Path]]:
    return [(p.relative_to(folder).as_posix(), p) for p in sorted(folder.rglob("*.mp4"))]


@pytest.fixture(scope="module")
def local(folder, ensemble, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The local engine's submission and details on ``folder``."""
    out = tmp_path_factory.mktemp("local") / "submission.csv"
    details = runner.run(named(folder), ensemble, out, scoring.Settings(frames=FRAMES, workers=0))
    return pd.read_csv(out), details


def same_as_local(out: Path, details: pd.DataFrame, local) -> None:
    submission, expected = local
    pd.testing.assert_frame_equal(pd.read_csv(out), submission, check_exact=False, atol=1e-6)
    drop = ["seconds"]
    pd.testing.assert_frame_equal(details.drop(columns=drop), expected.drop(columns=drop), check_exact=False,
                                  atol=1e-6)


def test_embedded_ray_listens_on_loopback_only(embedded):
    assert [node["NodeManagerAddress"] for node in embedded.nodes()] == ["127.0.0.1"]
    assert embedded.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_ray_run_equals_the_local_run(embedded, folder, checkpoint, local, tmp_path, caplog):
    """The driver as ``kernels.predict`` runs it for Ray: the checkpoints described on ``meta``, no
    weights held; the replicas load them on ``--device`` and the log says in what precision."""
    described = Ensemble.load([checkpoint], device="meta", precision="fp32")
    assert {p.device.type for p in described.models[0].parameters()} == {"meta"}
    out = tmp_path / "submission.csv"
    with caplog.at_level(logging.INFO, logger="kernels.ray_engine"):
        details = runner.run(named(folder), described, out,
                             scoring.Settings(frames=FRAMES, engine="ray", detector={"device": "cpu"}))
    assert "1 model replica(s): cpu in ('fp32',)" in caplog.text
    same_as_local(out, details, local)
    assert (details["status"] == "ok").sum() == 3  # the clips were scored, not given the prior
    assert details.set_index("filename").loc["broken.mp4", "reason"].startswith("not a readable video")


@pytest.mark.parametrize("gpus, device, expected", [
    (1, None, "cuda"), (1, "cpu", "cpu"), (2, "cuda:1", "cuda"), (0, None, "cpu"), (0, "cuda", None)])
def test_model_replicas_follow_the_device_flag(gpus, device, expected):
    if expected is None:
        with pytest.raises(DeviceError, match="--device cuda: the Ray cluster has no GPU"):
            replica_device(gpus, device)
    else:
        assert replica_device(gpus, device) == expected


def parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def detection_workers() -> list[int]:
    """Pids of this session's Ray workers running a detection task now (their process title names the
    task; embedded Ray's processes descend from this one)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_detect"):
                ancestor = int(entry.name)
                while ancestor > 1 and ancestor != os.getpid():
                    ancestor = parent(ancestor)
                if ancestor == os.getpid():
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_killed_worker_is_retried_and_every_video_scored_once(embedded, folder, ensemble, local, tmp_path):
    killed, finished = [], threading.Event()

    def kill_the_first_detection_worker() -> None:
        while not killed and not finished.is_set():
            for pid in detection_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_first_detection_worker)
    killer.start()
    out = tmp_path / "submission.csv"
    try:
        details = runner.run(named(folder), ensemble, out, scoring.Settings(frames=FRAMES, engine="ray"))
    finally:
        finished.set()
        killer.join()
    assert killed, "no detection worker was running to be killed"
    filenames = [line.split('"filename": "')[1].split('"')[0]
                 for line in out.with_suffix(".progress.jsonl").read_text().splitlines()[1:]]
    assert sorted(filenames) == [name for name, _ in named(folder)]  # each video once
    same_as_local(out, details, local)


def test_a_deadline_on_ray_returns_on_time_with_a_complete_submission(embedded, data_dir, folder, ensemble, tmp_path):
    videos = link_tree(data_dir, tmp_path / "videos", CLIPS)
    for i in range(20):  # more work than the deadline allows
        (videos / f"copy{i}.mp4").symlink_to(data_dir / CLIPS[0])
    out = tmp_path / "submission.csv"
    deadline, started = 6.0, time.monotonic()
    details = runner.run(named(videos), ensemble, out,
                          scoring.Settings(frames=16, min_frames=4, engine="ray", deadline=deadline), started=started)
    elapsed = time.monotonic() - started
    assert elapsed < deadline + 1.0, f"took {elapsed:.1f} s for a {deadline} s deadline"
    assert len(read_submission(out, videos_in(videos))) == 23
    unreached = details[details["reason"] == "not reached before the deadline"]
    assert len(unreached) >= 1 and (unreached["label"] == 0.5).all()


def test_prepare_on_ray_equals_the_local_preparation(embedded, data_dir, prepared_dir, tmp_path):
    """The tables equal after sorting, the crops and masks byte for byte. Landmarks may differ by one
    step of their rounding (0.01 px): MTCNN's last digit depends on torch's thread count, two in the
    local reference (``workers=0``), one in a Ray task."""
    root = link_tree(data_dir / "ffpp", tmp_path / "ffpp", PREPARED_CLIPS)
    out = tmp_path / "prepared"
    prepare(PrepareConfig("ffpp", str(root), str(out), frames=2, folds=2, engine="ray", workers=2))
    for table in ("videos.csv", "crops.csv"):
        ours, local = (pd.read_csv(folder / table, keep_default_na=False) for folder in (out, prepared_dir))
        if table == "videos.csv":  # absolute paths under each run's root
            ours["path"], local["path"] = (t["path"].map(lambda p: Path(p).relative_to(r).as_posix())
                                           for t, r in ((ours, root), (local, prepared_dir.parent / "ffpp")))
        ours, local = (t.sort_values(["video", "crop"][:1 + (table == "crops.csv")]).reset_index(drop=True)
                       for t in (ours, local))
        pd.testing.assert_frame_equal(ours, local, check_exact=False, atol=0.0101, rtol=0)
        exact = [c for c in ours.columns if not c.startswith("lm")]
        assert ours[exact].to_csv(index=False) == local[exact].to_csv(index=False), table
    crops = sorted(p.relative_to(out) for p in (out / "crops").rglob("*.png"))
    assert crops == sorted(p.relative_to(prepared_dir) for p in (prepared_dir / "crops").rglob("*.png"))
    assert len(crops) > 10
    for crop in crops:
        assert (out / crop).read_bytes() == (prepared_dir / crop).read_bytes(), crop


def test_a_preparation_task_is_an_original_then_its_fakes():
    """Fakes read their original's boxes: they must run after it, in its task; a fake whose original
    was prepared by an earlier run is a task of its own."""
    a, b, alone = Task("a", "a.mp4", ""), Task("b", "b.mp4", ""), Task("x", "x.mp4", "")
    a1, a2, b1, c1 = (Task(f"{o}{i}", f"{o}{i}.mp4", o) for o, i in (("a", 1), ("a", 2), ("b", 1), ("c", 1)))
    assert groups([[a, b, alone], [a1, b1, a2, c1]]) == [[a, a1, a2], [b, b1], [alone], [c1]]
