"""AudioSet at cluster scale: skip replacements stay on their rank, resume across worker counts, shard parts + merge.

Clips here are written straight into ``extracted/`` (noise audio, tiny JPEGs) with an extract manifest, so packing,
merging and streaming are tested without decoding videos; ``test_shard_task_runs_every_stage`` runs the real chain.
"""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from litdata import StreamingDataset
from litdata.utilities.env import _DistributedEnv
from PIL import Image

from audioclip.data.audioset import AudioSetDataModule
from audioclip.data.audioset.datamodule import AudioSetStreamingDataset
from audioclip.data.audioset.extract import clip_dir
from audioclip.data.audioset.metadata import DEFAULT_LABELS, NUM_FRAMES, Segment, read_class_labels, select_shard
from audioclip.data.audioset.pack import pack, val_fraction_of
from audioclip.data.audioset.parts import merge
from audioclip.data.audioset.prepare import main
from audioclip.data.audioset.shard import part_name
from audioclip.data.audioset.testmedia import write_test_set

MIDS = [c.mid for c in read_class_labels(DEFAULT_LABELS)]


def ytid_of(i: int) -> str:
    return f"clip{i:07d}"


def fake_clips(root: Path, count: int, labels_of=lambda i: [i % 5], first: int = 0, channels: int = 1) -> list[Segment]:
    """``count`` extracted clips (0.25 s of seeded noise, ten 8x8 JPEGs) and their extract manifest under ``root``."""
    segments = []
    manifest = root / "manifests" / f"extract.fake{first}.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w") as f:
        for i in range(first, first + count):
            ytid = ytid_of(i)
            directory = clip_dir(root, ytid)
            directory.mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(i).integers(-3000, 3000, size=(11_025, channels), dtype=np.int16)
            sf.write(directory / "audio.flac", noise, 44_100, format="FLAC", subtype="PCM_16")
            for k in range(NUM_FRAMES):
                buffer = io.BytesIO()
                Image.new("RGB", (8, 8), (k * 20, i % 256, 0)).save(buffer, format="JPEG")
                (directory / f"{k}.jpg").write_bytes(buffer.getvalue())
            segments.append(Segment(ytid, 0.0, 10.0, tuple(MIDS[c] for c in labels_of(i))))
            f.write(json.dumps({"ytid": ytid, "status": "ok"}) + "\n")
    return segments


def streaming(directory: str | Path, **kwargs) -> AudioSetStreamingDataset:
    options = {"train": False, "channels": 1, "clip_seconds": 0.25, "names": ["x"] * 527, **kwargs}
    return AudioSetStreamingDataset(str(directory), **options)


def as_rank(dataset: StreamingDataset, rank: int, world_size: int = 2) -> StreamingDataset:
    """The dataset as DDP rank ``rank`` of ``world_size`` sees it, simulated in this process."""
    dataset.distributed_env = _DistributedEnv(world_size=world_size, global_rank=rank, num_nodes=1)
    return dataset


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("scale")
    segments = fake_clips(root, 24)
    pack(segments, root, root / "shards", workers=1, chunk_bytes="60kB")  # several chunks
    return {"root": root, "segments": segments, "shards": root / "shards"}


@pytest.mark.faults
@pytest.mark.parametrize("rank", [0, 1])
def test_skip_replacement_stays_within_the_ranks_own_samples(packed: dict, monkeypatch, rank: int) -> None:
    """Under DDP a bad sample is replaced by one of the same rank's samples, never another rank's."""
    own = [item["id"] for item in as_rank(streaming(packed["shards"]), rank)]
    other = {item["id"] for item in as_rank(streaming(packed["shards"]), 1 - rank)}
    assert len(own) == 12 and not set(own) & other
    bad = set(own[::3])
    original = StreamingDataset.__getitem__

    def corrupt(self, index):
        sample = dict(original(self, index))
        if sample["ytid"] in bad:
            sample["audio"] = b"not audio"
        return sample

    monkeypatch.setattr(StreamingDataset, "__getitem__", corrupt)
    items = list(as_rank(streaming(packed["shards"], on_bad_file="skip"), rank))
    replaced = [item for item in items if "skipped" in item]
    assert len(items) == 12 and len(replaced) == len(bad)
    assert {item["id"] for item in items} <= set(own) - bad


