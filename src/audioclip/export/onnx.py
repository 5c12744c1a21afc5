"""`audioclip export --onnx`: the audio and text encoders as ONNX graphs, checked against PyTorch by the export itself.

Exported with torch's exporter (`torch.onnx.export(..., dynamo=True)`: `torch.export` then onnxscript), opset 18.

- `audio_encoder.onnx`: `audio` (batch, channels, samples) float32 at 44.1 kHz in the int16 value range ->
  `audio_embedding` (batch, embed_dim), unnormalised, as `AudioCLIP.encode_audio`. Batch and channel count are
  dynamic; the length is fixed at export (`seconds`, 5 s by default: the clips the fine-tuning phases train on),
  because torch.export cannot keep the frame count of the fbsp framing and the attention pools' sizes symbolic over
  every length (its guards split the range by parity and divisibility). Longer audio is scored window by window at
  that length (`audioclip classify --window`). The fbsp filter bank (Guzhov et al. 2021, ESResNeXt-fbsp sec. III-A)
  depends on the weights only, so PyTorch computes it once in fp32 and the graph keeps it as a constant; the graph
  holds the framing, the projection, the power and the dB exactly as `ESResNeXtFBSP.spectrogram` computes them. The
  channels run through the body as one batch and their features are summed, as the eager model sums them.
- `text_encoder.onnx`: `tokens` (batch, 77) int64 CLIP tokens (`clip.tokenize`) -> `tokens_embedding` (batch,
  embed_dim).

ONNX has no adaptive max pooling (the ESResNeXt attention blocks pool a block's input to its output's size), so the
exported copy pools with a gather of each output cell's window and a max over it, with PyTorch's window bounds
(`floor(i * n / out)` to `ceil((i + 1) * n / out)`); a max is exact, so this changes no value.
What ONNX does not give: training (no gradients, no optimiser state), the image encoder, bf16. The parity check runs
both encoders on a few inputs of the real shape (5 s at 44.1 kHz) and records the largest absolute difference of the
L2-normalised embeddings (what classification and search compare) in the config and the model card.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audioclip.constants import SAMPLE_RATE
from audioclip.models.esresnext import Attention2d
from audioclip.models.export_folder import INSTALL_HINT
from audioclip.models.weight_files import sha256sum

OPSET = 18
AUDIO_FILE, TEXT_FILE = "audio_encoder.onnx", "text_encoder.onnx"
PARITY_SECONDS = 5.0  # the length the fine-tuning phases train on (ESC-50 clips)
PARITY_PROMPTS = ("a dog barking", "rain on a roof", "a siren wailing", "the sound of a church bell")


def adaptive_max_pool2d_as_gather(x: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """`F.adaptive_max_pool2d(x, output_size)` from gathers and a max: the same values, and sizes that may stay
    symbolic while torch.export traces (the ATen operator's shape function fixes them to the example's)."""

    def windows(n: int, out: int) -> tuple[torch.Tensor, int]:
        cell = torch.arange(out, device=x.device)
        start, end = (cell * n) // out, ((cell + 1) * n + out - 1) // out
        index = start[:, None] + torch.arange(n // out + 2, device=x.device)[None]  # no cell is wider
        return torch.minimum(index, (end - 1)[:, None]), index.shape[1]  # a cell's last index again: the same max

    for dim, out in ((-2, output_size[0]), (-1, output_size[1])):
        index, width = windows(x.shape[dim], out)
        x = x.index_select(dim, index.flatten()).unflatten(dim, (out, width)).amax(dim)
    return x


def _attention_forward(attention: nn.Module):  # noqa: ANN202 - the replacement forward of one Attention2d
    def forward(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = adaptive_max_pool2d_as_gather(x, size)
        return torch.sigmoid(attention.bn(attention.conv_point(attention.conv_depth(x))))

    return forward


class AudioEncoderGraph(nn.Module):
    """`encode_audio` with the filter bank as a constant and the channels as one batch (module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head = copy.deepcopy(model.audio).float().eval()
        with torch.no_grad():
            self.register_buffer("bank", self.head.fbsp.weights(self.head.config.n_fft, torch.float32))
        self.head._filter_bank = lambda dtype, keep=False: self.bank.to(dtype)
        for module in self.head.modules():
            if isinstance(module, Attention2d):
                module.forward = _attention_forward(module)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        batch, channels, _ = audio.shape
        spec = self.head.spectrogram(audio).flatten(0, 1)
        return self.head.fc(self.head.features(spec).unflatten(0, (batch, channels)).sum(1))


class TextEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).float().eval()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def _onnx_export(graph: nn.Module, example: torch.Tensor, path: Path, name: str, dims: dict[int, Any]) -> None:
    try:
        import onnxscript  # noqa: F401 - torch's exporter needs it; say so before torch.export runs for minutes
    except ImportError:
        raise ValueError(f"--onnx needs onnx and onnxscript: {INSTALL_HINT}") from None
    with torch.no_grad():
        program = torch.export.export(graph, (example,), dynamic_shapes={name: dims}, strict=False)
        onnx_program = torch.onnx.export(
            program, (example,), input_names=[name], output_names=[f"{name}_embedding"], opset_version=OPSET,
            dynamo=True, external_data=False, verbose=False,
        )
    onnx_program.save(str(path))


