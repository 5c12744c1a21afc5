"""The inference API and `audioclip classify`: what a user tries first."""

import numpy as np
import pytest
import soundfile as sf
import torch

import audioclip
from audioclip.cli import main
from audioclip.inference import InputError, prepare_audio

CLIP = "cat_3-95694-A-5.wav"


def test_load_reads_the_model_size_off_the_file_and_returns_eval_mode(tiny_checkpoint):
    model = audioclip.load(tiny_checkpoint)
    assert model.config.embed_dim == 64 and not model.training


def test_file_is_read_as_exact_int16_values(shared_dir):
    path = shared_dir / "fixtures/audio" / CLIP
    samples, rate = sf.read(path, dtype="int16")
    audio = prepare_audio(path)
    assert rate == 44100 and audio.shape == (1, 1, samples.shape[0])
    assert torch.equal(audio[0, 0], torch.from_numpy(samples.astype(np.float32)))


def test_waveform_at_another_rate_is_resampled_and_scaled():
    wave = np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.5
    audio = prepare_audio(np.stack([wave, wave]), sample_rate=22050)
    assert audio.shape == (1, 2, 44100)
    assert 0.45 * 32768 < audio.abs().max() < 0.55 * 32768


def test_classify_returns_probabilities_of_every_label_most_probable_first(tiny_checkpoint, shared_dir):
    model = audioclip.load(tiny_checkpoint)
    probs = audioclip.classify(model, shared_dir / "fixtures/audio" / CLIP, ["cat", "dog", "rain"])
    assert set(probs) == {"cat", "dog", "rain"}
    assert abs(sum(probs.values()) - 1) < 1e-5
    assert list(probs.values()) == sorted(probs.values(), reverse=True)


def test_embeddings_are_normalised_and_shared_space(tiny_checkpoint, shared_dir):
    model = audioclip.load(tiny_checkpoint)
    a = audioclip.embed_audio(model, shared_dir / "fixtures/audio" / CLIP)
    i = audioclip.embed_image(model, shared_dir / "fixtures/images/cat_1.jpg")
    t = audioclip.embed_text(model, ["cat", "dog"])
    assert a.shape == i.shape == t.shape[1:] == (64,)
    assert torch.allclose(torch.stack([a.norm(), i.norm()]), torch.ones(2), atol=1e-5)


def test_classify_cli_prints_a_ranked_table(tiny_checkpoint, shared_dir, capsys):
    assert (
        main(
            [
                "classify",
                str(shared_dir / "fixtures/audio" / CLIP),
                "--labels",
                "cat,dog,rain",
                "--checkpoint",
                str(tiny_checkpoint),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(CLIP)
    assert [line.split()[0] for line in out[1:4]] == ["1.", "2.", "3."]
    assert {line.split()[1] for line in out[1:4]} == {"cat", "dog", "rain"}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such audio file"),
        ("empty", "holds no audio samples"),
        ("not_audio", "not a readable audio file"),
        ("no_labels", "--labels"),
        ("bad_checkpoint", "no such file, and not a known tag"),
    ],
)
def test_bad_input_is_one_line_and_nonzero_exit(case, message, tiny_checkpoint, tmp_path, capsys):
    audio, labels, ckpt = tmp_path / "x.wav", "cat,dog", str(tiny_checkpoint)
    if case == "empty":
        sf.write(audio, np.zeros((0,), dtype=np.int16), 44100)
    elif case == "not_audio":
        audio.write_text("this is not a wav file")
    elif case == "no_labels":
        sf.write(audio, np.zeros((4410,), dtype=np.int16), 44100)
        labels = " , "
    elif case == "bad_checkpoint":
        ckpt = str(tmp_path / "nope.pt")
    code = main(["classify", str(audio), "--labels", labels, "--checkpoint", ckpt])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err


def test_duplicate_labels_are_an_error(tiny_checkpoint, shared_dir):
    model = audioclip.load(tiny_checkpoint)
    with pytest.raises(InputError, match="duplicate labels: cat"):
        audioclip.classify(model, shared_dir / "fixtures/audio" / CLIP, ["cat", "cat"])


def test_the_loaded_model_is_the_saved_one_in_every_tower(tiny_checkpoint, shared_dir):
    from audioclip.models import create_model

    torch.manual_seed(0)  # the fixture's weights, built again: what was saved
    saved = create_model("audioclip-tiny").eval()
    model = audioclip.load(tiny_checkpoint, precision="32-true")
    audio = prepare_audio(shared_dir / "fixtures/audio" / CLIP)[..., :44100]
    tokens, image = saved.tokenize(["a cat meowing", "rain"]), torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model.encode_audio(audio), saved.encode_audio(audio))
        assert torch.equal(model.encode_text(tokens), saved.encode_text(tokens))  # CLIP's causal mask made again
        assert torch.equal(model.encode_image(image), saved.encode_image(image))


def test_a_model_loaded_with_fewer_towers_holds_only_those_and_embeds_the_same(tiny_checkpoint, shared_dir):
    whole = audioclip.load(tiny_checkpoint, precision="32-true")
    model = audioclip.load(tiny_checkpoint, precision="32-true", towers=("audio", "text"))
    assert model.visual is None and model.towers == ("audio", "text")
    path = shared_dir / "fixtures/audio" / CLIP
    assert torch.equal(audioclip.embed_audio(model, path), audioclip.embed_audio(whole, path))
    assert torch.equal(audioclip.embed_text(model, ["cat", "rain"]), audioclip.embed_text(whole, ["cat", "rain"]))
    model.drop_towers("text")
    audio_only = sum(p.numel() for p in whole.audio.parameters()) + 3  # the audio head and the three logit scales
    assert sum(p.numel() for p in model.parameters()) == audio_only
    with pytest.raises(ValueError, match="loaded without its text encoder"):
        audioclip.embed_text(model, ["cat"])
    with pytest.raises(ValueError, match="loaded without its image encoder"):
        audioclip.embed_image(model, shared_dir / "fixtures/images/cat_1.jpg")
    assert model.dtype == torch.float32
    with pytest.raises(ValueError, match="towers: one or more of audio, image, text, got 'sound'"):
        audioclip.load(tiny_checkpoint, towers=("sound",))


def test_fewer_towers_need_a_whole_audioclip_file(tiny_checkpoint, tmp_path):
    clip_only = tmp_path / "clip-heads.pt"
    state = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith(("audio.", "logit_scale_a"))}, clip_only)
    from audioclip.models.pretrained import WeightsError

    with pytest.raises(WeightsError, match="clip-heads.pt: towers=audio needs the weights of a whole"):
        audioclip.load(clip_only, model_name="audioclip-tiny", towers=("audio",))
