"""Check untrusted model bytes before onnxruntime sees them.

The profiler server runs models sent over the network, so a model must parse, pass
`onnx.checker`, use only operator domains onnxruntime implements itself (no custom-op
libraries are ever loaded), and carry its weights inline: external-data references would make
onnxruntime open arbitrary files on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from google.protobuf.message import DecodeError

from hwprofiler.errors import InvalidModelError

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _check_safe(model: onnx.ModelProto) -> None:
    allowed = ALLOWED_DOMAINS | {f.domain for f in model.functions}
    for graph in _graphs(model.graph):
        for init in list(graph.initializer) + [s.values for s in graph.sparse_initializer]:
            if init.data_location == onnx.TensorProto.EXTERNAL or len(init.external_data):
                raise InvalidModelError(f"initializer {init.name!r} uses external data; send a model with its weights inline")
        for node in graph.node:
            if node.domain not in allowed:
                raise InvalidModelError(
                    f"node {node.name or node.op_type!r} uses operator domain {node.domain!r}; "
                    f"only {sorted(ALLOWED_DOMAINS)} are accepted (custom-op libraries are never loaded)"
                )


def parse_model(data: bytes) -> onnx.ModelProto:
    """Parse and check ONNX bytes; raise `InvalidModelError` with onnx's own message if they are bad."""
    if not data:
        raise InvalidModelError("empty body: expected the bytes of an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError) as e:
        raise InvalidModelError(f"not an ONNX model: {e}") from None
    _check_safe(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise InvalidModelError(f"onnx.checker rejected the model: {str(e).strip()}") from None
    return model
