"""AudioCLIP's audio head behind the HEAR API, so that the HEAR benchmark's own tools score it unchanged.

    hear-validator audioclip.hear --model AudioCLIP-Full-Training.pt
    python -m heareval.embeddings.runner audioclip.hear --model AudioCLIP-Full-Training.pt --tasks-dir tasks/

The API (HEAR 2021, Turian et al. 2022, "HEAR: Holistic Evaluation of Audio Representations"; hearbenchmark.com,
"HEAR API"): ``load_model(model_file_path)`` returns a torch module with ``sample_rate``, ``scene_embedding_size`` and
``timestamp_embedding_size``; ``get_scene_embeddings(audio, model)`` maps (n_sounds, n_samples) mono audio in
[-1, 1] at ``model.sample_rate`` to float32 (n_sounds, scene_embedding_size); ``get_timestamp_embeddings(audio,
model)`` returns float32 embeddings (n_sounds, n_timestamps, timestamp_embedding_size) centred at the timestamps it
also returns, (n_sounds, n_timestamps) in milliseconds, at a regular hop (the API suggests <= 50 ms).

Here (Guzhov et al. 2021: the audio head's embedding in the shared 1024-d space, L2-normalised as for zero-shot and
search):

- **Input**: 44.1 kHz, the model's own rate; samples in [-1, 1] are scaled to the int16 value range the head
  expects (`audioclip.constants.INT16_SCALE`, as `audioclip.inference.prepare_audio` does for files), one channel.
- **Timestamps** every ``HOP_MS`` = 50 ms from 0 to the end of the audio (both included when the length is a whole
  number of hops); each is computed from its index, so no rounding accumulates over long audio. The embedding at a
  timestamp is that of the ``WINDOW_SECONDS`` = 1 s of audio centred on it; near the ends the window is moved inside
  the audio rather than padded with silence, and audio shorter than a window is one window of its own length.
- **Scene embedding**: the whole sound when it is at most ``SCENE_CHUNK_SECONDS`` = 10 s (AudioSet's clip length, on
  which AudioCLIP was trained); a longer sound is cut into 10-s chunks (the last one ends at the sound's end, so
  every chunk is 10 s), and their embeddings are averaged and normalised again.
- **Padding**: HEAR pads every sound of a batch to one length with zeros. AudioCLIP's log-power front end turns
  digital silence into a -180 dB floor that would dominate a short clip's embedding, so the trailing samples that
  are exactly 0.0 are taken as padding and left out of the **scene** embedding (a sound that is all zeros keeps
  ``MIN_SAMPLES``). Timestamp embeddings keep the batch's one length, as the API's shape requires: timestamps over
  the padding embed the padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from audioclip.constants import INT16_SCALE, SAMPLE_RATE
from audioclip.inference import load
from audioclip.models import AudioCLIP

HOP_MS = 50.0  # the hop the API suggests at most, for its 50 ms onset tolerance
WINDOW_SECONDS = 1.0  # audio around each timestamp
SCENE_CHUNK_SECONDS = 10.0  # AudioSet's clip length
WINDOWS_PER_BATCH = 64  # windows per forward pass
MIN_SAMPLES = 1654  # one frame of the paper-size front end (win_length): what is kept of an all-zero sound
DEFAULT_WEIGHTS = "full"  # the official AudioCLIP-Full-Training weights, when no file is given


class HearAudioCLIP(nn.Module):
    """An AudioCLIP with the attributes the HEAR API reads; only its audio head runs."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: AudioCLIP) -> None:
        super().__init__()
        self.model = model
        self.scene_embedding_size = int(model.config.embed_dim)
        self.timestamp_embedding_size = int(model.config.embed_dim)

    @torch.no_grad()
    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 embeddings (n, D) of equally long mono sounds (n, samples) in [-1, 1]."""
        device = next(self.model.parameters()).device
        emb = self.model.encode_audio((audio.to(device).float() * INT16_SCALE)[:, None]).float()
        return emb / emb.norm(dim=-1, keepdim=True)


def load_model(model_file_path: str = "") -> HearAudioCLIP:
    """The AudioCLIP of ``model_file_path`` (a state dict or Lightning checkpoint of this project or an official
    one; empty: the official full-training weights) in fp32, eval mode, on the CPU (HEAR moves it)."""
    return HearAudioCLIP(load(model_file_path or DEFAULT_WEIGHTS, device="cpu", precision="32-true"))


def _check(audio: torch.Tensor, model: HearAudioCLIP) -> None:
    if not isinstance(model, HearAudioCLIP):
        raise TypeError(f"model must come from audioclip.hear.load_model, got {type(model).__name__}")
    if audio.dim() != 2 or audio.shape[1] == 0:
        raise ValueError(f"audio must be (n_sounds, n_samples) with n_samples > 0, got {tuple(audio.shape)}")


def timestamps_ms(num_samples: int, sample_rate: int = SAMPLE_RATE, hop_ms: float = HOP_MS) -> torch.Tensor:
    """The timestamps (ms) of audio of ``num_samples``: every ``hop_ms`` from 0 up to its duration."""
    duration_ms = 1000.0 * num_samples / sample_rate
    return torch.arange(math.floor(duration_ms / hop_ms + 1e-9) + 1, dtype=torch.float64) * hop_ms


def window_starts(centres_ms: torch.Tensor, num_samples: int, window: int, sample_rate: int = SAMPLE_RATE
                  ) -> torch.Tensor:  # fmt: skip
    """First sample of the window of ``window`` samples centred on each timestamp, moved inside the audio."""
    centres = torch.round(centres_ms * sample_rate / 1000.0).long()  # from each index: no drift over long audio
    return (centres - window // 2).clamp(min=0, max=max(num_samples - window, 0))


def get_timestamp_embeddings(audio: torch.Tensor, model: HearAudioCLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (n_sounds, n_timestamps, timestamp_embedding_size), timestamps (n_sounds, n_timestamps) in ms)."""
    _check(audio, model)
    sounds, samples = audio.shape
    window = min(round(WINDOW_SECONDS * model.sample_rate), samples)
    times = timestamps_ms(samples, model.sample_rate)
    starts = window_starts(times, samples, window, model.sample_rate).to(audio.device)
    offsets = torch.arange(window, device=audio.device)
    embeddings = []
    # a few windows at a time: all of them at once would be 4 GB for 20 minutes of audio
    for first in range(0, sounds * len(times), WINDOWS_PER_BATCH):
        pairs = torch.arange(first, min(first + WINDOWS_PER_BATCH, sounds * len(times)), device=audio.device)
        sound, stamp = pairs // len(times), pairs % len(times)
        embeddings.append(model.embed(audio[sound[:, None], starts[stamp][:, None] + offsets]))
    embeddings = torch.cat(embeddings).reshape(sounds, len(times), -1).to(audio.device)
    return embeddings, times.float().to(audio.device).expand(sounds, -1).contiguous()


