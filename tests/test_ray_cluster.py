"""The kernel on two simulated Ray nodes on this machine (127.0.0.1): work spread over both, one
removed mid-run, every video still scored once."""
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from kernels import runner, scoring
from kernels.ensemble import Ensemble
from plumbing.cluster import ray_session
from submission.io import read_submission, videos_in
from tests.test_kernel import CLIPS



@pytest.fixture(scope="module")
def cluster():
    """A head and one more node, a CPU each, on 127.0.0.1; this process joined as the driver."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    second = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    with ray_session(cluster.address):
        yield cluster, second
    cluster.shutdown()


def test_work_spreads_over_both_nodes_and_survives_losing_one(cluster, checkpoint, data_dir, tmp_path):
    cluster, second = cluster
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, clip in [(Path(c).name, c) for c in CLIPS] + [(f"copy{i}.mp4", CLIPS[0]) for i in range(3)]:
        (videos / name).symlink_to(data_dir / clip)
    named = [(p.name, p) for p in sorted(videos.iterdir())]
    nodes, removed = [], []

    def remove_the_second_node_once_both_worked(faces, record) -> None:
        nodes.append(record["node"])
        if len(set(nodes)) == 2 and not removed:
            cluster.remove_node(second)
            removed.append(len(nodes))

    out = tmp_path / "submission.csv"
    ensemble = Ensemble.load([checkpoint], precision="fp32")
    details = runner.run(named, ensemble, out, scoring.Settings(frames=2, engine="ray"),
                          on_video=remove_the_second_node_once_both_worked).set_index("filename")
    assert removed and removed[0] < len(named), "the second node was not removed mid-run"
    assert (details["status"] == "ok").all(), details["reason"].to_dict()
    assert len(read_submission(out, videos_in(videos))) == len(named)
    copies = details.loc[[f"copy{i}.mp4" for i in range(3)], "label"]
    assert (copies == details.loc["183.mp4", "label"]).all()  # retried videos score as the others
