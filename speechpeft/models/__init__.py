"""Model hosts: one file per backbone. Each registers its target presets on import."""

from .whisper import PRESETS as WHISPER_PRESETS
from .whisper import Segment, WhisperHost, load_whisper

__all__ = ["WHISPER_PRESETS", "Segment", "WhisperHost", "load_whisper"]
