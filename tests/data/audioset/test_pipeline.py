"""AudioSet preparation (ingest -> extract -> pack) and the DataModule on real encoded test videos.

The videos are written by ``audioclip.data.audioset.testmedia``: MPEG-4/AAC in MP4 and Matroska, named after real
eval YTIDs; clip 2 has no audio track and clip 3 is truncated. Each frame's colour tells which tenth of its clip it
comes from, so the frame positions can be checked after JPEG compression and CLIP preprocessing.
"""

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from gloo import gloo_group, spawn
from litdata import StreamingDataset
from PIL import Image
from wandb_offline import wandb_run

from audioclip.data.audioset import AudioSetDataModule
from audioclip.data.audioset.datamodule import CENTRAL_FRAME
from audioclip.data.audioset.extract import clip_dir, extract
from audioclip.data.audioset.ingest import ingest
from audioclip.data.audioset.manifests import read_manifest
from audioclip.data.audioset.metadata import DEFAULT_LABELS, label_indices, read_class_labels, read_segments
from audioclip.data.audioset.pack import pack
from audioclip.data.audioset.prepare import main
from audioclip.data.audioset.testmedia import EVAL_ROWS, TONES_HZ, nearest_frame_index, write_test_set

NUM_CLIPS = 8
GOOD = [row.split(",")[0] for i, row in enumerate(EVAL_ROWS[:NUM_CLIPS]) if i not in (2, 3)]
CLIP_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
CLIP_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> dict:
    base = tmp_path_factory.mktemp("audioset")
    videos, _ = write_test_set(base / "media", NUM_CLIPS)
    segments = read_segments(shared_dir / "fixtures" / "meta" / "eval_segments.csv")  # all 20,371 real rows
    root = base / "work"
    counts = {"ingest": ingest(segments, root, videos), "extract": extract(segments, root, workers=2)}
    summary = pack(segments, root, workers=1)
    return {"root": root, "segments": segments, "counts": counts, "summary": summary, "shards": root / "shards"}


def frame_index(image: torch.Tensor) -> int:
    """Which tenth of its clip a CLIP-preprocessed frame shows."""
    rgb = (image * CLIP_STD + CLIP_MEAN).clamp(0, 1).mul(255).mean(dim=(1, 2))
    return nearest_frame_index(rgb.tolist())


def test_manifests_record_successes_and_failures_with_reasons(prepared: dict) -> None:
    assert prepared["counts"]["ingest"] == Counter(ok=NUM_CLIPS, failed=20_371 - NUM_CLIPS)
    assert prepared["counts"]["extract"] == Counter(ok=6, failed=2)
    sources = read_manifest(prepared["root"], "sources")
    assert "no --ZhevVpy1s" not in sources["-0YUDn-1yII"]["reason"] and sources["-0YUDn-1yII"]["status"] == "failed"
    extracted = read_manifest(prepared["root"], "extract")
    assert extracted["--U7joUcTCo"] == {
        "ytid": "--U7joUcTCo",
        "status": "failed",
        "reason": "--U7joUcTCo_0.000.mp4: ValueError: no audio track",
    }
    assert extracted["--i-y1v8Hy8"]["status"] == "failed" and "truncated" in extracted["--i-y1v8Hy8"]["reason"]
    assert sorted(y for y, r in extracted.items() if r["status"] == "ok") == sorted(GOOD)


def test_stages_resume_without_redoing_work(prepared: dict) -> None:
    root, segments = prepared["root"], prepared["segments"]
    before = sorted((root / "manifests").glob("*.jsonl"))
    sizes = [p.stat().st_size for p in before]
    assert ingest(segments, root, root.parent / "media" / "videos") == Counter()
    assert extract(segments, root, workers=1) == Counter()
    assert [p.stat().st_size for p in before] == sizes
    redo = [s for s in segments if s.ytid in ("--U7joUcTCo", "--i-y1v8Hy8")]
    assert extract(redo, root, workers=1, retry_failed=True) == Counter(failed=2)
    assert pack(segments, root, workers=1) == prepared["summary"]  # same clips: the shards are kept


