"""edge_rt.devices: device profiles and execution backends (installed from the top-level ``devices/``).

Today: a description of the local CPU (cores, memory, the SIMD kernels the core selected). Device
profiles (JSON), ``edge-rt profile`` and the ONNX Runtime NPU backends land here in later issues.
"""

from __future__ import annotations

from .cpu import describe_cpu

__all__ = ["describe_cpu"]
