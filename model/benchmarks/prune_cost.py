# SPDX-License-Identifier: MPL-2.0
"""Params and MACs (one 320x180 LR frame) of the generators before / after `lightsr prune`.

    python model/benchmarks/prune_cost.py [--ratio 0.5] [--importance l1]

Structure only (random weights): what dependency-graph (DG) pruning removes at a given ratio,
with the published protection (conv before PixelShuffle, RGB convs, FFC blocks) and with
`--tail` (PixelShuffle-aware pruning of the upsampler). Prints a markdown table.
"""
import argparse
import warnings

import torch

from lightsr.archs import build_network
from lightsr.prune import IMPORTANCES, prune_generator

NETWORKS = {
    "F2SRGAN x4": {"type": "F2SRGANGenerator", "scale": 4, "num_blocks": 16, "fourier": True, "width": 64},
    "F2SRGAN x2": {"type": "F2SRGANGenerator", "scale": 2, "num_blocks": 16, "fourier": True, "width": 64},
    "Light student x4": {"type": "F2SRGANGenerator", "scale": 4, "num_blocks": 8, "fourier": False, "width": 64},
    "Light student x4, light upsampler": {"type": "F2SRGANGenerator", "scale": 4, "num_blocks": 8,
                                          "fourier": False, "width": 64, "upsampler": "light"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--importance", choices=IMPORTANCES, default="l1")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    print(f"| network | pruning ({args.importance}, ratio {args.ratio}) | params before | params after "
          "| GMACs before | GMACs after |\n|---|---|---|---|---|---|")
    for name, opt in NETWORKS.items():
        for tail in (False, True):
            torch.manual_seed(0)
            r = prune_generator(build_network(opt).eval(), args.importance, args.ratio, tail=tail)
            b, a = r["before"], r["after"]
            print(f"| {name} | {'DG groups + upsampling tail' if tail else 'DG groups'} | {b['params']:,} | "
                  f"{a['params']:,} | {b['macs_320x180'] / 1e9:.2f} | {a['macs_320x180'] / 1e9:.2f} |")


if __name__ == "__main__":
    main()
