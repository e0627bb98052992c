# SPDX-License-Identifier: MPL-2.0
"""`lightsr prune`: dependency-graph structured pruning (Torch-Pruning), then fine-tuning.

Channels are removed group by group: Torch-Pruning traces the generator with an example
input and couples every layer whose channels must shrink together (the depthwise + pointwise
pair of a SepConv, PReLU slopes, and the residual trunk tied by `x + 0.1 * B(x)` and the
global skip). Protected (never pruned on the output side):
- the conv right before each PixelShuffle: its out-channels are s^2 x (next width), laid out
  in groups that PixelShuffle reorders, which Torch-Pruning does not model;
- every conv producing the 3 RGB channels (final conv, frozen mean shifts);
- in Fourier generators, the FFC blocks (they split channels at a fixed index and carry
  complex FFT weights) and therefore the trunk width they read.

    lightsr prune --checkpoint runs/student/net_g_latest.pth --importance lamp --ratio 0.5 \
        --finetune-steps 2000 --out runs/student/pruned.pth
    lightsr prune configs/prune_x4.yml
"""
import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp

from torch import nn

from lightsr.complexity import count_macs, count_params
from lightsr.train import load_config
from lightsr.recovery import finetune_to_reference, finetune_with_config, training_images

IMPORTANCES = ("random", "l1", "lamp")
EXAMPLE_SIZE = (24, 24)  # LR example input for tracing; any size >= 2 works
COST_SIZE = (180, 320)  # MACs are reported for one 320x180 LR frame


# --------------------------------------------------------------------------- protection
class _FourierStandIn(nn.Conv2d):
    """1x1 conv standing in for an FFC while Torch-Pruning traces the generator.

    Torch-Pruning cannot trace through FFTs and complex weights (its reshape index mapping
    fails); the FFC is protected anyway, so a channel-preserving stand-in with the same
    input/output coupling gives the same dependency graph and the FFC is put back after."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 1)


def _ffc_width(ffc: nn.Module) -> int:
    """FFC width: its local + global input channels (= its output channels)."""
    def first_conv(m):
        return next(c for c in m.modules() if isinstance(c, nn.Conv2d))
    return first_conv(ffc.convl2l).in_channels + first_conv(ffc.convg2l).in_channels


@contextlib.contextmanager
def fourier_blocks_swapped(net: nn.Module):
    """Replace every FFC by a `_FourierStandIn` (yielded), restore them on exit."""
    swapped = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if child in _fourier_blocks(net):
                stand_in = _FourierStandIn(_ffc_width(child)).to(next(child.parameters()))
                setattr(parent, name, stand_in)
                swapped.append((parent, name, child))
    try:
        yield [getattr(p, n) for p, n, _ in swapped]
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _fourier_blocks(net: nn.Module) -> list[nn.Module]:
    from lightsr.archs.fourier_arch import FFC  # noqa: PLC0415

    return [m for m in net.modules() if isinstance(m, FFC)]


def _execution_order(net: nn.Module, example: torch.Tensor,
                     kinds: tuple = (nn.Conv2d, nn.PixelShuffle)) -> list[nn.Module]:
    """The modules of `kinds` in the order one forward pass of `example` runs them."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in net.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
    return order


