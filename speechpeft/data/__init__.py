"""Data: manifests, audio loading, batching. Imports no model code."""

from .audio import AudioError, audio_duration, check_audio_file, load_audio
from .batching import bucketed_batches, sorted_batches
from .manifest import ManifestError, Utterance, read_audio_set, read_manifest

__all__ = [
    "AudioError",
    "ManifestError",
    "audio_duration",
    "Utterance",
    "bucketed_batches",
    "check_audio_file",
    "load_audio",
    "read_audio_set",
    "read_manifest",
    "sorted_batches",
]
