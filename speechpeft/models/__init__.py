"""Model hosts: one file per backbone. Each registers its target presets and itself (by the
checkpoint's ``config.model_type``) on import; ``load_host`` picks the right one."""

from .decoding import DecodeOptions
from .host import (
    ASRHost,
    Segment,
    Transcript,
    Word,
    load_host,
    load_pretrain_host,
    model_type_of,
    register_host,
    register_pretrain_host,
    registered_hosts,
)
from .wav2vec2 import PRESETS as WAV2VEC2_PRESETS
from .wav2vec2 import Wav2Vec2Host, load_wav2vec2
from .wav2vec2_pretrain import PretrainSettings, Wav2Vec2PretrainHost
from .whisper import PRESETS as WHISPER_PRESETS
from .whisper import WhisperHost, load_whisper, whisper_languages

__all__ = [
    "WAV2VEC2_PRESETS",
    "WHISPER_PRESETS",
    "Wav2Vec2Host",
    "load_wav2vec2",
    "ASRHost",
    "DecodeOptions",
    "Transcript",
    "Word",
    "PretrainSettings",
    "Wav2Vec2PretrainHost",
    "Segment",
    "WhisperHost",
    "load_host",
    "load_pretrain_host",
    "load_whisper",
    "model_type_of",
    "register_host",
    "register_pretrain_host",
    "registered_hosts",
    "whisper_languages",
]