def test_extracted_audio_is_44k1_int16_with_channels_kept(prepared: dict) -> None:
    for i, ytid in enumerate(row.split(",")[0] for row in EVAL_ROWS[:NUM_CLIPS]):
        if ytid not in GOOD:
            continue
        info = sf.info(clip_dir(prepared["root"], ytid) / "audio.flac")
        assert (info.samplerate, info.subtype, info.format) == (44_100, "PCM_16", "FLAC")
        assert info.channels == (1 if i % 4 == 1 else 2)
        assert 1.95 < info.duration < 2.1
        audio, _ = sf.read(clip_dir(prepared["root"], ytid) / "audio.flac", always_2d=True)
        for channel in range(info.channels):
            spectrum = np.abs(np.fft.rfft(audio[:, channel]))
            assert np.fft.rfftfreq(len(audio), 1 / 44_100)[spectrum.argmax()] == pytest.approx(TONES_HZ[channel], abs=1)


def test_ten_frames_are_equally_spaced_jpegs_with_short_side_256(prepared: dict) -> None:
    for ytid in GOOD:
        directory = clip_dir(prepared["root"], ytid)
        picked = []
        for k in range(10):
            with Image.open(directory / f"{k}.jpg") as image:
                assert image.format == "JPEG" and image.size == (341, 256)
                picked.append(nearest_frame_index(np.asarray(image).reshape(-1, 3).mean(axis=0)))
        assert picked == list(range(10)), ytid  # the k-th frame comes from the k-th tenth of the clip


def test_shards_hold_audio_frames_labels_and_ytids(prepared: dict) -> None:
    summary = prepared["summary"]
    assert summary["clips"] == 6 and 20_000 < summary["bytes_per_clip"] < 200_000
    dataset = StreamingDataset(str(prepared["shards"]))
    classes = read_class_labels(DEFAULT_LABELS)
    by_id = {s.ytid: s for s in prepared["segments"]}
    seen = []
    for i in range(len(dataset)):
        sample = dataset[i]
        seen.append(sample["ytid"])
        assert sample["labels"].tolist() == label_indices(by_id[sample["ytid"]], classes)
        assert bytes(sample["audio"][:4]) == b"fLaC"
        assert all(bytes(sample[f"frame_{k}"][:2]) == b"\xff\xd8" for k in range(10))
    assert sorted(seen) == sorted(GOOD)
    counts = json.loads((prepared["shards"] / "label_counts.json").read_text())
    assert counts["clips"] == 6 and sum(counts["counts"]) == sum(len(by_id[y].mids) for y in GOOD)


