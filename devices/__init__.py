"""edge_rt.devices: device profiles and execution backends (installed from the top-level ``devices/``).

A description of the local CPU (cores, memory, the SIMD kernels the core selected); device profiles:
their schema and validator (``profile_schema``), the measurements of ``edge-rt profile`` (``profiler``) and
the shipped profiles (``profiles/*.json``); the QNN HTP backend (``qnn_htp``).
"""

from __future__ import annotations

from .cpu import describe_cpu

__all__ = ["describe_cpu"]
