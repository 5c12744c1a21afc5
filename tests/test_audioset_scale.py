"""AudioSet at cluster scale: skip replacements stay on their rank, resume across worker counts, shard parts + merge.

Clips here are written straight into ``extracted/`` (noise audio, tiny JPEGs) with an extract manifest, so packing,
merging and streaming are tested without decoding videos; ``test_shard_task_runs_every_stage`` runs the real chain.
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from litdata import StreamingDataset
from litdata.utilities.env import _DistributedEnv
from PIL import Image

from audioclip.data.audioset import AudioSetDataModule
from audioclip.data.audioset.datamodule import AudioSetStreamingDataset
from audioclip.data.audioset.metadata import DEFAULT_LABELS, NUM_FRAMES, Segment, read_class_labels
from audioclip.data.audioset.prepare import clip_dir, pack

MIDS = [c.mid for c in read_class_labels(DEFAULT_LABELS)]


def ytid_of(i: int) -> str:
    return f"clip{i:07d}"


def fake_clips(root: Path, count: int, labels_of=lambda i: [i % 5], first: int = 0) -> list[Segment]:
    """``count`` extracted clips (0.25 s of seeded noise, ten 8x8 JPEGs) and their extract manifest under ``root``."""
    segments = []
    manifest = root / "manifests" / f"extract.fake{first}.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w") as f:
        for i in range(first, first + count):
            ytid = ytid_of(i)
            directory = clip_dir(root, ytid)
            directory.mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(i).integers(-3000, 3000, size=(11_025, 1), dtype=np.int16)
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

    repo = Path(__file__).resolve().parents[1]

    def command(*assignments: str) -> str:
        out = subprocess.run(["make", "-n", "data-audioset", *assignments], cwd=repo, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    assert "--val-fraction 0.01" in command("AUDIOSET_SEGMENTS=meta/balanced_train_segments.csv")
    assert "--val-fraction 0.05" in command("AUDIOSET_SEGMENTS=meta/x.csv", "AUDIOSET_VAL_FRACTION=0.05")
    assert "--val-fraction 0.25" in command()