def test_cli_carves_a_stable_validation_split(prepared: dict, capsys: pytest.CaptureFixture) -> None:
    out = prepared["root"].parent / "split"
    argv = ["pack", "--segments", str(prepared["root"].parent / "media" / "segments.csv")]
    assert (
        main([*argv, "--root", str(prepared["root"]), "--out", str(out), "--val-fraction", "0.5", "--workers", "1"])
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train, val = (
        {StreamingDataset(str(out / split))[i]["ytid"] for i in range(report["splits"][split]["clips"])}
        for split in ("train", "val")
    )
    assert not train & val and train | val == set(GOOD)


def test_ingest_matches_names_and_rejects_other_segments(tmp_path: Path, shared_dir: Path) -> None:
    clips = tmp_path / "clips" / "nested"
    clips.mkdir(parents=True)
    for name in ("--4gqARaEJE_0.000.mp4", "--BfvyPmVMo_99.000.mp4", "--U7joUcTCo.json", "--U7joUcTCo.webm"):
        (clips / name).write_bytes(b"")
    segments = read_segments(shared_dir / "fixtures" / "meta" / "eval_segments.csv")[:4]
    assert ingest(segments, tmp_path / "root", tmp_path / "clips") == Counter(ok=2, failed=2)
    sources = read_manifest(tmp_path / "root", "sources")
    assert sources["--U7joUcTCo"]["path"].endswith("--U7joUcTCo.webm")
    assert sources["--BfvyPmVMo"]["status"] == "failed"  # its file is a clip from 99 s, not from 20 s


def datamodule(prepared: dict, **kwargs) -> AudioSetDataModule:
    shards = str(prepared["shards"])
    options = {"train_dir": shards, "val_dir": shards, "batch_size": 2, "num_workers": 0, **kwargs}
    return AudioSetDataModule(**options)


def test_eval_batches_use_the_central_frame_and_no_augmentation(prepared: dict) -> None:
    dm = datamodule(prepared)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert len(batches) == 3
    batch = batches[0]
    assert batch["audio"].shape == (2, 1, 441_000) and batch["audio"].dtype == torch.float32
    assert batch["image"].shape == (2, 3, 224, 224) and batch["target"].shape == (2, 527)
    assert 10_000 < batch["audio"].abs().max() <= 32_768  # int16 value range
    classes = read_class_labels(DEFAULT_LABELS)
    by_id = {s.ytid: s for s in prepared["segments"]}
    for batch in batches:
        for i, ytid in enumerate(batch["id"]):
            labels = label_indices(by_id[ytid], classes)
            assert batch["text"][i] == ", ".join(classes[j].display_name for j in labels)
            assert batch["target"][i].nonzero().flatten().tolist() == labels
            assert frame_index(batch["image"][i]) == CENTRAL_FRAME
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(again["audio"], batches[0]["audio"])


def test_training_batches_pick_random_frames_and_shuffle(prepared: dict) -> None:
    dm = datamodule(prepared, channels=2)
    dm.setup("fit")
    frames, orders = set(), set()
    loader = dm.train_dataloader()  # Lightning iterates one loader for every epoch; LitData reshuffles each time
    for _ in range(3):
        epoch = list(loader)
        assert len(epoch) == 3 and epoch[0]["audio"].shape == (2, 2, 441_000)
        orders.add(tuple(y for b in epoch for y in b["id"]))
        frames |= {frame_index(image) for b in epoch for image in b["image"]}
    assert len(frames) >= 4 and len(orders) >= 2


def test_training_resumes_mid_epoch_from_the_state_dict(prepared: dict) -> None:
    dm = datamodule(prepared, num_workers=1)
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    first = next(loader)["id"]
    state = dm.state_dict()
    del loader
    resumed = datamodule(prepared, num_workers=1)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    rest = [y for batch in resumed.train_dataloader() for y in batch["id"]]
    assert len(rest) == 4 and sorted(first + rest) == sorted(GOOD)


def test_class_weights_are_inverse_frequency(prepared: dict) -> None:
    dm = datamodule(prepared)
    weights = dm.class_weights()
    counts = torch.tensor(json.loads((prepared["shards"] / "label_counts.json").read_text())["counts"])
    present = counts > 0
    assert (weights[~present] == 0).all() and weights[present].mean() == pytest.approx(1.0)
    products = weights[present] * counts[present]
    assert torch.allclose(products, products[0])  # weight x count is the same for every class present
    music = 137  # "Music" is in two of the six clips, every other class in one
    assert counts[music] == 2 and weights[music] == pytest.approx(weights[present].max() / 2)
    target = torch.zeros(2, 527)
    target[0, [music, 0]] = 1
    assert dm.sample_weights(target).tolist() == pytest.approx([float(weights[music] + weights[0]), 0.0])


def _ddp_worker(rank: int, store: Path, prepared: dict, out: str) -> None:
    with gloo_group(rank, 2, store):
        dm = datamodule(prepared, batch_size=2)
        dm.setup("fit")
        ids = {
            split: [y for b in loader for y in b["id"]]
            for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()))
        }
        assert dm.per_device_batch_size == 1
        Path(out, f"rank{rank}.json").write_text(json.dumps(ids))


