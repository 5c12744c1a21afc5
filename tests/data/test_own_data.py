"""Your own data: `AudioFolderDataModule` on class-folder trees and CSV/TSV manifests: decoding of any
rate / channel count / length, class names, the three split protocols, bad layouts as one-line errors."""

import inspect

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip.data import AudioFolderDataModule, BadFileError, DatasetNotFoundError, MetadataError, MissingFileError
from audioclip.data.folds import FoldedAudioDataModule
from audioclip.data.synthetic import class_sound, write_caption_manifest
from audioclip.evaluation.retrieval import retrieval_at_k

SR = 44100


def _tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path, audio, rate, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype=subtype)
    return path


def _dm(**kwargs) -> AudioFolderDataModule:
    defaults = dict(batch_size=2, num_workers=0, progress=False, clip_seconds=1.0, max_seconds=4.0, augment=False)
    return AudioFolderDataModule(**{**defaults, **kwargs})


def _tree(root, classes=("dog_bark", "rain"), clips=5):
    for k, name in enumerate(classes):
        for i in range(clips):
            rng = np.random.default_rng([k, i])
            _write(root / name / f"{i}.wav", class_sound(k, len(classes), 1.0, 22050, rng).astype(np.float32), 22050)
    return root


def test_tree_mixing_rates_channels_and_lengths_decodes_to_44k_mono_in_the_int16_range(tmp_path):
    root = tmp_path / "tree"
    left = _tone(1.5, 16000, amplitude=0.4)
    _write(root / "a" / "stereo16k.flac", np.stack((left, 0.5 * left), axis=1), 16000)  # 16 kHz stereo, 1.5 s
    _write(root / "a" / "long48k.wav", _tone(12.0, 48000), 48000)  # longer than max_seconds: cut
    _write(root / "b" / "sub" / "short.ogg", _tone(0.5, 22050, 880.0), 22050, subtype="VORBIS")
    _write(root / "b" / "mono.wav", _tone(2.0, SR, 660.0), SR)
    dm = _dm(root=root, test_fraction=0.0, val_fraction=0.4)
    dm.setup("fit")
    names = {"a/stereo16k.flac", "a/long48k.wav", "b/sub/short.ogg", "b/mono.wav"}
    assert set(dm.train_set.ids) | set(dm.val_set.ids) == names
    dataset = dm.evaluation_set()
    lengths = dict(zip(dataset.ids, dataset.lengths.tolist(), strict=True))
    assert lengths == {"a/stereo16k.flac": round(1.5 * SR), "a/long48k.wav": 4 * SR,
                       "b/sub/short.ogg": round(0.5 * SR), "b/mono.wav": 2 * SR}  # fmt: skip
    stereo = dataset.reader.read(int(dataset.rows[dataset.ids.index("a/stereo16k.flac")]), round(1.5 * SR))
    # the channel mean of (x, x/2) peaks at 0.75 of x's 0.4 full scale
    assert stereo.shape == (1, round(1.5 * SR))
    assert np.abs(stereo).max() == pytest.approx(0.75 * 0.4 * 32768, rel=0.02)
    item = dataset[0]
    assert item["audio"].shape == (1, SR) and item["audio"].dtype == torch.float32


def test_two_channels_duplicate_mono_and_keep_stereo(tmp_path):
    root = tmp_path / "tree"
    left = _tone(1.0, SR)
    _write(root / "a" / "mono.wav", left, SR)
    _write(root / "a" / "stereo.wav", np.stack((left, 0.5 * left), axis=1), SR)
    dataset = _dm(root=root, channels=2).evaluation_set()
    mono, stereo = (dataset[dataset.ids.index(name)]["audio"] for name in ("a/mono.wav", "a/stereo.wav"))
    assert mono.shape == stereo.shape == (2, SR)
    assert torch.equal(mono[0], mono[1])
    assert float(stereo[1].abs().max()) == pytest.approx(0.5 * float(stereo[0].abs().max()), rel=0.01)


def test_class_names_are_the_folder_names_with_underscores_as_spaces(tmp_path):
    root = _tree(tmp_path / "tree", classes=("dog_bark", "rain", "church_bells"), clips=3)
    (root / ".audioclip-cache").mkdir()
    dm = _dm(root=root, val_fraction=0.34)
    dm.setup("fit")
    assert dm.class_names == ["church bells", "dog bark", "rain"] and dm.task == "class"
    batch = next(iter(dm.train_dataloader()))
    assert all(text == dm.class_names[int(t)] for text, t in zip(batch["text"], batch["target"], strict=True))