def test_training_resumes_with_another_number_of_loader_workers(packed: dict) -> None:
    """LitData >= 0.2.76 resumes elastically: a changed num_workers neither repeats nor loses a sample."""
    options = {"train_dir": str(packed["shards"]), "batch_size": 2, "clip_seconds": 0.25}
    first = AudioSetDataModule(**options, num_workers=1)
    first.setup("fit")
    loader = iter(first.train_dataloader())
    seen = [y for _ in range(3) for y in next(loader)["id"]]
    state = first.state_dict()
    del loader
    resumed = AudioSetDataModule(**options, num_workers=2)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    rest = [y for batch in resumed.train_dataloader() for y in batch["id"]]
    assert len(set(seen + rest)) == len(seen + rest)  # nothing repeated
    # each of the 2 new workers drops its last incomplete batch (drop_last), so at most 2 x (2 - 1) clips are left out
    assert 24 - 2 <= len(seen + rest) <= 24


def test_data_audioset_holds_out_one_percent_unless_told_otherwise() -> None:
    """`make data-audioset` on the user's own list keeps 99 % of the clips for training; the demo a quarter."""
    import subprocess

    repo = Path(__file__).resolve().parents[3]

    def command(*assignments: str) -> str:
        # --no-print-directory: under `make test` MAKELEVEL is set and make would print "Leaving directory" last
        cmd = ["make", "--no-print-directory", "-n", "data-audioset", *assignments]
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    assert "--val-fraction 0.01" in command("AUDIOSET_SEGMENTS=meta/balanced_train_segments.csv")
    assert "--val-fraction 0.05" in command("AUDIOSET_SEGMENTS=meta/x.csv", "AUDIOSET_VAL_FRACTION=0.05")
    assert "--val-fraction 0.25" in command()


def samples(directory: str | Path) -> dict[str, tuple]:
    """Every sample of a LitData directory by YTID: its audio, frames and labels as stored."""
    dataset = StreamingDataset(str(directory))
    out = {}
    for i in range(len(dataset)):
        s = dataset[i]
        out[s["ytid"]] = (bytes(s["audio"]), tuple(bytes(s[f"frame_{k}"]) for k in range(10)), s["labels"].tolist())
    return out