def parity_audio(seconds: float = PARITY_SECONDS, seed: int = 0) -> torch.Tensor:
    """Inputs of the real shape (batch 3, 1 channel, 5 s at 44.1 kHz, int16 value range): white noise, a chirp over
    the audible band and quiet noise with a loud tone (the fbsp front end's dB range matters at both ends)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    noise = torch.randn(t.shape, generator=generator, dtype=torch.float64)
    chirp = torch.sin(2 * math.pi * (50 * t + (8000 - 50) / (2 * seconds) * t**2))
    tone = 0.01 * noise + 0.5 * torch.sin(2 * math.pi * 1000 * t) * (t > seconds / 2)
    return (torch.stack([0.3 * noise, 0.5 * chirp, tone])[:, None] * 32767).clamp(-32768, 32767).float()


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def max_abs_diff(session, name: str, inputs: torch.Tensor, eager: torch.Tensor) -> float:
    """Largest absolute difference of the L2-normalised embeddings: onnxruntime against eager PyTorch."""
    ours = torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])
    return float((_normalised(ours) - _normalised(eager.float())).abs().max())


def session(path: Path):  # noqa: ANN201 - an onnxruntime.InferenceSession
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, out: Path, seconds: float = PARITY_SECONDS) -> dict[str, Any]:
    """Write both encoders into `out` (the audio encoder for clips of `seconds`), run the parity check, and return
    what the config records."""
    model = model.float().eval()
    audio = parity_audio(seconds)
    tokens = model.tokenize(list(PARITY_PROMPTS)).cpu()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = audio[:2].expand(2, 2, -1)  # two of each: a size of 1 would be fixed as a constant
    _onnx_export(AudioEncoderGraph(model), example, out / AUDIO_FILE, "audio",
                 {0: batch, 1: torch.export.Dim("channels", min=1, max=16)})  # fmt: skip
    _onnx_export(TextEncoderGraph(model), tokens[:2], out / TEXT_FILE, "tokens", {0: batch})
    with torch.no_grad():
        eager_audio, eager_text = model.encode_audio(audio).cpu(), model.encode_text(tokens).cpu()
    stereo = torch.stack([audio[0, 0], audio[1, 0]])[None]
    with torch.no_grad():
        eager_stereo = model.encode_audio(stereo).cpu()
    audio_session, text_session = session(out / AUDIO_FILE), session(out / TEXT_FILE)
    audio_diff = max(max_abs_diff(audio_session, "audio", audio, eager_audio),
                     max_abs_diff(audio_session, "audio", stereo, eager_stereo))  # fmt: skip
    return {
        "opset": OPSET,
        "audio_samples": audio.shape[-1],
        "torch": torch.__version__,
        "files": {AUDIO_FILE: sha256sum(out / AUDIO_FILE), TEXT_FILE: sha256sum(out / TEXT_FILE)},
        "logit_scale_at": float(model.logit_scale_at.detach()),
        "parity": {
            "audio_encoder": {
                "inputs": f"3 mono clips + 1 stereo clip of {seconds:g} s at 44.1 kHz (noise, chirp, tone)",
                "max_abs_diff": audio_diff,
            },
            "text_encoder": {"inputs": f"{len(PARITY_PROMPTS)} prompts (77 tokens)",
                             "max_abs_diff": max_abs_diff(text_session, "tokens", tokens, eager_text)},  # fmt: skip
        },
    }
