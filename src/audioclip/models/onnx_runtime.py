"""The onnxruntime backend: an exported folder's `audio_encoder.onnx` and `text_encoder.onnx` (`audioclip export
--onnx`, `audioclip.export.onnx`) behind the methods `audioclip.classify` and the timeline call on a model.

    model = audioclip.load("exported/esc50", backend="onnxruntime")
    audioclip.classify(model, "clip.wav", ["dog", "rain"])

Only inference, only audio and text (no image encoder, no training, fp32 on onnxruntime's CPU provider). The audio
encoder takes clips of the length it was exported for (`config.json`: `onnx.audio_samples`); other lengths are a
one-line error that says to score longer files window by window at that length. The ONNX files are checked against
the sha256 the export recorded, like `model.safetensors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import clip
import numpy as np
import torch

from audioclip.constants import SAMPLE_RATE
from audioclip.models.export_folder import INSTALL_HINT, read_config
from audioclip.models.weight_files import WeightsError, sha256sum

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class OnnxAudioCLIP:
    """AudioCLIP's `encode_audio` / `encode_text` / `tokenize` / `logit_scale_at` run by onnxruntime."""

    precision = "32-true"
    precision_line = "backend onnxruntime: fp32 on the CPU execution provider"

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        config = read_config(folder)
        onnx = config.get("onnx")
        if not onnx:
            raise WeightsError(f"{folder}: no ONNX encoders in this export; write them with `audioclip export --onnx`")
        try:
            import onnxruntime
        except ImportError:
            raise WeightsError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {}
        for name, expected in onnx["files"].items():
            path = folder / name
            if not path.is_file():
                raise WeightsError(f"{path}: missing; export again with `audioclip export --onnx`")
            if sha256sum(path) != expected:
                raise WeightsError(f"{path}: sha256 does not match config.json: changed or damaged after export")
            self.sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config, self.samples = config, int(onnx["audio_samples"])
        self.context_length = config["model_config"]["context_length"]
        self.logit_scale_at = torch.tensor(float(onnx["logit_scale_at"]))
        self.model_name = config["architecture"]
        self.lineage: dict[str, Any] = config.get("lineage", {})
        self.device = torch.device("cpu")

    def _run(self, name: str, inputs: np.ndarray) -> torch.Tensor:
        session = self.sessions[name]
        given = session.get_inputs()[0]
        # the graph takes the dtype it was traced with (clip.tokenize gives int32 or int64 by torch version)
        inputs = inputs.astype(ONNX_DTYPES.get(given.type, inputs.dtype), copy=False)
        return torch.from_numpy(session.run(None, {given.name: inputs})[0])

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] != self.samples:
            raise ValueError(
                f"the ONNX audio encoder takes clips of {self.samples / SAMPLE_RATE:g} s ({self.samples} samples at "
                f"44.1 kHz), this audio is {audio.shape[-1] / SAMPLE_RATE:g} s: score it window by window "
                f"(--window {self.samples / SAMPLE_RATE:g}), or export with --onnx-seconds"
            )
        return self._run("audio_encoder.onnx", audio.detach().cpu().float().numpy())

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run("text_encoder.onnx", tokens.detach().cpu().numpy())

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        raise ValueError("the onnxruntime backend has no image encoder (only audio and text are exported)")

    def tokenize(self, texts: list[str] | list[list[str]], template: str = "{}") -> torch.Tensor:
        """As `AudioCLIP.tokenize`: label lists joined with ", ", formatted into `template`, CLIP tokens."""
        joined = [t if isinstance(t, str) else ", ".join(t) for t in texts]
        return clip.tokenize([template.format(t) for t in joined], context_length=self.context_length)
