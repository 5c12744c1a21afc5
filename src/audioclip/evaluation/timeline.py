"""Audio of any length: zero-shot classification window by window, a timeline, and the clip-level result.

    import audioclip
    model = audioclip.load("full")
    timeline = audioclip.classify_windows(model, "field-recording.flac", ["dog barking", "rain", "siren"],
                                          window=5, hop=2.5, aggregate="mean")
    timeline.rows[0]   # TimelineRow(start=0.0, end=5.0, probs={'rain': 0.71, ...})
    timeline.clip      # label -> probability over the whole file

    audioclip classify long.wav --labels "dog,rain,siren" --window 5 --hop 2.5 --out timeline.csv --plot timeline.png

The file is read in blocks and cut into windows (`audioclip.data.stream.sliding_windows`), so memory does not grow
with its length. Each window is scored as `audioclip.classify` scores a whole clip: the softmax over the labels of
the audio-text logits (`clamp(exp(logit_scale_at), 1, 100)` times the cosine; Guzhov et al. 2021, sec. 3.3). The
clip-level result is the mean of the windows' probabilities (`mean`) or, per label, its highest probability in any
window (`max`: "is there a dog anywhere in this hour"; these do not sum to 1).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from audioclip.constants import SAMPLE_RATE
from audioclip.data.errors import BadFileError
from audioclip.data.stream import BLOCK_SECONDS, Window, sliding_windows, stream_info, window_samples
from audioclip.inference import InputError, check_labels, embed_text
from audioclip.memory import return_free_heap
from audioclip.models.losses import clamp_scale
from audioclip.outputs import atomic_output, check_writable_dir

AGGREGATES = ("mean", "max")
# windows per forward pass: as fast per window as 8 on a CPU, and half the activations (`make bench-long`)
WINDOW_BATCH = 4
TIMELINE_SUFFIXES = (".csv", ".json")


class LabelEmbeddings(NamedTuple):
    """The labels' side of a zero-shot classification, computed once (`embed_labels`): the labels, the template they
    were written into, their text embeddings (fp32, CPU) and the audio-text logit scale."""

    labels: list[str]
    template: str
    text: torch.Tensor
    scale: torch.Tensor


def embed_labels(model, labels: Sequence[str], template: str = "{}") -> LabelEmbeddings:
    """The labels embedded as `classify_windows` scores windows against them; after this the model's text encoder
    can be dropped (`model.drop_towers("text")`) and `classify_windows` given this instead of the labels."""
    labels = check_labels(labels)
    with torch.no_grad():
        text = embed_text(model, labels, template).float().cpu()
        scale = clamp_scale(model.logit_scale_at).float().cpu()
    return LabelEmbeddings(labels, template, text, scale)


@dataclass(frozen=True)
class TimelineRow:
    """One window: where it starts and ends in the file (seconds) and label -> probability, most probable first."""

    start: float
    end: float
    probs: dict[str, float]

    def top(self, k: int) -> list[tuple[str, float]]:
        return list(self.probs.items())[:k]


@dataclass
class Timeline:
    """A file classified window by window, and the clip-level result."""

    path: str
    labels: list[str]
    template: str
    window: float
    hop: float
    aggregate: str
    rows: list[TimelineRow] = field(default_factory=list)
    clip: dict[str, float] = field(default_factory=dict)

    def as_json(self, top: int | None = None) -> dict:
        """Everything, as `--out timeline.json` writes it (`top`: how many labels each window lists in `top`)."""
        top = top or len(self.labels)
        return {
            "file": self.path,
            "labels": self.labels,
            "template": self.template,
            "window_seconds": self.window,
            "hop_seconds": self.hop,
            "aggregate": self.aggregate,
            "clip": self.clip,
            "windows": [
                {"start": r.start, "end": r.end, "top": [list(pair) for pair in r.top(top)], "probs": r.probs}
                for r in self.rows
            ],
        }


def count_windows(path: str | Path, window: float, hop: float) -> int:
    """How many windows `sliding_windows` yields for `path` (from its header: for the progress bar)."""
    info = stream_info(path)
    size, step = window_samples(window, hop)
    total = math.ceil(info.frames * SAMPLE_RATE / info.sample_rate)
    if total <= size:
        return 1
    regular = (total - size) // step + 1
    ends_early = (regular - 1) * step + size < total  # one more window, ending at the file's end
    return regular + int(ends_early)


def _batches(windows: Iterator[Window], batch_size: int) -> Iterator[list[Window]]:
    """Runs of windows of one shape (every window but a short file's has the same), at most `batch_size` long."""
    batch: list[Window] = []
    for item in windows:
        if batch and (len(batch) == batch_size or batch[0].audio.shape != item.audio.shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def embed_windows(
    model,
    path: str | Path,
    window: float = 5.0,
    hop: float = 2.5,
    batch_size: int = WINDOW_BATCH,
    block_seconds: float = BLOCK_SECONDS,
    progress: bool = False,
) -> Iterator[tuple[float, float, torch.Tensor]]:
    """(start, end, L2-normalised audio embedding) of every window of `path`, in order (`sliding_windows`)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    return_free_heap()  # what loading the model left free (the text encoder, the weights file's pages) goes back first
    try:
        total = count_windows(path, window, hop)
        windows = sliding_windows(path, window, hop, block_seconds)
        with tqdm(total=total, desc=f"Windows of {Path(path).name}", unit="window", disable=not progress) as bar:
            for batch in _batches(windows, batch_size):
                with torch.no_grad():
                    audio = torch.stack([w.audio for w in batch]).to(model.device)
                    emb = model.encode_audio(audio).float()
                emb = emb / emb.norm(dim=-1, keepdim=True)
                bar.update(len(batch))
                yield from ((w.start_seconds, w.end_seconds, e.cpu()) for w, e in zip(batch, emb, strict=True))
                del audio, emb, batch
                return_free_heap()  # glibc keeps the holes a forward pass leaves: resident memory would wander
    except BadFileError as error:
        raise InputError(str(error)) from None


def classify_windows(
    model,
    audio: str | Path,
    labels: Sequence[str] | LabelEmbeddings,
    template: str = "{}",
    window: float = 5.0,
    hop: float = 2.5,
    aggregate: str = "mean",
    batch_size: int = WINDOW_BATCH,
    block_seconds: float = BLOCK_SECONDS,
    progress: bool = False,
) -> Timeline:
    """Zero-shot classification of every window of a file of any length: the timeline and the clip-level result
    (see the module's docstring). `labels` may be `embed_labels`' result (its template is then the one used)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    window_samples(window, hop)  # a bad setting is named before anything is read
    embedded = labels if isinstance(labels, LabelEmbeddings) else embed_labels(model, labels, template)
    labels, template, text, scale = embedded
    timeline = Timeline(str(audio), labels, template, window, hop, aggregate)
    all_probs = []  # plain floats: small tensors kept for the whole file would pin the heap between big buffers
    for start, end, emb in embed_windows(model, audio, window, hop, batch_size, block_seconds, progress):
        probs = (scale * emb @ text.T).softmax(-1).tolist()
        all_probs.append(probs)
        ranked = sorted(zip(labels, probs, strict=True), key=lambda kv: -kv[1])
        timeline.rows.append(TimelineRow(start, end, dict(ranked)))
    stacked = torch.tensor(all_probs)
    clip = stacked.mean(0) if aggregate == "mean" else stacked.max(0).values
    timeline.clip = dict(sorted(zip(labels, clip.tolist(), strict=True), key=lambda kv: -kv[1]))
    return timeline


def check_timeline_out(out: str | Path | None, plot: str | Path | None) -> None:
    """`--out` ends in .csv or .json and both outputs can be written: said before any audio is read."""
    if out is not None:
        if Path(out).suffix.lower() not in TIMELINE_SUFFIXES:
            raise ValueError(f"--out {out}: write the timeline as .csv or .json")
        check_writable_dir(Path(out).absolute().parent, "--out")
    if plot is not None:
        if Path(plot).suffix.lower() != ".png":
            raise ValueError(f"--plot {plot}: the plot is a .png file")
        check_writable_dir(Path(plot).absolute().parent, "--plot")


def write_timeline(timeline: Timeline, out: str | Path, top: int = 5) -> Path:
    """The timeline as CSV (one row a window: start, end, its `top` labels and their probabilities, then every
    label's probability) or JSON (`Timeline.as_json`), by the suffix of `out`; written atomically."""
    out = Path(out)
    check_timeline_out(out, None)
    if out.suffix.lower() == ".json":
        with atomic_output(out, "--out") as file:
            json.dump(timeline.as_json(top), file, indent=2)
            file.write("\n")
        return out
    top = min(top, len(timeline.labels))
    header = ["start", "end"]
    for rank in range(1, top + 1):
        header += [f"top{rank}", f"top{rank}_prob"]
    with atomic_output(out, "--out") as file:
        writer = csv.writer(file)
        writer.writerow(header + timeline.labels)
        for row in timeline.rows:
            ranked = [x for pair in row.top(top) for x in (pair[0], f"{pair[1]:.6f}")]
            writer.writerow([f"{row.start:.3f}", f"{row.end:.3f}", *ranked]
                            + [f"{row.probs[label]:.6f}" for label in timeline.labels])  # fmt: skip
    return out


def plot_timeline(timeline: Timeline, png: str | Path, labels: int = 10) -> Path:
    """Labels over time: the probability of each of the `labels` best labels of the clip (rows) in every window
    (columns at their start time), as a heat map."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    png = Path(png)
    check_timeline_out(None, png)
    shown = list(timeline.clip)[:labels]
    grid = [[row.probs[label] for row in timeline.rows] for label in shown]
    # each window's column runs from its start to the next window's start (windows overlap when hop < window)
    edges = [row.start for row in timeline.rows] + [timeline.rows[-1].end]
    fig, ax = plt.subplots(figsize=(min(16.0, 4 + 0.08 * len(timeline.rows)), 1.2 + 0.35 * len(shown)))
    image = ax.pcolormesh(edges, range(len(shown) + 1), grid, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_yticks([i + 0.5 for i in range(len(shown))], shown)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(f"{Path(timeline.path).name}: {timeline.window:g} s windows every {timeline.hop:g} s")
    fig.colorbar(image, ax=ax, label="probability", fraction=0.03)
    fig.tight_layout()
    with atomic_output(png, "--plot", mode="wb") as file:
        fig.savefig(file, format="png", dpi=110)
    plt.close(fig)
    return png