def unpadded_length(sound: torch.Tensor) -> int:
    """Samples up to the last one that is not exactly 0.0 (the batch's padding follows); at least ``MIN_SAMPLES``
    (or the whole sound when it is shorter)."""
    nonzero = torch.nonzero(sound).flatten()
    end = int(nonzero[-1]) + 1 if len(nonzero) else 0
    return min(max(end, MIN_SAMPLES), len(sound))


def _scene(sound: torch.Tensor, model: HearAudioCLIP) -> torch.Tensor:
    chunk = round(SCENE_CHUNK_SECONDS * model.sample_rate)
    if len(sound) <= chunk:
        return model.embed(sound[None])[0]
    starts = [*range(0, len(sound) - chunk, chunk), len(sound) - chunk]  # the last chunk ends at the end
    pieces = torch.stack([sound[s : s + chunk] for s in starts])
    mean = torch.cat([model.embed(pieces[i : i + 8]) for i in range(0, len(pieces), 8)]).mean(0)
    return mean / mean.norm()


def get_scene_embeddings(audio: torch.Tensor, model: HearAudioCLIP) -> torch.Tensor:
    """Embeddings (n_sounds, scene_embedding_size), one per sound, its trailing zeros (padding) left out."""
    _check(audio, model)
    scenes = [_scene(sound[: unpadded_length(sound)], model) for sound in audio]
    return torch.stack(scenes).to(audio.device)
