"""The `audioclip` command.

    audioclip fit --config conf/finetune-esc50.yaml --data.fold 3      # training phases (LightningCLI)
    audioclip classify FILE... --labels "dog,cat,rain" [--checkpoint PATH]
    audioclip classify LONG.wav --labels "dog,rain" --window 5 --hop 2.5 --out timeline.csv --plot timeline.png
    audioclip weights list | download [TAG...]
    audioclip prepare audioset ...                                     # AudioSet download/ingest/extract/pack
    audioclip data download esc50 | us8k [--root DIR] [--archive FILE] # ESC-50 / UrbanSound8K, verified
    audioclip crossval runs/finetune-esc50                             # per-fold table of a cross-validation
    audioclip reproduce [--plan]                                       # the paper's rows that can run, then the report
    audioclip export runs/finetune-esc50/fold1 OUT_DIR [--onnx]        # safetensors + config + model card
    audioclip doctor                                                   # what this install is, what is broken

Every subcommand is one row of `COMMANDS`: a help line and the `module:function` that takes the rest of the
command line; the module is imported only when its subcommand runs, so `--help` answers at once.
Errors from bad input are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from audioclip import __version__

# subcommand -> (help line, "module:function" called with the arguments after the subcommand's name)
COMMANDS = {
    "fit": ("train a phase (LightningCLI)", "audioclip.tasks.entry:fit"),
    "validate": ("validate a checkpoint (LightningCLI)", "audioclip.tasks.entry:validate"),
    "test": ("test a checkpoint (LightningCLI)", "audioclip.tasks.entry:test"),
    "predict": ("predict with a checkpoint (LightningCLI)", "audioclip.tasks.entry:predict"),
    "classify": ("zero-shot classify audio files against a list of labels", "audioclip.cli:classify"),
    "weights": ("list or download the official weights", "audioclip.cli:weights"),
    "prepare": ("prepare AudioSet: download/ingest, extract, pack", "audioclip.data.audioset.prepare:main"),
    "captions": ("Clotho / AudioCaps: fetch AudioCaps audio, check a tree", "audioclip.data.captions_cli:main"),
    "evaluate": ("zero-shot classification and querying on a dataset", "audioclip.evaluation.cli:evaluate"),
    "index": ("embed a folder of audio and images into a search index", "audioclip.evaluation.cli:index"),
    "search": ("nearest items of an index to a text, audio or image query", "audioclip.evaluation.cli:search_cli"),
    "report": ("the paper's tables beside comparable runs", "audioclip.evaluation.report:main"),
    "reproduce": ("every paper row that can run here, then the report (--plan)", "audioclip.evaluation.reproduce:main"),
    "export": ("safetensors + config + model card of a run (--onnx, --push to the Hub)", "audioclip.export.cli:main"),
    "crossval": ("per-fold and mean ± std test accuracy of a phase's fold runs", "audioclip.tasks.crossval:main"),
    "demo": ("fine-tune the tiny AudioCLIP on synthetic ESC-50 (make demo)", "audioclip.demo:main"),
    "synthetic": ("write synthetic datasets in the official layouts", "audioclip.data.synthetic:main"),
    "data": ("download ESC-50, UrbanSound8K or Clotho into the layout read", "audioclip.data.download_cli:main"),
    "testmedia": ("write small AudioSet-like test videos", "audioclip.data.audioset.testmedia:main"),
    "doctor": ("what this install is (versions, devices, weights, data) and what is broken", "audioclip.doctor:main"),
}
# the subcommands whose options this parser holds; the others parse their own
OWN = ("classify", "weights")


def classify(argv: Sequence[str]) -> int:
    """`audioclip classify FILE... --labels ...`."""
    args = _parser().parse_args(["classify", *argv])
    from audioclip.inference import classify as classify_file
    from audioclip.inference import load
    from audioclip.precision import announce_on_first_use

    labels = [x for x in args.labels.split(",") if x.strip()] if args.labels else []
    if not labels:
        raise ValueError("--labels: give the candidate classes, comma-separated, e.g. --labels 'dog,cat,rain'")
    windowed = _check_window_options(args)
    # classification never looks at images: the image encoder is not loaded
    model = load(args.checkpoint, model_name=args.model, precision=args.precision, backend=args.backend,
                 towers=("audio", "text"))  # fmt: skip
    announce_on_first_use(model)
    if windowed:
        return _classify_windows(model, args, labels)
    for path in args.files:
        probs = classify_file(model, path, labels, template=args.template)
        print(f"{path}")
        for rank, (label, prob) in enumerate(list(probs.items())[: args.top], start=1):
            print(f"  {rank:>2}. {label:<30} {prob:7.2%}")
    return 0


def _check_window_options(args: argparse.Namespace) -> bool:
    """Whether the files are classified window by window; the window options are checked before the model loads."""
    if args.window is None:
        given = [name for name, value in (("--hop", args.hop), ("--aggregate", args.aggregate), ("--out", args.out),
                                          ("--plot", args.plot)) if value is not None]  # fmt: skip
        if given:
            raise ValueError(f"{', '.join(given)}: classify window by window with --window SECONDS (e.g. --window 5)")
        return False
    from audioclip.data.stream import window_samples
    from audioclip.evaluation.timeline import check_timeline_out

    args.hop = args.window / 2 if args.hop is None else args.hop
    window_samples(args.window, args.hop)
    if (args.out or args.plot) and len(args.files) > 1:
        raise ValueError("--out/--plot: one timeline file per run; classify one FILE at a time")
    check_timeline_out(args.out, args.plot)
    return True


def _classify_windows(model, args: argparse.Namespace, labels: list[str]) -> int:
    """`audioclip classify FILE --window W [--hop H]`: the timeline (each window's top labels) and the clip result."""
    from audioclip.evaluation.timeline import classify_windows, embed_labels, plot_timeline, write_timeline

    embedded = embed_labels(model, labels, args.template)
    if hasattr(model, "drop_towers"):  # only the audio head runs from here on (an ONNX model has no towers to drop)
        model.drop_towers("text")
    for path in args.files:
        timeline = classify_windows(model, path, embedded, args.template, args.window, args.hop,
                                    args.aggregate or "mean", progress=True)  # fmt: skip
        print(f"{path}: {len(timeline.rows)} windows of {args.window:g} s every {args.hop:g} s")
        for row in timeline.rows:
            top = "  ".join(f"{label} {prob:6.1%}" for label, prob in row.top(min(args.top, 3)))
            print(f"  {row.start:9.2f}-{row.end:9.2f} s  {top}")
        print(f"  whole file ({timeline.aggregate} over the windows):")
        for rank, (label, prob) in enumerate(list(timeline.clip.items())[: args.top], start=1):
            print(f"  {rank:>2}. {label:<30} {prob:7.2%}")
        if args.out:
            print(f"timeline: {write_timeline(timeline, args.out, args.top)}")
        if args.plot:
            print(f"plot: {plot_timeline(timeline, args.plot)}")
    return 0


def weights(argv: Sequence[str]) -> int:
    """`audioclip weights list | download [TAG...]`."""
    args = _parser().parse_args(["weights", *argv])
    from audioclip.models.pretrained import TAGS, cache_dir, download

    if args.action == "list":
        for name, tag in TAGS.items():
            path = cache_dir() / tag.filename
            state = "present" if path.is_file() else "missing"
            print(f"{name:<10} {tag.filename:<32} {tag.kind:<10} {state:<8} {path}")
        return 0
    for name in args.tags or list(TAGS):
        if name not in TAGS:
            raise ValueError(f"unknown weight tag {name!r}; known: {', '.join(TAGS)}")
        print(f"{name}: {download(name)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioclip", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"audioclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help=COMMANDS["classify"][0])
    p.add_argument("files", nargs="+", help="audio files (any sample rate and channel count)")
    p.add_argument("--labels", required=True, help="comma-separated class names")
    p.add_argument("--checkpoint", default="full", help="official tag (full, partial) or a checkpoint path")
    p.add_argument("--model", default=None, help="registered model name, when it can't be read off the file")
    p.add_argument("--template", default="{}", help="text template for the labels, e.g. 'the sound of {}'")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                   help="onnxruntime: run an `audioclip export --onnx` folder's ONNX encoders (fp32, CPU)")
    p.add_argument("--top", type=int, default=5, help="how many labels to print per file")
    p.add_argument(
        "--precision", default="auto", help="auto (bf16-mixed where the hardware has bf16), 32-true, bf16-mixed"
    )
    p.add_argument("--window", type=float, help="audio of any length: score windows of this many seconds (e.g. 5)")
    p.add_argument("--hop", type=float, help="with --window: seconds between window starts (default: half a window)")
    p.add_argument("--aggregate", choices=["mean", "max"], help="with --window: the whole file's result (default mean)")
    p.add_argument("--out", help="with --window: write the timeline to this .csv or .json file")
    p.add_argument("--plot", help="with --window: plot the labels over time into this .png file")

    p = sub.add_parser("weights", help=COMMANDS["weights"][0])
    p.add_argument("action", choices=["list", "download"], help="list: the tags and where they are; download: fetch")
    p.add_argument("tags", nargs="*", help="tags to download (default: all)")

    for name, (text, _) in COMMANDS.items():
        if name not in OWN:
            sub.add_parser(name, help=f"{text}; see `audioclip {name} --help`", add_help=False)
    return parser


def _user_error(exc: BaseException) -> bool:
    """Bad input named in one line: ValueErrors (InputError, OutputError, bad settings), a missing file, and
    WeightsError. Its module is looked up, not imported: an error of a module never loaded cannot be one."""
    weights_error = getattr(sys.modules.get("audioclip.models.pretrained"), "WeightsError", ())
    return isinstance(exc, (ValueError, FileNotFoundError, *([weights_error] if weights_error else [])))


def main(argv: Sequence[str] | None = None) -> int:
    """Nothing heavy (torch, Lightning) is imported before the arguments are parsed: `--help` answers at once."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] not in COMMANDS:
            _parser().parse_args(argv)  # --help, --version, or a usage error naming the unknown subcommand
        module, function = COMMANDS[argv[0]][1].split(":")
        return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
    except Exception as exc:
        if not _user_error(exc):
            raise
        print(f"audioclip: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
