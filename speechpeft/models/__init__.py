"""Model hosts: one file per backbone. Each registers its target presets and itself (by the
checkpoint's ``config.model_type``) on import; ``load_host`` picks the right one."""

from .host import ASRHost, Segment, load_host, model_type_of, register_host, registered_hosts
from .wav2vec2 import PRESETS as WAV2VEC2_PRESETS
from .wav2vec2 import Wav2Vec2Host, load_wav2vec2
from .whisper import PRESETS as WHISPER_PRESETS
from .whisper import WhisperHost, load_whisper

__all__ = [
    "WAV2VEC2_PRESETS",
    "WHISPER_PRESETS",
    "Wav2Vec2Host",
    "load_wav2vec2",
    "ASRHost",
    "Segment",
    "WhisperHost",
    "load_host",
    "load_whisper",
    "model_type_of",
    "register_host",
    "registered_hosts",
]