def test_seeded_split_is_stratified_and_reproducible(tmp_path):
    root = _tree(tmp_path / "tree", clips=10)
    splits = []
    for _ in range(2):
        dm = _dm(root=root, test_fraction=0.2, val_fraction=0.1, seed=3)
        dm.setup("fit")
        splits.append([sorted(s.ids) for s in (dm.train_set, dm.val_set, dm.test_set)])
        for dataset, per_class in ((dm.test_set, 2), (dm.val_set, 1), (dm.train_set, 7)):
            assert sorted(np.bincount(dataset.targets, minlength=2).tolist()) == [per_class, per_class]
    assert splits[0] == splits[1]
    other = _dm(root=root, seed=4)
    other.setup("fit")
    assert sorted(other.test_set.ids) != splits[0][2]


def _manifest(path, header, rows, delimiter=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([delimiter.join(header), *(delimiter.join(map(str, row)) for row in rows)]) + "\n")
    return path


def test_manifest_fold_is_the_test_split_and_labels_are_multi_hot(tmp_path):
    audio = tmp_path / "audio"
    rows = []
    for i in range(12):
        _write(audio / f"{i}.wav", _tone(1.0, 16000, 300.0 + 50 * i), 16000)
        rows.append((f"audio/{i}.wav", "dog;rain" if i % 2 else "dog_bark", i % 3 + 1))
    manifest = _manifest(tmp_path / "m.tsv", ("path", "labels", "fold"), rows, delimiter="\t")
    dm = _dm(manifest=manifest, fold=2, val_fraction=0.3)
    dm.setup("fit")
    assert dm.task == "multilabel" and dm.class_names == ["dog", "dog bark", "rain"]
    assert sorted(dm.test_set.ids) == sorted(f"audio/{i}.wav" for i in range(12) if i % 3 + 1 == 2)
    item = dm.test_set[dm.test_set.ids.index("audio/1.wav")]
    assert item["target"].tolist() == [1, 0, 1] and item["text"] == "dog, rain"


def test_manifest_split_column_is_used_and_val_is_carved_from_train_when_missing(tmp_path):
    audio = tmp_path / "audio"
    rows = []
    for i in range(10):
        _write(audio / f"{i}.wav", _tone(1.0, SR, 200.0 + 40 * i), SR)
        rows.append((f"audio/{i}.wav", "dog" if i < 5 else "cat", "test" if i in (0, 5) else "train"))
    dm = _dm(manifest=_manifest(tmp_path / "m.csv", ("path", "label", "split"), rows), val_fraction=0.25)
    dm.setup("fit")
    assert sorted(dm.test_set.ids) == ["audio/0.wav", "audio/5.wav"]
    assert len(dm.val_set) == 2 and not set(dm.val_set.ids) & set(dm.train_set.ids)
    assert len(dm.train_set) == 6


def test_caption_manifest_gives_each_clip_its_caption_and_equal_captions_one_target(tmp_path):
    manifest = write_caption_manifest(tmp_path / "captions", clips_per_class=4, classes=2)
    dm = _dm(manifest=manifest)
    dm.setup("fit")
    assert dm.task == "caption" and dm.class_names == []
    lines = manifest.read_text().splitlines()[1:]
    expected = {line.split(",")[0]: line.split('"')[1] for line in lines}
    for dataset in (dm.train_set, dm.val_set, dm.test_set):
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["text"] == expected[item["id"]] and dm.captions[item["target"]] == item["text"]


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_empty_root_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as caught:
        _dm(root=tmp_path / "empty").setup("fit")
    assert "no class folders" in _one_line(caught.value) and str(tmp_path / "empty") in str(caught.value)


def test_class_folder_without_audio_is_a_one_line_error(tmp_path):
    root = _tree(tmp_path / "tree")
    (root / "silence").mkdir()
    (root / "silence" / "readme.txt").write_text("no audio here")
    with pytest.raises(MetadataError, match="class folder holds no audio files") as caught:
        _dm(root=root).setup("fit")
    assert str(root / "silence") in _one_line(caught.value)


@pytest.mark.parametrize(
    ("header", "problem"),
    [(("file", "label"), "missing column 'path'"), (("path", "fold"), "missing a label column"),
     (("path", "label", "caption"), "several label columns")],
)  # fmt: skip
def test_manifest_with_missing_columns_is_a_one_line_error(tmp_path, header, problem):
    manifest = _manifest(tmp_path / "m.csv", header, [("a.wav",) + ("x",) * (len(header) - 1)])
    with pytest.raises(MetadataError, match=problem) as caught:
        _dm(manifest=manifest).setup("fit")
    assert str(manifest) in _one_line(caught.value)


