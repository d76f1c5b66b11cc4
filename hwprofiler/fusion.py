"""The fused kernels a model runs as on a given device: its runtime decides which nodes fuse.

onnxruntime and the simulated CPU group nodes by fixed rules (`onnx_kernels.onnxruntime_groups`);
OpenVINO's fusions are read from the model it compiled (`runtimes.ov_fusion`). A remote device
is asked (POST /device_kernels), since only the device has its runtime. Everything that prices
a policy by kernels (the LUT, the predictor, the kernel map) takes its kernels from here, so it
needs no runtime-specific code.
"""

from __future__ import annotations

import os
from functools import partial

import onnx

from hwprofiler.devices import DeviceSpec, load_device
from hwprofiler.errors import DeviceError
from hwprofiler.kernels import KernelSpec
from hwprofiler.measure import model_bytes
from hwprofiler.onnx_kernels import kernel_nodes_from_onnx, kernels_from_onnx
from hwprofiler.runtimes import get_runtime


def device_kernels(
    model: onnx.ModelProto | bytes | str | os.PathLike[str], device: DeviceSpec | str, *, batch: int | None = None
) -> list[KernelSpec]:
    """The kernels `device` runs `model` as, in execution order.

    A free leading input dimension is set to `batch` (default: the device's batch). Raises
    `KernelError` naming a node the lookup table cannot price.
    """
    spec = load_device(device)
    if spec.is_remote:
        from hwprofiler.client import client_for

        return client_for(spec).device_kernels(model_bytes(model), batch)
    runtime = get_runtime(spec.runtime)
    return kernels_from_onnx(model, batch=batch or spec.batch, grouping=partial(runtime.fused_groups, spec=spec))


def device_kernel_nodes(
    model: onnx.ModelProto | bytes | str | os.PathLike[str], device: DeviceSpec | str, *, batch: int | None = None
) -> list[tuple[KernelSpec, tuple[str, ...]]]:
    """`device_kernels`, each kernel with the names of the nodes it runs (lead node first). Local
    devices only: a remote device's server answers kernels, not node names."""
    spec = load_device(device)
    if spec.is_remote:
        raise DeviceError(f"device {spec.name} is remote: its server does not name the nodes of each kernel")
    runtime = get_runtime(spec.runtime)
    return kernel_nodes_from_onnx(model, batch=batch or spec.batch, grouping=partial(runtime.fused_groups, spec=spec))
