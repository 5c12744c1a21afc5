"""`audioclip.hear`, the HEAR 2021 API: the attributes, shapes and dtypes the API prescribes for a 1-clip and a
3-clip batch of different lengths (padded to one length, as HEAR does), the 50 ms timestamp hop, the window each
timestamp embeds, what padding does to a scene embedding, and long sounds in 10-s chunks."""

from __future__ import annotations

import pytest
import torch

from audioclip import hear
from audioclip.inference import embed_audio

SR = 44100


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return hear.load_model(str(tiny_checkpoint))


def sound(seconds: float, seed: int) -> torch.Tensor:
    """Mono noise in [-1, 1] whose last sample is not zero (so nothing of it reads as padding)."""
    wave = (torch.rand(round(seconds * SR), generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9)
    wave[-1] = 0.5
    return wave


def test_the_model_has_the_attributes_the_api_reads(model):
    assert isinstance(model, torch.nn.Module) and model.to("cpu") is model
    assert model.sample_rate == 44100
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64  # the tiny AudioCLIP's embed_dim
    assert type(model.scene_embedding_size) is int and type(model.timestamp_embedding_size) is int


def test_one_clip_batch_has_the_documented_shapes_and_a_50_ms_hop(model):
    audio = sound(1.07, seed=0)[None]  # 1070 ms: timestamps 0, 50, ..., 1050
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (1, 22, 64) and timestamps.shape == (1, 22)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert timestamps[0].tolist() == [50.0 * k for k in range(22)]
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (1, 64) and scene.dtype == torch.float32


def test_three_clips_of_different_lengths_padded_to_one_length(model):
    clips = [sound(0.5, seed=1), sound(1.2, seed=2), sound(2.0, seed=3)]
    audio = torch.zeros(3, 2 * SR)  # HEAR pads every sound of a batch to the longest with zeros
    for row, clip in enumerate(clips):
        audio[row, : len(clip)] = clip
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    # 2000 ms: 41 timestamps 0, 50, ..., 2000 for every sound of the batch
    assert embeddings.shape == (3, 41, 64) and timestamps.shape == (3, 41)
    assert (timestamps == torch.arange(41) * 50.0).all()
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3, 41), atol=1e-5)
    scenes = hear.get_scene_embeddings(audio, model)
    assert scenes.shape == (3, 64)
    # the padding is left out of the scene embedding: each equals that of its clip alone, unpadded
    for row, clip in enumerate(clips):
        alone = hear.get_scene_embeddings(clip[None], model)[0]
        assert torch.allclose(scenes[row], alone, atol=1e-5), row
    assert not torch.allclose(scenes[0], model.embed(audio[:1])[0], atol=1e-3)  # the padded 2 s would differ


def test_each_timestamp_embeds_the_second_centred_on_it_moved_inside_at_the_ends(model):
    audio = sound(2.0, seed=4)[None]
    embeddings, _ = hear.get_timestamp_embeddings(audio, model)
    # 1 s = 44100 samples; at 1000 ms the window is samples 22050..66149; at 0 ms it would start at -22050 and is
    # moved to 0..44099; at 2000 ms it would end past 88200 and is moved to 44100..88199; at 500 ms: 0..44099 too
    for index, start in ((20, 22050), (0, 0), (40, 44100), (10, 0), (30, 44100)):
        expected = model.embed(audio[:, start : start + SR])[0]
        assert torch.allclose(embeddings[0, index], expected, atol=1e-5), index
    short = sound(0.3, seed=5)[None]  # shorter than a window: every timestamp embeds the whole sound
    embeddings, timestamps = hear.get_timestamp_embeddings(short, model)
    assert timestamps[0].tolist() == [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0]
    assert torch.allclose(embeddings[0], model.embed(short).expand(7, -1), atol=1e-5)


def test_scene_embedding_is_the_clips_embedding_as_audioclip_reads_a_file(model):
    clip = sound(1.5, seed=6)
    # audioclip.inference scales [-1, 1] audio to the int16 range the head expects, as it does for files
    expected = embed_audio(model.model, clip.numpy(), sample_rate=SR)
    assert torch.allclose(hear.get_scene_embeddings(clip[None], model)[0], expected, atol=1e-5)


def test_a_sound_longer_than_ten_seconds_is_the_mean_of_ten_second_chunks_ending_at_its_end(model):
    long = sound(23.0, seed=7)[None]
    # chunks 0-10 s, 10-20 s and 13-23 s (the last one moved to end with the sound)
    chunks = [long[:, s * SR : (s + 10) * SR] for s in (0, 10, 13)]
    mean = torch.cat([model.embed(c) for c in chunks]).mean(0)
    assert torch.allclose(hear.get_scene_embeddings(long, model)[0], mean / mean.norm(), atol=1e-5)


def test_silence_keeps_a_minimum_length_and_bad_input_is_refused(model):
    silent = hear.get_scene_embeddings(torch.zeros(1, SR), model)
    assert silent.shape == (1, 64) and torch.isfinite(silent).all()
    assert hear.unpadded_length(torch.zeros(SR)) == hear.MIN_SAMPLES
    with pytest.raises(ValueError, match=r"audio must be \(n_sounds, n_samples\) with n_samples > 0, got \(44100,\)"):
        hear.get_scene_embeddings(torch.zeros(SR), model)
    with pytest.raises(TypeError, match="model must come from audioclip.hear.load_model"):
        hear.get_timestamp_embeddings(torch.zeros(1, SR), model.model)
