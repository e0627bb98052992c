# SPDX-License-Identifier: MPL-2.0
"""Network architectures, BasicSR style: one architecture per `*_arch.py` file, a registry,
and `build_network(opt)` building a network from an options dict such as
`{'type': 'F2SRGANGenerator', 'scale': 4, 'num_blocks': 16, 'fourier': True}`.
"""
import copy

from lightsr.archs.registry import ARCH_REGISTRY, register_arch

# Importing the arch modules fills the registry.
from lightsr.archs import discriminator_arch, f2srgan_arch  # noqa: F401,E402

__all__ = ["ARCH_REGISTRY", "register_arch", "build_network"]


def build_network(opt: dict):
    """Build the registered network named by `opt['type']` with the remaining options."""
    opt = copy.deepcopy(dict(opt))
    if "type" not in opt:
        raise ValueError(f"network options need a 'type' (one of {sorted(ARCH_REGISTRY)}), "
                         f"got {sorted(opt)}")
    name = opt.pop("type")
    if name not in ARCH_REGISTRY:
        raise ValueError(f"unknown network type '{name}'; registered: {sorted(ARCH_REGISTRY)}")
    return ARCH_REGISTRY[name](**opt)
