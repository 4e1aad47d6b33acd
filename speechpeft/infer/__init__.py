"""Inference: transcription jobs with per-file adapters, long-form decoding and subtitle outputs."""

from .inputs import Job, jobs_from_args, read_adapter_map
from .transcribe import TranscribeOptions, TranscribeOutcome, transcribe_files
from .writers import FORMATS, render

__all__ = [
    "FORMATS",
    "Job",
    "TranscribeOptions",
    "TranscribeOutcome",
    "jobs_from_args",
    "read_adapter_map",
    "render",
    "transcribe_files",
]
