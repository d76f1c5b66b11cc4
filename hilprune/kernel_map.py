"""From a policy to the kernels the device will run, without surgery.

Pruning never changes a graph's structure, only channel counts. So the dense model's fused
kernels (hwprofiler.device_kernels on its ONNX export: the device's runtime decides what fuses)
are computed once, and each kernel's
input and output channels are tied to the prunable group that sets them. To find those ties,
each group is pruned alone once and we record which kernels changed. After that, the kernel
list for any policy is a lookup. A LUT predicts latency for a policy in well under a
millisecond, so an RL environment can call it at every step.

A mixed-precision policy (some groups INT8) changes the structure too, but only with its pattern
of marks: `MixedKernelMap` keeps one structure per pattern and takes the channel ties from the
float map by node and tensor name.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from hwprofiler import DeviceSpec, KernelSpec, device_kernel_nodes, device_kernels, kernels_from_onnx

from .export import to_onnx_bytes
from .policy import channels_after
from .surgery import Surgeon

Channels = dict[int, int]  # group index -> weight: channels = dense + sum(weight * (kept - dense))


@dataclass(frozen=True)
class _Tie:
    cin: Channels  # how the kernel's input channels follow the groups
    cout: Channels  # ... its output channels
    depthwise: bool  # groups == cin == cout: the group count follows the channels

    @classmethod
    def of(cls, k: KernelSpec, cin: Channels, cout: Channels) -> _Tie:
        return cls(cin, cout, k.op == "conv" and k.groups > 1 and k.groups == k.cin == k.cout)


class KernelMap:
    """Maps per-group kept channels to the kernel list of the pruned model.

    A kernel's channel count is linear in the groups' kept channels: one group after a plain
    conv or a residual add, the sum of the branches after a concat, channels x H x W after a
    flatten. Each group is pruned alone once to read off its integer weight on every kernel.
    """

    def __init__(
        self,
        surgeon: Surgeon,
        batch: int = 1,
        device: DeviceSpec | str | None = None,
        transform: Callable[[bytes], bytes] | None = None,
        dense_onnx: bytes | None = None,
    ) -> None:
        """`dense_onnx`: the surgeon's dense model already exported at `batch`, when the caller has it
        (the export costs seconds on a deep net)."""
        self.groups = surgeon.groups
        self.input_shape = tuple(surgeon.example.shape[1:])
        self.device = device  # whose runtime's fusions the kernels are (None: onnxruntime's)
        # what becomes of each exported graph before it is priced (e.g. its INT8 form: a fixed
        # precision keeps the graph's structure, so the channel ties hold for it too)
        self.transform = transform
        self.batch = batch
        # the float graph, before `transform`
        self.dense_onnx = dense_onnx if dense_onnx is not None else to_onnx_bytes(surgeon.dense, self.input_shape, batch)
        self.dense = self._kernels(self.dense_onnx, batch)
        cin: list[Channels] = [{} for _ in self.dense]
        cout: list[Channels] = [{} for _ in self.dense]
        for gi, g in enumerate(self.groups):
            if g.channels < 2:
                continue
            probe = {h.name: 0.0 for h in self.groups} | {g.name: 0.5}
            policy = surgeon.policy(probe, max_ratio=1.0)
            removed = g.channels - policy.groups[gi].channels_after
            pruned = surgeon.apply(policy, count=False).model
            kernels = self._kernels(to_onnx_bytes(pruned, self.input_shape, batch), batch)
            if len(kernels) != len(self.dense):
                raise RuntimeError(
                    f"pruning group {g.name} changed the kernel graph ({len(self.dense)} -> {len(kernels)} kernels)"
                )
            for i, (k0, k1) in enumerate(zip(self.dense, kernels)):
                for field, ties in (("cin", cin), ("cout", cout)):
                    delta = getattr(k0, field) - getattr(k1, field)
                    if delta:
                        if delta % removed:
                            raise RuntimeError(f"kernel {i} ({k0.op}) {field} does not follow group {g.name} linearly")
                        ties[i][gi] = delta // removed
        self.ties = [_Tie.of(k, cin[i], cout[i]) for i, k in enumerate(self.dense)]

    def _kernels(self, data: bytes, batch: int) -> list[KernelSpec]:
        if self.transform is not None:
            data = self.transform(data)
        if self.device is None:
            return kernels_from_onnx(data, batch=batch)
        return device_kernels(data, self.device, batch=batch)

    def _count(self, dense: int, ties: Channels, kept: Sequence[int]) -> int:
        return dense + sum(w * (kept[gi] - self.groups[gi].channels) for gi, w in ties.items())

    def _resized(self, k: KernelSpec, tie: _Tie, kept: Sequence[int]) -> KernelSpec:
        """Dense kernel `k` with the channels its `tie` gives when group i keeps kept[i]."""
        cin, cout = self._count(k.cin, tie.cin, kept), self._count(k.cout, tie.cout, kept)
        return replace(k, cin=cin, cout=cout, groups=cin if tie.depthwise else k.groups)

    def kernels(self, kept: Sequence[int]) -> list[KernelSpec]:
        """Kernels of the model whose group i keeps kept[i] channels."""
        return [self._resized(k, tie, kept) for k, tie in zip(self.dense, self.ties)]

    def kept(self, ratios: Mapping[str, float] | Sequence[float], round_to: int = 1) -> list[int]:
        """Kept channels per group for requested ratios (same rounding as the policy)."""
        values = [ratios[g.name] for g in self.groups] if isinstance(ratios, Mapping) else list(ratios)
        return [channels_after(g.channels, r, round_to) for g, r in zip(self.groups, values)]

    def kernels_for(self, ratios: Mapping[str, float] | Sequence[float], round_to: int = 1) -> list[KernelSpec]:
        return self.kernels(self.kept(ratios, round_to))

    def reachable(self, grid: Sequence[float], round_to: int = 1) -> list[KernelSpec]:
        """Every distinct kernel that a policy on `grid` (ratios per group) can produce."""
        seen: dict[str, KernelSpec] = {}
        dense_kept = [g.channels for g in self.groups]
        for i, tie in enumerate(self.ties):
            involved = sorted(set(tie.cin) | set(tie.cout))
            options = [sorted({channels_after(self.groups[gi].channels, float(r), round_to) for r in grid}) for gi in involved]
            for combo in itertools.product(*options):
                kept = list(dense_kept)
                for gi, c in zip(involved, combo):
                    kept[gi] = c
                spec = self._resized(self.dense[i], tie, kept)
                seen.setdefault(spec.key(), spec)
        return list(seen.values())


class MixedKernelMap:
    """Kernels of a policy's mixed-precision graph (some groups INT8, some fp32) without surgery.

    Which nodes are quantized changes the graph's structure (quantize and dequantize kernels at
    every fp32/INT8 border, adds that no longer fuse into a float conv), so each pattern of marks
    has its own kernel list: `structure(fp32_groups)` quantizes the *dense* float graph with
    those groups left in float, once per pattern (a few hundred patterns are kept). The channel
    ties come from the float map by name: quantization keeps every float node's and tensor's
    name, so a kernel's input and output tensors, traced back through the quantize/dequantize
    nodes, are tensors of the float graph whose channels the float map already ties to groups.
    Local devices only (a remote device does not name a kernel's nodes); the evaluator checks it
    against real exports before using it.
    """

    PATTERNS = 256

    def __init__(self, base: KernelMap, structure: Callable[[frozenset[str]], bytes]) -> None:
        if base.transform is not None or base.device is None:
            raise RuntimeError("a mixed kernel map follows the float kernel map of a device")
        self.base = base
        self.structure = structure
        labelled = device_kernel_nodes(base.dense_onnx, base.device, batch=base.batch)
        if [k for k, _ in labelled] != base.dense:
            raise RuntimeError("the float graph's named kernels differ from the kernel map's")
        graph = onnx.load_from_string(base.dense_onnx).graph
        nodes = {n.name: n for n in graph.node}
        # tensor name -> its channels' ties: a kernel's lead input carries its input channels, every
        # output of its nodes its output channels (a fused chain keeps the conv's output channels)
        self.tensor_ties: dict[str, Channels] = {i.name: {} for i in graph.input}
        for (_, names), tie in zip(labelled, base.ties):
            lead = nodes[names[0]]
            if lead.input:
                self.tensor_ties.setdefault(lead.input[0], tie.cin)
            for name in names:
                for out in nodes[name].output:
                    self.tensor_ties[out] = tie.cout
        self._patterns: OrderedDict[frozenset[str], list[tuple[KernelSpec, _Tie]]] = OrderedDict()

    def _tied(self, fp32_groups: frozenset[str]) -> list[tuple[KernelSpec, _Tie]]:
        hit = self._patterns.get(fp32_groups)
        if hit is not None:
            self._patterns.move_to_end(fp32_groups)
            return hit
        data = self.structure(fp32_groups)
        graph = onnx.load_from_string(data).graph
        nodes = {n.name: n for n in graph.node}
        qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        back = {n.output[0]: n.input[0] for n in qdq}  # a Q/DQ output -> the tensor it (de)quantizes
        ahead = {n.input[0]: n.output[0] for n in qdq}  # ... and forward (a graph output renamed before its Q/DQ)

        def ties_of(tensor: str) -> Channels:
            for step in (back, ahead):  # the same channels along a chain of quantize/dequantize nodes
                t, seen = tensor, set()
                while t not in self.tensor_ties and t in step and t not in seen:
                    seen.add(t)
                    t = step[t]
                if t in self.tensor_ties:
                    return self.tensor_ties[t]
            raise RuntimeError(f"tensor {tensor!r} of the mixed graph is not one of the float graph's")

        out = []
        for k, names in device_kernel_nodes(data, self.base.device, batch=self.base.batch):
            lead = nodes[names[0]]
            cin, cout = ties_of(lead.input[0]), ties_of(lead.output[0])
            if k.op in ("quantize", "dequantize"):
                cout = cin
            if k.op == "node" and (cin or cout):
                raise RuntimeError(f"kernel {lead.name} ({k.onnx_op}) has shapes a kernel map cannot follow")
            out.append((k, _Tie.of(k, cin, cout)))
        self._patterns[fp32_groups] = out
        if len(self._patterns) > self.PATTERNS:
            self._patterns.popitem(last=False)
        return out

    def kernels(self, kept: Sequence[int], fp32_groups: Iterable[str]) -> list[KernelSpec]:
        """Kernels of the model whose group i keeps kept[i] channels, quantized but for `fp32_groups`."""
        return [self.base._resized(k, tie, kept) for k, tie in self._tied(frozenset(fp32_groups))]


def ratio_grid(max_ratio: float, step: float) -> list[float]:
    """0, step, 2*step, ... up to max_ratio."""
    return [round(float(v), 6) for v in np.arange(0.0, max_ratio + 1e-9, step)]