def test_manifest_listing_a_missing_file_is_a_one_line_error_naming_it(tmp_path):
    _write(tmp_path / "a.wav", _tone(1.0, SR), SR)
    manifest = _manifest(tmp_path / "m.csv", ("path", "label"), [("a.wav", "dog"), ("gone.wav", "cat")])
    with pytest.raises(MissingFileError) as caught:
        _dm(manifest=manifest).setup("fit")
    assert str(tmp_path / "gone.wav") in _one_line(caught.value)


def test_class_without_training_samples_is_a_one_line_error(tmp_path):
    rows = []
    for i in range(4):
        _write(tmp_path / f"{i}.wav", _tone(1.0, SR, 300.0 + 100 * i), SR)
        rows.append((f"{i}.wav", "dog" if i < 3 else "cat", "test" if i == 3 else "train"))
    manifest = _manifest(tmp_path / "m.csv", ("path", "label", "split"), rows)
    with pytest.raises(MetadataError, match=r"\['cat'\] have no usable sample in the training split") as caught:
        _dm(manifest=manifest).setup("fit")
    assert str(manifest) in _one_line(caught.value)


def test_an_empty_validation_split_is_a_one_line_error(tmp_path):
    root = _tree(tmp_path / "tree", clips=3)  # 10% of the 2 non-test clips per class rounds to none
    with pytest.raises(MetadataError, match="the validation split is empty .* raise val_fraction") as caught:
        _dm(root=root).setup("fit")
    assert str(root) in _one_line(caught.value)


def test_a_fold_missing_from_the_manifest_is_a_one_line_error(tmp_path):
    _write(tmp_path / "a.wav", _tone(1.0, SR), SR)
    manifest = _manifest(tmp_path / "m.csv", ("path", "label", "fold"), [("a.wav", "dog", 1)])
    with pytest.raises(MetadataError, match=r"fold=3 is not in the 'fold' column \(\[1\]\)"):
        _dm(manifest=manifest, fold=3).setup("fit")


def test_bad_file_is_skipped_and_listed_under_on_bad_file_skip(tmp_path):
    root = _tree(tmp_path / "tree", clips=4)
    (root / "rain" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(BadFileError, match="broken.wav: not a readable audio file"):
        _dm(root=root).setup("fit")
    dm = _dm(root=root, on_bad_file="skip", val_fraction=0.34)
    dm.setup("fit")
    assert dm.skipped_files == ["rain/broken.wav"]
    assert "rain/broken.wav" not in dm.train_set.ids + dm.val_set.ids + dm.test_set.ids


def test_retrieval_at_k_and_map_at_10_on_a_worked_example():
    # query 0: relevant results 1 and 3, ranked 2nd and 4th -> R@1 0, R@5 1, AP@10 = (1/2 + 2/4) / 2 = 0.5
    # query 1: relevant result 0, ranked 1st -> R@1 1, AP@10 1; query 2 has no relevant result and is left out
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.9, 0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5]])
    relevant = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = retrieval_at_k(scores, relevant, ks=(1, 5))
    assert out == pytest.approx({"r@1": 0.5, "r@5": 1.0, "map@10": 0.75})
    # AP@3 of query 0 counts only its hit at rank 2, over min(2 relevant, 3): 0.5 / 2
    assert retrieval_at_k(scores, relevant, ks=(1,), map_at=3)["map@3"] == pytest.approx((0.25 + 1.0) / 2)
    # R@k is a hit rate (one relevant result in the top k suffices), not the share of relevant results found
    assert retrieval_at_k(scores, relevant, ks=(2,))["r@2"] == 1.0


def test_own_data_loads_with_the_same_loader_defaults_as_esc50_and_us8k(tmp_path) -> None:
    """A user's folder gets what the paper's datasets get unless they say otherwise: pinned memory on a GPU,
    persistent workers, the same batch, workers, bad-file policy (a subclass that re-declares a parameter must not
    keep a stale default: this one forwards them instead of declaring them)."""
    ours = inspect.signature(AudioFolderDataModule.__init__).parameters
    base = inspect.signature(FoldedAudioDataModule.__init__).parameters
    loader = {"pin_memory", "persistent_workers", "batch_size", "num_workers", "on_bad_file"}
    assert not loader & set(ours) and loader <= set(base)
    module = AudioFolderDataModule(root=tmp_path / "tree")
    assert {name: getattr(module, name) for name in loader} == {name: base[name].default for name in loader}
