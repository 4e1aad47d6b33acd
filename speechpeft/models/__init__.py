"""Model hosts: one file per backbone. Each registers its target presets on import."""

from .whisper import PRESETS as WHISPER_PRESETS
from .whisper import WhisperHost, load_whisper

__all__ = ["WHISPER_PRESETS", "WhisperHost", "load_whisper"]
