"""Errors raised by hwprofiler.

They are plain `Exception` subclasses (hwprofiler must not import hilprune), so the core
package can catch them and print their one-line message.
"""

from __future__ import annotations


class DeviceError(Exception):
    """A device that cannot be found, loaded, reached or used; the message says how to fix it."""


class InvalidModelError(ValueError):
    """Bytes that are not a usable ONNX model (bad protobuf, checker failure, unsafe content)."""


class KernelError(ValueError):
    """A kernel spec or model node that the kernel lookup table cannot price."""