@pytest.fixture(scope="module")
def parts(packed: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 24 clips packed as two shard tasks would, into the parts of one output, then merged."""
    out = tmp_path_factory.mktemp("parts") / "out"
    for shard in ((0, 2), (1, 2)):
        mine = select_shard(packed["segments"], shard)
        pack(mine, packed["root"], out, workers=1, chunk_bytes="60kB", val_fraction=0.2, part=part_name(shard))
    return {"out": out, "merged": merge(out)}


def test_two_shard_parts_merged_hold_the_same_samples_as_one_pack(packed: dict, parts: dict, tmp_path: Path) -> None:
    one = pack(packed["segments"], packed["root"], tmp_path / "one", workers=1, val_fraction=0.2)
    assert parts["merged"]["train"]["parts"] == 2 and parts["merged"]["val"]["parts"] == 2
    for split in ("train", "val"):
        merged = samples(parts["out"] / split)
        assert len(merged) == one["splits"][split]["clips"] == parts["merged"][split]["clips"]
        assert merged == samples(tmp_path / "one" / split), split
        counts = json.loads((parts["out"] / split / "label_counts.json").read_text())
        assert counts == json.loads((tmp_path / "one" / split / "label_counts.json").read_text())


def test_rerun_shard_replaces_only_its_part(packed: dict, parts: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts["out"], out)
    untouched = {p: p.stat().st_mtime_ns for p in (out / "train" / "parts" / "0-of-2").iterdir()}
    more = fake_clips(packed["root"], 10, first=100)  # shard 1 re-runs with clips that arrived late
    shard1 = select_shard(packed["segments"] + more, (1, 2))
    pack(shard1, packed["root"], out, workers=1, chunk_bytes="60kB", val_fraction=0.2, part="1-of-2")
    merged = merge(out)
    assert {p: p.stat().st_mtime_ns for p in (out / "train" / "parts" / "0-of-2").iterdir()} == untouched
    after = samples(out / "train")
    late = select_shard(more, (1, 2))
    assert 0 < len(late) < len(more)
    expected = {s.ytid for s in packed["segments"] + late if val_fraction_of(s.ytid) >= 0.2}
    assert set(after) == expected and merged["train"]["clips"] == len(expected)


def test_merge_names_missing_parts(parts: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts["out"], out)
    shutil.rmtree(out / "train" / "parts" / "1-of-2")
    with pytest.raises(FileNotFoundError, match=r"train: parts 1-of-2 are missing"):
        merge(out)
    assert merge(out, allow_missing=True)["train"]["missing"] == [1]


def test_s3_output_goes_through_fsspec_and_never_makes_a_local_folder(packed: dict, tmp_path: Path, monkeypatch):
    """`--out s3://...` uploads the parts and the merged index to an S3 server (moto's, over HTTP, reached through
    AWS_ENDPOINT_URL); no local folder named `s3:` appears."""
    from s3_server import running_s3

    monkeypatch.chdir(tmp_path)
    with running_s3() as s3:
        s3.create_bucket("bucket")
        for shard in ((0, 2), (1, 2)):
            mine = select_shard(packed["segments"], shard)
            pack(mine, packed["root"], "s3://bucket/as", workers=1, chunk_bytes="60kB", part=part_name(shard))
        assert main(["merge", "--out", "s3://bucket/as"]) == 0
        keys = s3.keys("bucket", "as/")
        assert "as/index.json" in keys and "as/parts/1-of-2/index.json" in keys
        assert not any(p.name.startswith("s3") for d in (tmp_path, packed["root"], Path.cwd()) for p in d.rglob("*"))
        local = tmp_path / "downloaded"
        for key in keys:
            (local / key).parent.mkdir(parents=True, exist_ok=True)
            (local / key).write_bytes(s3.read("bucket", key))
    assert samples(local / "as") == samples(packed["shards"])


def test_shard_task_runs_every_stage_and_leaves_stats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`prepare audioset shard` ingests, extracts and packs one shard on its own; its media are gone afterwards."""
    videos, segments = write_test_set(tmp_path / "media", 4)  # clip 2 has no audio track, clip 3 is truncated
    work, out = tmp_path / "local-disk", tmp_path / "out"
    common = ["--segments", str(segments), "--root", str(work), "--out", str(out), "--workers", "1"]
    assert main(["shard", *common, "--clips", str(videos), "--shard", "0/1"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["ingest"] == {"ok": 4} and stats["extract"] == {"ok": 2, "failed": 2} and stats["packed"] == {"all": 2}
    assert json.loads((out / "stats" / "0-of-1.json").read_text()) == {k: v for k, v in stats.items() if k != "stage"}
    assert {p.name for p in (out / "manifests").iterdir()} == {"sources.0-of-1.jsonl", "extract.0-of-1.jsonl"}
    assert not (work / "0-of-1" / "extracted").exists()
    assert main(["merge", "--out", str(out)]) == 0
    assert len(StreamingDataset(str(out))) == 2
    with pytest.raises(SystemExit) as stop:
        main(["shard", "--segments", str(segments), "--root", str(work), "--shard", "0/1"])
    assert stop.value.code == 2 and "shard needs --out" in capsys.readouterr().err


def test_merged_parts_stream_through_the_remote_cache_path(parts: dict, tmp_path: Path) -> None:
    """Read as from an object store (LitData's `local:` downloader: chunks copied into a small evicting cache), the
    merged index's `parts/i-of-n/chunk-*.bin` names resolve to every sample once."""
    remote = StreamingDataset(
        f"local:{parts['out'] / 'train'}", cache_dir=str(tmp_path / "cache"), max_cache_size="1MB"
    )
    ids = [sample["ytid"] for sample in remote]
    assert sorted(ids) == sorted(samples(parts["out"] / "train"))


def test_slurm_array_tasks_and_merge_run_as_documented(tmp_path: Path) -> None:
    """docs/audioset-slurm.sbatch, run as SLURM would run array tasks 0 and 1 of 2 and then the merge job."""
    import subprocess

    from slurm_cluster import audioset_sbatch_env

    from audioclip.data.audioset.metadata import read_segments, shard_of

    repo = Path(__file__).resolve().parents[3]
    videos, segments = write_test_set(tmp_path / "media", 8)
    good = {s.ytid for i, s in enumerate(read_segments(segments)) if i not in (2, 3)}
    assert {shard_of(y, 2) for y in good} == {0, 1}  # both tasks have clips to pack
    env = {**audioset_sbatch_env(os.environ, tmp_path, videos, segments), "SLURM_CPUS_PER_TASK": "1"}
    script = str(repo / "docs" / "audioset-slurm.sbatch")
    for task in ("0", "1"):
        done = subprocess.run(
            ["bash", script], env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run(["bash", script, "merge"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = {split: set(samples(tmp_path / "out" / split)) for split in ("train", "val")}
    assert merged["train"] | merged["val"] == good and not merged["train"] & merged["val"]
    assert sorted(p.name for p in (tmp_path / "out" / "stats").iterdir()) == ["0-of-2.json", "1-of-2.json"]


def test_ray_distributor_runs_shards_on_a_local_two_worker_ray(tmp_path: Path, capsys) -> None:
    """`prepare audioset shards --distributor ray` on a local Ray with 2 CPUs: every shard once, then the merge;
    a second run skips the shards whose stats exist."""
    ray = pytest.importorskip("ray", reason="the optional extra: pip install -e '.[ray]'")
    videos, segments = write_test_set(tmp_path / "media", 8)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        argv = ["shards", "--segments", str(segments), "--root", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
        argv += ["--clips", str(videos), "--num-shards", "3", "--distributor", "ray", "--workers", "1"]
        assert main(argv) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["done"] == 3 and summary["failed"] == {} and summary["merge"]["all"]["parts"] == 3
        assert len(samples(tmp_path / "out")) == 6
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 3
    finally:
        ray.shutdown()


def test_frames_off_decodes_no_jpeg_and_pretrain_audio_asks_for_it(packed: dict, monkeypatch) -> None:
    """`frames=False` (what `make pretrain-audio` passes) gives batches without `image` and never opens a JPEG."""
    import subprocess

    import audioclip.data.audioset.datamodule as datamodule

    def no_jpeg(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(datamodule.Image, "open", no_jpeg)
    dm = AudioSetDataModule(
        train_dir=str(packed["shards"]), batch_size=4, num_workers=0, clip_seconds=0.25, frames=False
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "image" not in batch and batch["audio"].shape == (4, 1, 11_025) and len(batch["id"]) == 4
    repo = Path(__file__).resolve().parents[3]
    command = subprocess.run(["make", "-n", "pretrain-audio"], cwd=repo, capture_output=True, text=True).stdout
    assert "--data.init_args.frames false" in command


def test_npy_mono_packing_is_what_mono_training_makes_of_stereo(tmp_path: Path) -> None:
    segments = fake_clips(tmp_path, 4, channels=2)
    pack(segments, tmp_path, tmp_path / "flac", workers=1)
    summary = pack(segments, tmp_path, tmp_path / "mono", workers=1, audio_format="npy-mono")
    flac, mono = (streaming(tmp_path / d, channels=1, frames=False) for d in ("flac", "mono"))
    by_id = {flac[i]["id"]: flac[i]["audio"] for i in range(len(flac))}
    for i in range(len(mono)):
        item = mono[i]
        assert item["audio"].shape == (1, 11_025)
        assert (item["audio"] - by_id[item["id"]]).abs().max() <= 0.5
    stereo = pack(segments, tmp_path, tmp_path / "npy", workers=1, audio_format="npy")
    assert stereo["bytes_per_clip"] - summary["bytes_per_clip"] == pytest.approx(11_025 * 2, abs=16)  # one channel


def test_shard_without_a_usable_clip_leaves_an_empty_part(packed: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pack(packed["segments"], packed["root"], out, workers=1, part="0-of-2")
    assert pack([], packed["root"], out, workers=1, part="1-of-2")["clips"] == 0  # every clip of shard 1 failed
    assert merge(out)["all"] == {"parts": 2, "of": 2, "missing": [], "clips": 24}
