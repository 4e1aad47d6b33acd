"""Reference embeddings from resemblyzer's own VoiceEncoder, for tests/unit/test_speaker_encoder_port.py.

speechpeft reads resemblyzer's weights into its own module; this script records what resemblyzer
itself computes on the same clips, so the test can compare the two without installing resemblyzer's
dependencies (librosa, webrtcvad) in CI. Run it in a separate environment:

    python -m venv /tmp/rz && . /tmp/rz/bin/activate
    pip install torch==2.13.0 librosa webrtcvad-wheels soundfile && pip install --no-deps resemblyzer==0.1.4
    python tests/data/speakers/make_resemblyzer_reference.py

Each clip gets only resemblyzer's volume normalisation (-30 dBFS, raise only), the step speechpeft's
port also takes; its webrtcvad silence trimming is left out on both sides.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import soundfile as sf
from resemblyzer import VoiceEncoder
from resemblyzer.audio import normalize_volume

DATA = Path(__file__).resolve().parents[1]
CLIPS = sorted(DATA.glob("librivox/*.flac")) + sorted(DATA.glob("speakers/*.flac"))


def main() -> None:
    encoder = VoiceEncoder("cpu", verbose=False)
    out = {"resemblyzer": version("resemblyzer"), "librosa": version("librosa"), "embeddings": {}}
    for path in CLIPS:
        wav, rate = sf.read(path, dtype="float32")
        assert rate == 16_000 and wav.ndim == 1, (path, rate, wav.shape)
        wav = normalize_volume(wav, -30, increase_only=True)
        emb = encoder.embed_utterance(wav)
        out["embeddings"][str(path.relative_to(DATA))] = [round(float(v), 7) for v in np.asarray(emb)]
    target = Path(__file__).with_name("resemblyzer_reference.json")
    target.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target} ({len(CLIPS)} clips)")


if __name__ == "__main__":
    main()
