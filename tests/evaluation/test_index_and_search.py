"""`audioclip index` and `audioclip search`: batched, resumable indexing of a folder of audio and
images, exact cosine search, and refusal to mix embeddings of different checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import audioclip
from audioclip.cli import main
from audioclip.evaluation import fingerprint, load_index

AUDIO = ("cat_3-95694-A-5.wav", "coughing_1-58792-A-24.wav")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(base / f"tiny{seed}.pt")
        torch.save(audioclip.create_model("audioclip-tiny").state_dict(), paths[-1])
    return paths


@pytest.fixture
def media(tmp_path, shared_dir):
    folder = tmp_path / "media"
    (folder / "sounds").mkdir(parents=True)
    for name in AUDIO:
        shutil.copy(shared_dir / "fixtures/audio" / name, folder / "sounds" / name)
    shutil.copy(shared_dir / "fixtures/images/cat_1.jpg", folder / "cat_1.jpg")
    (folder / "notes.txt").write_text("not media")
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_index_then_search_by_text_audio_and_image(checkpoints, media, tmp_path, capsys, shared_dir):
    index = tmp_path / "index.pt"
    code, out, err = run(capsys, "index", media, "--out", index, "--checkpoint", checkpoints[0], "--batch-size", 2)
    assert code == 0 and "3 items (3 added, 0 already indexed)" in out and "Indexing" in err  # the tqdm bar
    stored = load_index(index)
    assert sorted(stored["modality"]) == ["audio", "audio", "image"] and stored["embeddings"].shape == (3, 64)
    assert stored["fingerprint"] == fingerprint(audioclip.load(checkpoints[0]))

    code, out, _ = run(capsys, "search", index, "--text", "a cat meowing", "--top", 2)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and lines[0].startswith("  1. ") and lines[1].startswith("  2. ")
    scores = [float(line.split()[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)

    # an item is its own nearest neighbour, with cosine 1
    code, out, _ = run(capsys, "search", index, "--audio", media / "sounds" / AUDIO[0], "--modality", "audio")
    first = out.splitlines()[0].split()
    assert code == 0 and float(first[1]) == pytest.approx(1.0, abs=1e-4) and first[-1].endswith(AUDIO[0])
    code, out, _ = run(capsys, "search", index, "--image", media / "cat_1.jpg", "--top", 1)
    assert float(out.split()[1]) == pytest.approx(1.0, abs=1e-4) and out.strip().endswith("cat_1.jpg")


def test_index_resumes_and_only_embeds_new_files(checkpoints, media, tmp_path, capsys):
    index = tmp_path / "index.pt"
    run(capsys, "index", media, "--out", index, "--checkpoint", checkpoints[0])
    before = load_index(index)["embeddings"].clone()
    sf.write(media / "tone.flac", (0.3 * np.sin(np.arange(22050) / 7)).astype(np.float32), 22050)
    code, out, _ = run(capsys, "index", media, "--out", index, "--checkpoint", checkpoints[0])
    assert code == 0 and "4 items (1 added, 3 already indexed)" in out
    after = load_index(index)
    assert torch.equal(after["embeddings"][:3], before) and after["paths"][-1].endswith("tone.flac")


def test_unreadable_files_are_reported_and_retried_later(checkpoints, media, tmp_path, capsys):
    (media / "broken.wav").write_bytes(b"RIFF not really audio")
    code, out, _ = run(capsys, "index", media, "--out", tmp_path / "index.pt", "--checkpoint", checkpoints[0])
    assert code == 0 and "3 items" in out and "skipped 1 unreadable file(s)" in out and "broken.wav" in out


def test_other_checkpoints_are_refused(checkpoints, media, tmp_path, capsys):
    index = tmp_path / "index.pt"
    run(capsys, "index", media, "--out", index, "--checkpoint", checkpoints[0])
    code, _, err = run(capsys, "index", media, "--out", index, "--checkpoint", checkpoints[1])
    assert code == 2 and "built with other weights" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "search", index, "--text", "dog", "--checkpoint", checkpoints[1])
    assert code == 2 and "not comparable" in err


def test_fingerprint_is_the_same_for_a_lightning_checkpoint_of_the_same_weights(checkpoints, tmp_path):
    state = torch.load(checkpoints[0], weights_only=True)
    lightning_style = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, lightning_style)
    assert fingerprint(audioclip.load(lightning_style)) == fingerprint(audioclip.load(checkpoints[0]))
    assert fingerprint(audioclip.load(checkpoints[1])) != fingerprint(audioclip.load(checkpoints[0]))


def test_empty_folder_and_missing_index_are_one_line_errors(checkpoints, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "index", tmp_path / "empty", "--checkpoint", checkpoints[0])
    assert code == 2 and "no audio" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "search", tmp_path / "none.pt", "--text", "dog")
    assert code == 2 and "no such index file" in err
