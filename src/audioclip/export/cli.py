"""`audioclip export SOURCE OUT_DIR [--onnx] [--push owner/name]`: argument parsing and printing
(`audioclip.export.folder` does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioclip export",
        description="write model.safetensors + config.json + README.md (model card) of a trained AudioCLIP",
    )
    parser.add_argument("source", help="a run folder (runs/<phase>/<run>), a checkpoint, an official tag or an export")
    parser.add_argument("out", help="the folder to write (created if needed)")
    parser.add_argument("--onnx", action="store_true", help="also export the audio and text encoders to ONNX")
    parser.add_argument("--onnx-seconds", type=float, default=5.0,
                        help="the clip length the ONNX audio encoder takes, in seconds (default 5)")
    parser.add_argument("--push", metavar="OWNER/NAME", help="upload the folder to the Hugging Face Hub")
    parser.add_argument("--private", action="store_true", help="with --push: create the repository private")
    parser.add_argument("--class-names", help="comma-separated class names (default: those the run was tested on)")
    parser.add_argument("--template", help="prompt template (default: the run's, else '{}')")
    parser.add_argument("--license", default="mit", help="the weights' license, as the Hub names it (default mit)")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from audioclip.export.folder import export_model, push_folder
    from audioclip.inference import check_template

    if args.template is not None:
        check_template(args.template)
    names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    if args.onnx_seconds <= 0:
        raise ValueError(f"--onnx-seconds must be positive, got {args.onnx_seconds}")
    config = export_model(args.source, args.out, names, args.template, args.license, args.onnx, args.onnx_seconds)
    out = Path(args.out)
    variant, sha = config["lineage"].get("variant", "other"), config["weights"]["sha256"]
    print(f"{out}: {config['architecture']} ({variant}), sha256 {sha[:16]}..., "
          f"{len(config['test_metrics'])} test figure(s) in README.md")  # fmt: skip
    for name, check in config.get("onnx", {}).get("parity", {}).items():
        print(f"  ONNX {name}: max abs difference to PyTorch {check['max_abs_diff']:.2e} on {check['inputs']}")
    if args.push:
        print(f"pushed: {push_folder(out, args.push, args.private)}")
    return 0
