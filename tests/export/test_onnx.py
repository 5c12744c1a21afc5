"""`audioclip export --onnx` and the onnxruntime backend: both encoders equal PyTorch eager within 1e-4 on random and
real-shaped inputs (5 s at 44.1 kHz, a real ESC-50 clip, stereo), and `classify --backend onnxruntime` gives
PyTorch's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import audioclip
from audioclip.cli import main
from audioclip.inference import prepare_audio
from audioclip.models import WeightsError

CLIP = "cat_3-95694-A-5.wav"  # 5 s at 44.1 kHz, as ESC-50 clips are
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    torch.save(audioclip.create_model("audioclip-tiny").state_dict(), base / "tiny.pt")
    assert main(["export", str(base / "tiny.pt"), str(base / "out"), "--onnx"]) == 0
    return base / "out"


@pytest.fixture(scope="module")
def models(exported):
    return audioclip.load(exported, precision="32-true"), audioclip.load(exported, backend="onnxruntime")


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((_normalised(a) - _normalised(b)).abs().max())


def test_audio_encoder_matches_pytorch_on_random_and_real_clips(models, shared_dir):
    torch_model, onnx_model = models
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(3, 2, 220_500, generator=generator) * torch.tensor([100.0, 3000.0, 20000.0])[:, None, None]
    real = prepare_audio(shared_dir / "fixtures/audio" / CLIP)  # (1, 1, 220500), int16 values
    for audio in (noise, real, torch.cat([real, real.flip(-1)], 1)):  # random stereo, a real clip, real stereo
        with torch.no_grad():
            eager = torch_model.encode_audio(audio)
        onnx = onnx_model.encode_audio(audio)
        assert onnx.shape == eager.shape
        assert _max_diff(onnx, eager) < TOLERANCE
        assert float((onnx - eager).abs().max()) < TOLERANCE * float(eager.abs().max())


def test_text_encoder_matches_pytorch(models):
    torch_model, onnx_model = models
    prompts = ["a cat meowing", "thunder", "a car horn in the street, far away", "x"]
    tokens = torch_model.tokenize(prompts, "the sound of {}")
    assert torch.equal(onnx_model.tokenize(prompts, "the sound of {}"), tokens.cpu())
    with torch.no_grad():
        eager = torch_model.encode_text(tokens)
    assert _max_diff(onnx_model.encode_text(tokens), eager) < TOLERANCE


def test_the_export_records_its_parity_check_in_config_and_card(exported):
    config = json.loads((exported / "config.json").read_text())
    onnx = config["onnx"]
    assert onnx["opset"] == 18 and onnx["audio_samples"] == 220_500
    assert set(onnx["parity"]) == {"audio_encoder", "text_encoder"}
    assert all(0 <= check["max_abs_diff"] < TOLERANCE for check in onnx["parity"].values())
    card = (exported / "README.md").read_text()
    assert f"| audio_encoder | {onnx['parity']['audio_encoder']['inputs']} | " in card and "opset 18" in card


def test_classify_with_the_onnxruntime_backend_gives_pytorchs_answer(exported, shared_dir, capsys):
    path = shared_dir / "fixtures/audio" / CLIP
    labels = ["cat", "dog", "rain", "a car horn"]
    eager = audioclip.classify(audioclip.load(exported, precision="32-true"), path, labels, "the sound of {}")
    onnx = audioclip.classify(audioclip.load(exported, backend="onnxruntime"), path, labels, "the sound of {}")
    assert list(onnx) == list(eager)
    assert max(abs(onnx[k] - eager[k]) for k in labels) < TOLERANCE
    assert main(["classify", str(path), "--labels", ",".join(labels), "--template", "the sound of {}",
                 "--checkpoint", str(exported), "--backend", "onnxruntime"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[1:3]] == list(eager)[:2]


def test_a_clip_of_another_length_is_one_line_naming_the_window(exported, shared_dir, capsys, tmp_path):
    import soundfile as sf

    short = tmp_path / "short.wav"
    wave, rate = sf.read(shared_dir / "fixtures/audio" / CLIP)
    sf.write(short, wave[: rate * 2], rate)
    code = main(["classify", str(short), "--labels", "cat,dog", "--checkpoint", str(exported), "--backend",
                 "onnxruntime"])  # fmt: skip
    *said, error = capsys.readouterr().err.strip().splitlines()  # the backend line (as for precision), the error
    assert said == ["audioclip: backend onnxruntime: fp32 on the CPU execution provider"]
    assert code == 2 and error.startswith("audioclip: error: the ONNX audio encoder takes clips of 5 s")
    assert "--window 5" in error


def test_a_tampered_onnx_file_is_refused(exported, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in exported.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    data = bytearray((folder / "text_encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "text_encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="text_encoder.onnx: sha256 does not match"):
        audioclip.load(folder, backend="onnxruntime")
