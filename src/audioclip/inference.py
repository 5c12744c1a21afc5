"""The inference API: load a model, embed audio / images / text, zero-shot classify.

    import audioclip
    model = audioclip.load("full")                      # official tag, or a checkpoint / state-dict path
    probs = audioclip.classify(model, "dog.wav", ["dog", "rain", "siren"])
    emb = audioclip.embed_audio(model, "dog.wav")       # L2-normalised (1024,)

Audio may be a file path or a waveform with any sample rate and channel count: it is resampled to 44.1 kHz with
torchaudio and brought to the int16 value range the model expects (float waveforms are taken to be in [-1, 1],
integer ones as int16 values).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from audioclip.constants import INT16_SCALE, SAMPLE_RATE
from audioclip.models import AudioCLIP, create_model
from audioclip.models.audioclip import TOWERS
from audioclip.models.export_folder import export_folder_of
from audioclip.models.lineage import weights_lineage
from audioclip.models.losses import clamp_scale
from audioclip.models.onnx_runtime import OnnxAudioCLIP
from audioclip.models.preprocess import image_transform
from audioclip.models.pretrained import (
    JIT_EXTRAS,
    TAGS,
    Weights,
    WeightsError,
    load_into,
    load_weights,
    read_weights,
)
from audioclip.models.registry import guess_model_name
from audioclip.precision import check_inference_precision, to_inference_precision

BACKENDS = ("torch", "onnxruntime")


class InputError(ValueError):
    """Unusable input (a file that can't be read, empty audio, no labels), with the offending thing named."""


def load(
    tag_or_path: str | Path = "full",
    model_name: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    backend: str = "torch",
    towers: Sequence[str] = tuple(TOWERS),
) -> AudioCLIP:
    """A ready AudioCLIP in eval mode from an official tag, a file (state dict or Lightning checkpoint), a run folder,
    an `audioclip export` folder or `hf://owner/name`; its `lineage` (`audioclip.models.lineage.weights_lineage`)
    says which variant it is.

    `precision` `auto` embeds under bf16 autocast where the hardware has bf16, else in fp32 (`32-true`, or force
    either; `audioclip.precision`); `model.precision_line` says which was chosen and why. `backend="onnxruntime"`
    runs an export's ONNX audio and text encoders instead (`audioclip.models.onnx_runtime`: fp32, CPU).

    `towers` are the encoders built (default all three): `("audio", "text")` for classification leaves out the image
    head's 38 M parameters. The weights are read once and copied once into the parts kept (the model is laid out
    without memory first, never randomly initialised), so loading needs one model's memory beside the file's."""
    check_inference_precision(precision)
    unknown = [t for t in towers if t not in TOWERS]
    if unknown or not towers:
        raise ValueError(f"towers: one or more of {', '.join(TOWERS)}, got {', '.join(map(repr, towers)) or 'none'}")
    if backend not in BACKENDS:
        raise ValueError(f"--backend: one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime":
        return OnnxAudioCLIP(export_folder_of(tag_or_path))
    is_tag = isinstance(tag_or_path, str) and tag_or_path in TAGS
    if is_tag and TAGS[tag_or_path].kind != "audioclip":
        raise WeightsError(f"{tag_or_path!r} holds {TAGS[tag_or_path].kind} weights, not a whole AudioCLIP")
    # read once: the architecture is guessed from the same tensors, and the lineage read beside them
    weights = read_weights(tag_or_path)
    model = _build(model_name or ("audioclip" if is_tag else guess_model_name(weights.state)), weights, towers)
    model.lineage = weights_lineage(str(tag_or_path), weights.content)
    model = model.eval().to(device)
    to_inference_precision(model, precision)
    return model


def _build(name: str, weights: Weights, towers: Sequence[str]) -> AudioCLIP:
    """The model `name` with only `towers`, filled from `weights`: laid out on the meta device, the kept parts
    allocated and every tensor of theirs loaded strictly. A file that does not hold a whole AudioCLIP (CLIP's heads
    alone) is loaded into a randomly initialised model as before, with every tower."""
    with torch.device("meta"):
        model = create_model(name)
    if not isinstance(model, AudioCLIP) or not set(model.state_dict()) <= set(weights.state):
        if set(towers) != set(TOWERS):
            raise WeightsError(f"{weights.source}: towers={','.join(towers)} needs the weights of a whole AudioCLIP")
        model = create_model(name)
        load_weights(model, weights)
        return model
    left_out = [t for t in TOWERS if t not in towers]
    model.drop_towers(*left_out)
    model.to_empty(device="cpu")
    parts = tuple(attr for tower in left_out for attr in TOWERS[tower])
    state = {k: v for k, v in weights.state.items() if k.split(".", 1)[0] not in parts and k not in JIT_EXTRAS}
    load_into(model, state, str(weights.path), page_out=True)  # the file's pages go back as they are copied
    if model.transformer is not None:  # CLIP's causal mask is a plain attribute, made when the model was laid out
        for block in model.transformer.resblocks:
            block.attn_mask = model.build_attention_mask()
    return model


def read_audio_unit_range(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode a file with soundfile: (channels, samples) float32 in [-1, 1], and its sample rate.

    The checks of the training data path (`audioclip.data.audio.read_audio_int16_range`, `clip_problem`): an empty,
    truncated or unreadable file and NaN or digitally silent audio are an InputError naming the file, never a
    confident label.
    """
    from audioclip.data.audio import read_audio_int16_range
    from audioclip.data.errors import BadFileError, clip_problem

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise InputError(f"{path}: no such audio file")
    try:
        audio, rate = read_audio_int16_range(path)
    except BadFileError as exc:
        raise InputError(str(exc)) from None
    wave = torch.from_numpy(audio) / INT16_SCALE
    if problem := clip_problem(wave, wave.shape[-1], wave.shape[-1]):
        raise InputError(f"{path}: {problem}")
    return wave, rate


def check_template(template: str) -> str:
    """A text template holds `{}` exactly once, where the label goes, and no other placeholder."""
    if template.count("{}") > 1:
        raise InputError(f"template {template!r} must contain '{{}}' exactly once, where the class name goes")
    try:
        template.format("label")
    except (IndexError, KeyError, ValueError) as exc:
        raise InputError(
            f"template {template!r}: not a usable template ({type(exc).__name__}: {exc}); write e.g. "
            "'the sound of {}'"
        ) from None
    if template.count("{}") != 1:
        raise InputError(f"template {template!r} must contain '{{}}' exactly once, where the class name goes")
    return template


def prepare_audio(audio: str | Path | np.ndarray | torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
    """File path or waveform -> (1, channels, samples) float at 44.1 kHz in the int16 value range."""
    if isinstance(audio, (str, Path)):
        wave, sample_rate = read_audio_unit_range(audio)
        wave = wave * INT16_SCALE
    else:
        wave = torch.as_tensor(audio)
        if sample_rate is None:
            raise InputError("a waveform needs its sample_rate")
        wave = wave.float() * INT16_SCALE if wave.is_floating_point() else wave.float()
        if wave.dim() == 1:
            wave = wave[None]
        if wave.dim() != 2:
            raise InputError(f"a waveform must be (samples,) or (channels, samples), got {tuple(wave.shape)}")
    if wave.shape[-1] == 0:
        raise InputError("empty audio: no samples")
    if sample_rate != SAMPLE_RATE:
        wave = AF.resample(wave, sample_rate, SAMPLE_RATE)
    return wave[None]


@torch.no_grad()
def embed_audio(model: AudioCLIP, audio, sample_rate: int | None = None) -> torch.Tensor:
    """L2-normalised audio embedding (embed_dim,)."""
    emb = model.encode_audio(prepare_audio(audio, sample_rate).to(model.device))[0]
    return emb / emb.norm()


@torch.no_grad()
def embed_image(model: AudioCLIP, image) -> torch.Tensor:
    """L2-normalised embedding of an image file or PIL image, with CLIP's preprocessing."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        try:
            image = Image.open(image)
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{image}: not a readable image ({exc})") from exc
    if hasattr(model, "needs"):
        model.needs("image")  # before the image head is looked at: one line when it was left out
    pixels = image_transform(model.visual.input_resolution)(image)[None].to(model.device)
    emb = model.encode_image(pixels)[0]
    return emb / emb.norm()


@torch.no_grad()
def embed_text(model: AudioCLIP, texts: Sequence[str], template: str = "{}") -> torch.Tensor:
    """L2-normalised text embeddings (len(texts), embed_dim)."""
    if not texts:
        raise InputError("no text given")
    check_template(template)
    emb = model.encode_text(model.tokenize(list(texts), template))
    return emb / emb.norm(dim=-1, keepdim=True)


def check_labels(labels: Sequence[str]) -> list[str]:
    """The class names without surrounding blanks; an InputError when none is left or one is given twice."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise InputError("no labels given: pass at least one class name")
    if len(set(labels)) != len(labels):
        raise InputError(f"duplicate labels: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))}")
    return labels


def classify(
    model: AudioCLIP, audio, labels: Sequence[str], template: str = "{}", sample_rate: int | None = None
) -> dict[str, float]:
    """Zero-shot classification: label -> probability, most probable first (softmax over the audio-text logits)."""
    labels = check_labels(labels)
    # no_grad as a block, not a decorator: mutmut (`make mutation`) leaves decorated functions unmutated
    with torch.no_grad():
        scale = clamp_scale(model.logit_scale_at)
        logits = scale * embed_audio(model, audio, sample_rate) @ embed_text(model, labels, template).T
    probs = logits.softmax(-1).tolist()
    return dict(sorted(zip(labels, probs, strict=True), key=lambda kv: -kv[1]))
