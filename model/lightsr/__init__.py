# SPDX-License-Identifier: MPL-2.0
"""Light F2SRGAN pipeline for the lightsrscale GStreamer element."""
__version__ = "0.1.0"
