"""ONNX export of dense and pruned models, verified against torch."""

from .onnx_export import OPSET, TOLERANCE, ExportResult, export_onnx, ort_session, to_onnx_bytes, verify_onnx

__all__ = ["OPSET", "TOLERANCE", "ExportResult", "export_onnx", "ort_session", "to_onnx_bytes", "verify_onnx"]