def protected_layers(net: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Layers whose output channels must keep their number (see the module docstring)."""
    order = _execution_order(net, example)
    protected = []
    for i, m in enumerate(order):
        if isinstance(m, nn.PixelShuffle):
            before = [c for c in order[:i] if isinstance(c, nn.Conv2d)]
            if before:
                protected.append(before[-1])
    protected += [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 3]
    ffcs = _fourier_blocks(net)
    if ffcs:
        protected += ffcs
        first = next(c for c in order if isinstance(c, nn.Conv2d) and c.out_channels != 3)
        protected.append(_trunk_root(net, first))
    return list({id(m): m for m in protected}.values())


def _trunk_root(net: nn.Module, first_conv: nn.Conv2d) -> nn.Module:
    """The conv that sets the trunk width: the pointwise after the first depthwise conv."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels != 3]
    if first_conv.groups > 1 and first_conv.groups == first_conv.in_channels:
        return convs[convs.index(first_conv) + 1]
    return first_conv


# --------------------------------------------------------------------------- pruning
def make_importance(name: str):
    if name == "random":
        return tp.importance.RandomImportance()
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    raise ValueError(f"unknown importance '{name}'; choose one of {IMPORTANCES}")


def cost(net: nn.Module) -> dict:
    return {"params": count_params(net), "macs_320x180": count_macs(net, *COST_SIZE)}


def prune_generator(net: nn.Module, importance: str, ratio: float, seed: int = 0,
                    tail: bool = False) -> dict:
    """Prune `net` in place to remove `ratio` of the channels of every prunable group.

    L1 and random prune each group by the same ratio; LAMP ranks channels globally
    (layer-adaptive, as LAMP is meant to be used), capped at 90% per layer. With `tail`, the
    post-PixelShuffle channels of the upsampler are pruned too (`prune_upsampling_tail`),
    where most MACs of the published x4 upsampler are. Returns the cost before / after.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--ratio must be in [0, 1), got {ratio}")
    torch.manual_seed(seed)
    net.eval()
    param = next(net.parameters())
    example = torch.rand(1, 3, *EXAMPLE_SIZE, dtype=param.dtype, device=param.device) * 255
    before = cost(net)
    ignored = protected_layers(net, example)
    with fourier_blocks_swapped(net) as stand_ins:
        pruner = tp.pruner.BasePruner(
            net, example, importance=make_importance(importance), pruning_ratio=ratio,
            global_pruning=importance == "lamp", max_pruning_ratio=0.9,
            ignored_layers=ignored + stand_ins)
        pruner.step()
    if tail:
        prune_upsampling_tail(net, importance, ratio, seed)
    with torch.no_grad():
        out = net(example)
    if not torch.isfinite(out).all():
        raise RuntimeError("the pruned generator produces non-finite values")
    return {"before": before, "after": cost(net)}


# --------------------------------------------------------------------------- upsampling tail
def _shuffle_tails(net: nn.Module, example: torch.Tensor) -> list[tuple]:
    """(pre_conv, r, prelu | None, depthwise, pointwise) for each PixelShuffle(r) whose output
    feeds [PReLU ->] SepConv: the feature channels of the upsampling tail."""
    order = _execution_order(net, example, (nn.Conv2d, nn.PixelShuffle, nn.PReLU))
    tails = []
    for i, m in enumerate(order):
        if not isinstance(m, nn.PixelShuffle) or i == 0 or not isinstance(order[i - 1], nn.Conv2d):
            continue
        pre, r = order[i - 1], m.upscale_factor
        channels = pre.out_channels // (r * r)
        rest = order[i + 1:i + 4]
        prelu = rest.pop(0) if rest and isinstance(rest[0], nn.PReLU) else None
        if len(rest) >= 2 and isinstance(rest[0], nn.Conv2d) and isinstance(rest[1], nn.Conv2d) \
                and rest[0].groups == rest[0].in_channels == channels and rest[1].in_channels == channels \
                and (prelu is None or prelu.num_parameters == channels):
            tails.append((pre, r, prelu, rest[0], rest[1]))
    return tails


def prune_upsampling_tail(net: nn.Module, importance: str, ratio: float, seed: int = 0) -> int:
    """Prune the post-PixelShuffle channels that Torch-Pruning cannot see: output channel c of
    PixelShuffle(r) is conv channels c*r^2 .. c*r^2 + r^2 - 1, so each removed channel removes
    that whole group from the conv before the shuffle, its PReLU slope, the next depthwise
    channel and the next pointwise input. Ranked by the group's L1 norm (random for 'random').
    Returns the number of channels removed."""
    gen = torch.Generator().manual_seed(seed)
    param = next(net.parameters())
    example = torch.rand(1, 3, *EXAMPLE_SIZE, dtype=param.dtype, device=param.device) * 255
    removed = 0
    for pre, r, prelu, depthwise, pointwise in _shuffle_tails(net, example):
        channels = pre.out_channels // (r * r)
        drop_n = int(channels * ratio)
        if drop_n == 0:
            continue
        if importance == "random":
            score = torch.rand(channels, generator=gen)
        else:
            score = pre.weight.detach().abs().reshape(channels, -1).sum(1).cpu()
        drop = sorted(score.argsort()[:drop_n].tolist())
        tp.prune_conv_out_channels(pre, [c * r * r + k for c in drop for k in range(r * r)])
        if prelu is not None:
            tp.prune_prelu_out_channels(prelu, drop)
        tp.prune_depthwise_conv_out_channels(depthwise, drop)
        tp.prune_conv_in_channels(pointwise, drop)
        removed += drop_n
    return removed


# --------------------------------------------------------------------------- checkpoints
#: What a pruned generator's file keeps of each module's `__dict__` (from `tp.state_dict`):
#: its parameters and buffers, and plain attributes (channel counts, kernel sizes, flags).
#: Hooks, child modules and anything else are left out, so the file holds tensors and plain
#: values only and loads with `torch.load(weights_only=True)`: no pickled classes.
_PLAIN = (bool, int, float, str, tuple, type(None))


def pruned_state(net: nn.Module) -> dict:
    """Torch-Pruning's `tp.state_dict` of a pruned generator, reduced to tensors and plain
    values (`_PLAIN`): with the generator's network options, `rebuild_pruned` makes it again."""
    full = tp.state_dict(net)
    kept = {}
    for name, entries in full["full_state_dict"].items():
        kept[name] = {k: dict(v) for k, v in entries.items() if k in ("_parameters", "_buffers")}
        kept[name].update({k: v for k, v in entries.items()
                           if not k.startswith("_") and isinstance(v, _PLAIN)})
    attributions = {name: {k: v for k, v in attrs.items() if isinstance(v, _PLAIN)}
                    for name, attrs in full["attributions"].items()}
    return {"full_state_dict": kept, "attributions": attributions}


def rebuild_pruned(opt: dict, state: dict) -> nn.Module:
    """The generator of `opt` (`build_network`) with a `pruned_state`'s shapes and weights
    (`tp.load_state_dict`), in eval mode."""
    from lightsr.archs import build_network  # noqa: PLC0415

    net = build_network(opt)
    names = {name for name, _ in net.named_modules()}
    saved = set(state["full_state_dict"])
    if names != saved:
        raise ValueError(f"the pruned state does not fit the network options {opt}: modules "
                         f"{sorted(saved - names)[:5]} are not in that network and "
                         f"{sorted(names - saved)[:5]} are not in the state; give the options the "
                         "generator was built with (its checkpoint's 'opt')")
    tp.load_state_dict(net, state)
    return net.eval()


def read_checkpoint(path: Path) -> dict:
    """A lightsr checkpoint. A pruned generator is its `pruned_state` under 'pruned'; older
    files pickled the whole module under 'module', which needs full unpickling (trusted files
    only)."""
    if not Path(path).is_file():
        raise SystemExit(f"lightsr: checkpoint {path} not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or not (isinstance(ckpt.get("module"), nn.Module) or "pruned" in ckpt
                                          or "params" in ckpt or "params_ema" in ckpt):
        raise SystemExit(f"lightsr: {path} is neither a lightsr training checkpoint "
                         "({'params', 'params_ema', 'opt'}) nor a pruned generator ({'pruned', 'opt'})")
    return ckpt


def generator_from(ckpt: dict, network_opt: dict | None = None) -> tuple[nn.Module, dict]:
    """The generator of a checkpoint read by `read_checkpoint`, and its network options."""
    if "pruned" in ckpt:
        opt = ckpt.get("opt") or network_opt
        if not opt:
            raise SystemExit("lightsr: a pruned generator's file needs its 'opt' (network_g)")
        return rebuild_pruned(opt, ckpt["pruned"]), opt
    if isinstance(ckpt.get("module"), nn.Module):
        return ckpt["module"], ckpt.get("opt") or {}
    opt = ckpt.get("opt") or network_opt
    if not opt:
        raise SystemExit("lightsr: the checkpoint has no 'opt'; give network_g in a config")
    from lightsr.archs import build_network  # noqa: PLC0415

    net = build_network(opt)
    net.load_state_dict(ckpt.get("params_ema") or ckpt["params"])
    return net, opt


def load_generator(path: Path, network_opt: dict | None = None) -> tuple[nn.Module, dict]:
    """A generator from a training checkpoint (`params_ema` / `params` + `opt`) or a whole module."""
    return generator_from(read_checkpoint(path), network_opt)


def save_pruned(path: Path, net: nn.Module, opt: dict, info: dict) -> None:
    """Save a pruned generator as its network options and `pruned_state` (shapes changed: a
    plain state dict would not load into `build_network(opt)`), with the description `lightsr
    export` puts in the bundle manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    before, after = info.get("before", {}), info.get("after", {})
    description = (f"structured pruning ({info.get('importance')}, ratio {info.get('ratio')}"
                   f"{', upsampling tail too' if info.get('tail') else ''}): params "
                   f"{before.get('params')} -> {after.get('params')}, MACs@320x180 "
                   f"{before.get('macs_320x180')} -> {after.get('macs_320x180')}, "
                   f"fine-tuned {info.get('finetune_steps', 0)} steps")
    torch.save({"pruned": pruned_state(net), "opt": opt, "prune": info, "description": description}, path)


# --------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightsr prune", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", type=Path,
                   help="YAML with checkpoint / network_g / prune {importance, ratio, finetune_steps} / train")
    p.add_argument("--checkpoint", type=Path, help="training checkpoint or saved module to prune")
    p.add_argument("--importance", choices=IMPORTANCES, help="channel importance (default l1)")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove per group (default 0.5)")
    p.add_argument("--finetune-steps", type=int, help="fine-tuning steps after pruning (default 0)")
    p.add_argument("--tail", action="store_true", default=None,
                   help="also prune the post-PixelShuffle channels of the upsampler (PixelShuffle-aware)")
    p.add_argument("--images", type=Path, help="photos for the built-in fine-tuning (default: scikit-image's)")
    p.add_argument("--out", type=Path, help="output file (default: next to the checkpoint, *_pruned.pth)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _settings(args) -> dict:
    cfg = load_config(args.config) if args.config else {}
    prune_cfg = cfg.get("prune", {})
    ckpt = args.checkpoint or cfg.get("checkpoint") or cfg.get("path", {}).get("checkpoint")
    if not ckpt:
        raise SystemExit("lightsr prune: give --checkpoint or a config with `checkpoint:`")
    ckpt = Path(ckpt)
    return {
        "config": cfg, "checkpoint": ckpt,
        "importance": args.importance or prune_cfg.get("importance", "l1"),
        "ratio": float(args.ratio if args.ratio is not None else prune_cfg.get("ratio", 0.5)),
        "finetune_steps": int(args.finetune_steps if args.finetune_steps is not None
                              else prune_cfg.get("finetune_steps", 0)),
        "tail": bool(args.tail if args.tail is not None else prune_cfg.get("tail", False)),
        "out": args.out or Path(cfg.get("out", ckpt.with_name(ckpt.stem + "_pruned.pth"))),
    }


def _print_cost(label: str, c: dict) -> None:
    print(f"{label:<7} params {c['params']:>10,}   MACs@320x180 {c['macs_320x180'] / 1e9:8.3f} G")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    s = _settings(args)
    if s["importance"] not in IMPORTANCES:
        raise SystemExit(f"lightsr prune: importance must be one of {IMPORTANCES}, got {s['importance']}")
    net, opt = load_generator(s["checkpoint"], s["config"].get("network_g"))
    reference = copy.deepcopy(net).eval()
    t0 = time.time()
    report = prune_generator(net, s["importance"], s["ratio"], seed=args.seed, tail=s["tail"])
    _print_cost("before", report["before"])
    _print_cost("after", report["after"])
    if s["finetune_steps"] > 0:
        if "train" in s["config"]:
            run_dir = s["out"].with_name(s["out"].stem + "_finetune")
            teacher = None
            if s["config"].get("teacher"):
                from lightsr.distill import load_teacher  # noqa: PLC0415
                teacher = load_teacher(s["config"])  # train.distill_opt: AT / AFD towards it
            net = finetune_with_config(net, s["config"], s["finetune_steps"], run_dir, teacher)
            print(f"fine-tuned {s['finetune_steps']} steps with lightsr.train (run in {run_dir})"
                  + (f", distilled from {s['config']['teacher']['checkpoint']}" if teacher is not None else ""))
        else:
            images = training_images(args.images) if args.images else None
            losses = finetune_to_reference(net, reference, s["finetune_steps"], images, seed=args.seed)
            print(f"fine-tuned {len(losses)} steps (L1 to the unpruned net): "
                  f"loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")
    torch.jit.script(net.eval())  # the element needs TorchScript: fail here, not at export
    info = {**report, "importance": s["importance"], "ratio": s["ratio"], "tail": s["tail"],
            "finetune_steps": s["finetune_steps"], "source": str(s["checkpoint"]),
            "seconds": round(time.time() - t0, 1)}
    save_pruned(s["out"], net, opt, info)
    print(f"saved {s['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
