"""Inference: transcription jobs with per-file adapters, long-form decoding and subtitle outputs."""

from .compare import CompareRow, Comparison, compare_adapters
from .inputs import Job, jobs_from_args, read_adapter_map
from .transcribe import TranscribeOptions, TranscribeOutcome, transcribe_files
from .writers import FORMATS, render

__all__ = [
    "CompareRow",
    "Comparison",
    "compare_adapters",
    "FORMATS",
    "Job",
    "TranscribeOptions",
    "TranscribeOutcome",
    "jobs_from_args",
    "read_adapter_map",
    "render",
    "transcribe_files",
]
