# SPDX-License-Identifier: MPL-2.0
"""The architecture registry: `@register_arch` maps a class name to the class."""
ARCH_REGISTRY: dict = {}


def register_arch(cls):
    if cls.__name__ in ARCH_REGISTRY:
        raise ValueError(f"architecture '{cls.__name__}' is registered twice")
    ARCH_REGISTRY[cls.__name__] = cls
    return cls
