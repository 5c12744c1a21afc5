"""Small synthetic ESC-50 and UrbanSound8K datasets in the official layouts, for the demo, tests and benchmarks.

Each class is a distinct sound that a tiny CNN on a log-spectrogram separates easily: a tone at a
class-specific frequency (log-spaced, about 8% apart for ESC-50's 50 classes) with a class-specific
harmonic, amplitude-modulated at a class-specific rate, over a little white noise. Every clip draws
its own phase, a +-1.5% frequency jitter, its loudness and its noise, so no two clips are equal.
The metadata files have the real column layouts (karolpiczak/ESC-50 ``meta/esc50.csv``,
UrbanSound8K ``metadata/UrbanSound8K.csv``) and the real class names. The US8K copy mixes sample
rates (16, 22.05, 44.1, 48 kHz), mono and stereo files and durations up to 4 s, like the original.
Each tree gets a ``SYNTHETIC`` marker file at its root (``audioclip.data.provenance``), so that results on it are
reported as synthetic and never set beside the paper's figures.

For "your own data" (``audioclip.data.folder``): a class-folder tree, a multi-label ``labels`` manifest and a
``caption`` manifest, each mixing 16 kHz stereo and 44.1 kHz mono clips of 1 to 8 s in WAV, FLAC, OGG and MP3 files.
A caption names its clip's sound, loudness and length ("a loud high whistle, short"), so captions differ within a
class and text-to-audio retrieval has something to find.

    python -m audioclip.data.synthetic --esc50 data/synthetic/esc50 --us8k data/synthetic/us8k
    python -m audioclip.data.synthetic --folder data/synthetic/folder --captions data/synthetic/captions
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audioclip.constants import ESC50_FOLDS, SAMPLE_RATE, US8K_FOLDS
from audioclip.data.esc50 import ESC10_CLASSES, ESC50_CLASSES, ESC50_COLUMNS, ESC50_METADATA
from audioclip.data.provenance import mark_synthetic
from audioclip.data.us8k import US8K_CLASSES, US8K_COLUMNS, US8K_METADATA

US8K_SAMPLE_RATES = (16000, 22050, 44100, 48000)


def class_sound(
    class_index: int,
    num_classes: int,
    duration_s: float,
    sample_rate: int,
    rng: np.random.Generator,
    low_hz: float = 180.0,
    high_hz: float = 7000.0,
) -> np.ndarray:
    """A float mono signal in [-1, 1] whose spectrum identifies ``class_index`` among ``num_classes``."""
    num = int(round(duration_s * sample_rate))
    t = np.arange(num) / sample_rate
    fundamental = low_hz * (high_hz / low_hz) ** (class_index / max(num_classes - 1, 1))
    fundamental *= 1.0 + rng.uniform(-0.015, 0.015)
    harmonic = 2 + class_index % 3  # 2nd, 3rd or 4th harmonic, kept below Nyquist
    signal = np.sin(2 * np.pi * fundamental * t + rng.uniform(0, 2 * np.pi))
    if harmonic * fundamental < 0.45 * sample_rate:
        signal += 0.5 * np.sin(2 * np.pi * harmonic * fundamental * t + rng.uniform(0, 2 * np.pi))
    modulation_hz = 1.0 + 1.5 * (class_index % 5)
    signal *= 0.75 + 0.25 * np.sin(2 * np.pi * modulation_hz * t + rng.uniform(0, 2 * np.pi))
    signal += rng.normal(0.0, 0.02, num)
    return signal * (rng.uniform(0.2, 0.8) / np.abs(signal).max())


def _to_int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_esc50(
    root: str | Path, clips_per_class: int = 8, classes: int = 10, seed: int = 0, progress: bool = True
) -> Path:
    """Write ``classes`` x ``clips_per_class`` mono 5 s 44.1 kHz clips in the ESC-50 layout; return the root.

    Clip ``k`` of a class goes to fold ``k % 5 + 1``; the first ``classes`` ESC-50 class names are used.
    """
    if not 1 <= classes <= len(ESC50_CLASSES):
        raise ValueError(f"classes must be in 1..{len(ESC50_CLASSES)}, got {classes}")
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for target in tqdm(range(classes), desc="Writing synthetic ESC-50", unit="class", disable=not progress):
        category = ESC50_CLASSES[target]
        for clip in range(clips_per_class):
            rng = np.random.default_rng([seed, 50, target, clip])
            fold = clip % ESC50_FOLDS + 1
            src_file = 100000 + 1000 * target + clip
            filename = f"{fold}-{src_file}-A-{target}.wav"
            sf.write(root / "audio" / filename, _to_int16(class_sound(target, classes, 5.0, SAMPLE_RATE, rng)),
                     SAMPLE_RATE, subtype="PCM_16")  # fmt: skip
            rows.append({"filename": filename, "fold": fold, "target": target, "category": category,
                         "esc10": category in ESC10_CLASSES, "src_file": src_file, "take": "A"})  # fmt: skip
    _write_csv(root / ESC50_METADATA, ESC50_COLUMNS, sorted(rows, key=lambda row: row["filename"]))
    mark_synthetic(root, "audioclip.data.synthetic")
    return root


def write_us8k(
    root: str | Path, clips_per_class: int = 10, classes: int = 10, seed: int = 0, progress: bool = True
) -> Path:
    """Write ``classes`` x ``clips_per_class`` clips in the UrbanSound8K layout; return the root.

    Clip ``k`` of a class goes to fold ``k % 10 + 1``, is stereo when ``k`` is odd, runs at
    ``US8K_SAMPLE_RATES[k % 4]`` and lasts 4 s when ``k % 3 == 0``, else U(0.5, 4) s.
    """
    if not 1 <= classes <= len(US8K_CLASSES):
        raise ValueError(f"classes must be in 1..{len(US8K_CLASSES)}, got {classes}")
    root = Path(root)
    rows = []
    for class_id in tqdm(range(classes), desc="Writing synthetic UrbanSound8K", unit="class", disable=not progress):
        for clip in range(clips_per_class):
            rng = np.random.default_rng([seed, 10, class_id, clip])
            fold = clip % US8K_FOLDS + 1
            sample_rate = US8K_SAMPLE_RATES[clip % len(US8K_SAMPLE_RATES)]
            duration = 4.0 if clip % 3 == 0 else round(float(rng.uniform(0.5, 4.0)), 3)
            left = class_sound(class_id, classes, duration, sample_rate, rng)
            audio = left if clip % 2 == 0 else np.stack((left, 0.8 * left + rng.normal(0.0, 0.01, left.shape)), axis=1)
            fs_id = 200000 + 1000 * class_id + clip
            filename = f"{fs_id}-{class_id}-0-{clip}.wav"
            (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
            sf.write(root / "audio" / f"fold{fold}" / filename, _to_int16(audio), sample_rate, subtype="PCM_16")
            rows.append({"slice_file_name": filename, "fsID": fs_id, "start": 0.0, "end": duration,
                         "salience": 1 + clip % 2, "fold": fold, "classID": class_id,
                         "class": US8K_CLASSES[class_id]})  # fmt: skip
    _write_csv(root / US8K_METADATA, US8K_COLUMNS, sorted(rows, key=lambda row: row["slice_file_name"]))
    mark_synthetic(root, "audioclip.data.synthetic")
    return root


# (folder name, caption phrase) of the own-data classes: the folder names show "underscores as spaces"
FOLDER_CLASSES = (
    ("low_hum", "low hum"), ("engine_drone", "droning engine"), ("bird_chirp", "chirping bird"),
    ("door_bell", "ringing door bell"), ("alarm_beep", "beeping alarm"), ("high_whistle", "high whistle"),
)  # fmt: skip
FOLDER_FORMATS = (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III"))


def _own_clip(class_indices: tuple[int, ...], clip: int, seed: int, num_classes: int) -> tuple[np.ndarray, int, float]:
    """(int16 (samples,) or (samples, 2) audio, sample rate, duration) of clip ``clip`` sounding ``class_indices``:
    odd clips are 16 kHz stereo, even ones 44.1 kHz mono; durations vary between 1 and 8 s."""
    rng = np.random.default_rng([seed, 14, *class_indices, clip])
    sample_rate = 16000 if clip % 2 else SAMPLE_RATE
    duration = round(float(rng.uniform(1.0, 8.0)), 2)
    mix = sum(class_sound(k, num_classes, duration, sample_rate, rng) for k in class_indices)
    mix = mix * (rng.uniform(0.3, 0.8) / np.abs(mix).max())
    if clip % 2:
        mix = np.stack((mix, 0.7 * mix + rng.normal(0.0, 0.01, mix.shape)), axis=1)
    return _to_int16(mix), sample_rate, duration


def _write_own_clip(path: Path, audio: np.ndarray, sample_rate: int, clip: int) -> Path:
    suffix, subtype = FOLDER_FORMATS[clip % len(FOLDER_FORMATS)]
    path = path.with_suffix(f".{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, subtype=subtype)
    return path


def write_folder_tree(root: str | Path, clips_per_class: int = 10, classes: int = 4, seed: int = 0) -> Path:
    """A class-folder tree ``root/<class>/...`` of ``classes`` x ``clips_per_class`` clips (every third one in a
    ``takes/`` subfolder); return the root."""
    if not 1 <= classes <= len(FOLDER_CLASSES):
        raise ValueError(f"classes must be in 1..{len(FOLDER_CLASSES)}, got {classes}")
    root = Path(root)
    for target, (folder, _) in enumerate(FOLDER_CLASSES[:classes]):
        for clip in range(clips_per_class):
            audio, sample_rate, _ = _own_clip((target,), clip, seed, classes)
            sub = root / folder / ("takes" if clip % 3 == 2 else "")
            _write_own_clip(sub / f"{folder}-{clip:03d}", audio, sample_rate, clip)
    return root


def write_labels_manifest(root: str | Path, clips: int = 40, classes: int = 4, seed: int = 0) -> Path:
    """``root/labels.csv`` (``path,labels,fold``) over ``root/audio/``: every clip mixes one or two classes,
    folds 1..4 in turn; return the manifest."""
    root = Path(root)
    names = [folder for folder, _ in FOLDER_CLASSES[:classes]]
    rows = []
    for clip in range(clips):
        first = clip % classes
        chosen = (first,) if clip % 3 == 0 else tuple(sorted({first, (first + 1 + clip // classes) % classes}))
        audio, sample_rate, _ = _own_clip(chosen, clip, seed, classes)
        path = _write_own_clip(root / "audio" / f"mix-{clip:03d}", audio, sample_rate, clip)
        rows.append({"path": str(path.relative_to(root)), "labels": ";".join(names[k] for k in chosen),
                     "fold": clip % 4 + 1})  # fmt: skip
    _write_csv(root / "labels.csv", ("path", "labels", "fold"), rows)
    return root / "labels.csv"


def write_caption_manifest(root: str | Path, clips_per_class: int = 10, classes: int = 4, seed: int = 0) -> Path:
    """``root/captions.csv`` (``path,caption,split``) over ``root/audio/``: one caption per clip, the last two
    clips of every class in the test split, the one before in val; return the manifest."""
    root = Path(root)
    rows = []
    for target, (folder, phrase) in enumerate(FOLDER_CLASSES[:classes]):
        for clip in range(clips_per_class):
            audio, sample_rate, duration = _own_clip((target,), clip, seed, classes)
            path = _write_own_clip(root / "audio" / f"{folder}-{clip:03d}", audio, sample_rate, clip)
            loudness = "loud" if np.abs(audio).max() > 0.55 * 32767 else "quiet"
            length = "short" if duration < 3 else "long" if duration > 6 else "medium length"
            position = clips_per_class - clip
            split = "test" if position <= 2 else "val" if position == 3 else "train"
            rows.append({"path": str(path.relative_to(root)), "caption": f"a {loudness} {phrase}, {length}",
                         "split": split})  # fmt: skip
    _write_csv(root / "captions.csv", ("path", "caption", "split"), rows)
    return root / "captions.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--esc50", type=Path, help="write a synthetic ESC-50 here")
    parser.add_argument("--us8k", type=Path, help="write a synthetic UrbanSound8K here")
    parser.add_argument("--clips-per-class", type=int, help="clips per class (default: 8 for ESC-50, 10 for US8K)")
    parser.add_argument("--folder", type=Path, help="write a class-folder tree here")
    parser.add_argument("--multilabel", type=Path, help="write a multi-label manifest (labels.csv) and audio here")
    parser.add_argument("--captions", type=Path, help="write a caption manifest (captions.csv) and audio here")
    parser.add_argument("--classes", type=int, help="use the first N class names (default: 10; own data: 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    own = {"folder": args.folder, "multilabel": args.multilabel, "captions": args.captions}
    if args.esc50 is None and args.us8k is None and not any(own.values()):
        parser.error("give --esc50 DIR, --us8k DIR, --folder DIR, --multilabel DIR and/or --captions DIR")
    classes = args.classes or 10
    if args.esc50 is not None:
        write_esc50(args.esc50, args.clips_per_class or 8, classes, args.seed)
        print(f"wrote a synthetic ESC-50 to {args.esc50}")
    if args.us8k is not None:
        write_us8k(args.us8k, args.clips_per_class or 10, classes, args.seed)
        print(f"wrote a synthetic UrbanSound8K to {args.us8k}")
    own_classes, clips = args.classes or 4, args.clips_per_class or 10
    if args.folder is not None:
        print(f"wrote a class-folder tree to {write_folder_tree(args.folder, clips, own_classes, args.seed)}")
    if args.multilabel is not None:
        manifest = write_labels_manifest(args.multilabel, clips * own_classes, own_classes, args.seed)
        print(f"wrote a multi-label manifest to {manifest}")
    if args.captions is not None:
        print(f"wrote a caption manifest to {write_caption_manifest(args.captions, clips, own_classes, args.seed)}")


if __name__ == "__main__":
    main()