@pytest.mark.ddp
def test_two_ddp_ranks_read_disjoint_samples(prepared: dict, tmp_path: Path) -> None:
    spawn(_ddp_worker, tmp_path, prepared, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for split in ("train", "val"):
        a, b = ranks[0][split], ranks[1][split]
        assert len(a) == len(b) == 3 and not set(a) & set(b) and sorted(a + b) == sorted(GOOD), split


@pytest.mark.parametrize(
    "config, model",
    [
        ("pretrain-audio.yaml", "esresnext-fbsp-tiny"),
        ("train-partial.yaml", "audioclip-tiny"),
        ("train-full.yaml", "audioclip-tiny"),
    ],
)
def test_audioset_phases_train_a_few_steps_on_the_shards(prepared: dict, tmp_path: Path, config: str, model: str):
    """The phase configs run end to end on prepared shards: training steps, mAP evaluation, last.ckpt."""
    from audioclip.tasks.cli import run_lightning_cli

    conf = Path(__file__).resolve().parents[3] / "conf"
    shards, run = str(prepared["shards"]), tmp_path / "run"
    init = ["--model.init_args.init_from", "null"] + (
        ["--model.init_args.audio_init_from", "null"] if config == "train-partial.yaml" else []
    )
    cli = run_lightning_cli(
        [
            "fit",
            "--config",
            str(conf / "trainer.yaml"),
            "--config",
            str(conf / config),
            "--model.init_args.model",
            model,
            *init,
            "--data.init_args.train_dir",
            shards,
            "--data.init_args.val_dir",
            shards,
            "--data.init_args.batch_size",
            "2",
            "--data.init_args.num_workers",
            "0",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.max_epochs",
            "1",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.default_root_dir",
            str(run),
            "--trainer.logger.init_args.save_dir",
            str(run),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert cli.trainer.global_step == 2
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # the checkpoint says which variant the phase made, and that the test videos' shards are synthetic
    lineage = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["audioclip_lineage"]
    variant = {"pretrain-audio.yaml": "audio-head", "train-partial.yaml": "partial", "train-full.yaml": "full"}[config]
    assert lineage["variant"] == variant
    assert (lineage["steps"][-1]["dataset"], lineage["steps"][-1]["data"]) == ("audioset", "synthetic")
    metric = "val/map" if config == "pretrain-audio.yaml" else "val/map_audio"
    assert 0.0 <= float(cli.trainer.callback_metrics[metric]) <= 1.0
    if config != "pretrain-audio.yaml":
        assert "val/map_image" in cli.trainer.callback_metrics and "val/map_both" in cli.trainer.callback_metrics
        # the W&B run holds a table of evaluation clips with their audio and frame
        assert "val/examples" in wandb_run(run)["summary"]


@pytest.mark.faults
@pytest.mark.parametrize("fault", ["audio does not decode", "silence", "frame does not decode"])
def test_bad_shard_sample_follows_on_bad_file(prepared: dict, monkeypatch, fault: str) -> None:
    """A sample that decodes badly stops the loader naming its YTID, or is replaced and reported under skip."""
    from audioclip.data.audioset.datamodule import AudioSetStreamingDataset
    from audioclip.data.errors import BadFileError

    original = StreamingDataset.__getitem__

    def corrupt_first(self, index):
        sample = dict(original(self, index))
        if (index if isinstance(index, int) else index.index) == 0:
            if fault == "audio does not decode":
                sample["audio"] = b"not flac at all"
            elif fault == "silence":
                buffer = io.BytesIO()
                sf.write(buffer, np.zeros((44100, 1), dtype=np.int16), 44100, format="FLAC")
                sample["audio"] = buffer.getvalue()
            else:
                sample = {**sample, **{f"frame_{k}": b"\xff\xd8 broken jpeg" for k in range(10)}}
        return sample

    monkeypatch.setattr(StreamingDataset, "__getitem__", corrupt_first)
    shards, names = str(prepared["shards"]), ["x"] * 527
    strict = AudioSetStreamingDataset(shards, train=False, channels=1, clip_seconds=1.0, names=names)
    with pytest.raises(BadFileError, match=r"AudioSet shard sample \S+: "):
        strict[0]
    lenient = AudioSetStreamingDataset(
        shards, train=False, channels=1, clip_seconds=1.0, names=names, on_bad_file="skip"
    )
    item = lenient[0]
    assert item["audio"].shape == (1, 44100) and item["audio"].any()
    assert len(item["skipped"]) == 1 and item["skipped"][0].startswith("AudioSet shard sample")


def test_npy_audio_shards_hold_the_same_samples_as_flac(prepared: dict, tmp_path: Path) -> None:
    """`--audio-format npy` trades bytes for decoding speed; the audio is the same, sample for sample."""
    from audioclip.data.audioset.datamodule import AudioSetStreamingDataset

    summary = pack(prepared["segments"], prepared["root"], tmp_path / "npy", workers=1, audio_format="npy")
    assert summary["clips"] == prepared["summary"]["clips"]
    common = {"train": False, "channels": 2, "clip_seconds": 3.0, "names": ["x"] * 527}
    flac = AudioSetStreamingDataset(str(prepared["shards"]), **common)
    npy = AudioSetStreamingDataset(str(tmp_path / "npy"), **common)
    by_id = {flac[i]["id"]: flac[i]["audio"] for i in range(len(flac))}
    for i in range(len(npy)):
        item = npy[i]
        assert torch.equal(item["audio"], by_id[item["id"]])
    with pytest.raises(ValueError, match="--audio-format must be one of flac, npy"):
        pack(prepared["segments"], prepared["root"], tmp_path / "x", audio_format="wav")
