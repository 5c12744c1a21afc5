"""docs/audioset-slurm.sbatch on a real one-node Slurm (tools/slurm-local): submitted with `sbatch --array` as the
cluster runs it, its merge step with `--dependency=afterok`, and the merged shards equal a one-process run's."""

from pathlib import Path

import pytest
from slurm_cluster import audioset_sbatch_env, jobs, sbatch, slurm, wait_until
from test_cluster_scale import samples

from audioclip.data.audioset.prepare import main
from audioclip.data.audioset.testmedia import write_test_set

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = str(ROOT / "docs" / "audioset-slurm.sbatch")
# the script asks for 8 CPUs and 16 GB a task: this node has 2 CPUs
SMALL = ["--cpus-per-task=1", "--mem=1G"]


@pytest.fixture(scope="module")
def cluster():
    with slurm() as env:
        yield env


def test_sbatch_array_and_dependent_merge_equal_a_one_process_run(cluster, tmp_path: Path) -> None:
    videos, segments = write_test_set(tmp_path / "media", 8)  # clips 2 and 3 are broken on purpose
    env = audioset_sbatch_env(cluster, tmp_path, videos, segments)
    logs = tmp_path / "logs"
    logs.mkdir()
    array = sbatch(env, "--array=0-1", *SMALL, f"--output={logs}/shard-%A_%a.log", SCRIPT, cwd=tmp_path)
    merge = sbatch(
        env, f"--dependency=afterok:{array}", *SMALL, f"--output={logs}/merge-%j.log", SCRIPT, "merge", cwd=tmp_path
    )
    merged = wait_until(env, merge, {"COMPLETED"}, timeout=600)
    log_text = "\n".join(p.read_text() for p in sorted(logs.iterdir()))
    assert merged["JobState"] == "COMPLETED", log_text[-4000:]
    tasks = jobs(env, array)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    assert all(t["JobState"] == "COMPLETED" for t in tasks), tasks
    # the merge started only after both array tasks had ended
    assert merged["StartTime"] >= max(t["EndTime"] for t in tasks)

    one = tmp_path / "one"
    assert main(["all", "--segments", str(segments), "--root", str(one), "--clips", str(videos), "--val-fraction",
                 "0.3", "--workers", "1"]) == 0  # fmt: skip
    for split in ("train", "val"):
        from_cluster = samples(tmp_path / "out" / split)
        assert from_cluster == samples(one / "shards" / split) and from_cluster, split
    assert sorted(p.name for p in (tmp_path / "out" / "stats").iterdir()) == ["0-of-2.json", "1-of-2.json"]
