"""Build the bad-input corpus of tests/unit/test_bad_inputs.py (deterministic; the output is committed).

    python tests/data/bad/make_bad.py

Audio is 0.6 s of a two-tone signal unless the case says otherwise. Manifests point at files in
this folder. The two-hour file is not committed: the test writes it (silence compresses to a few
kilobytes of FLAC).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent


def tone(seconds: float = 0.6, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)).astype(np.float32)
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else mono


def line(audio: str, text: str = "你好", duration: float = 0.6, **extra) -> str:
    return json.dumps({"audio_filepath": audio, "text": text, "duration": duration, "language": "zh", **extra},
                      ensure_ascii=False)  # fmt: skip


def main() -> None:
    sf.write(HERE / "good.wav", tone(), 16_000)
    # broken files
    sf.write(HERE / "full.flac", tone(1.0), 16_000)
    data = (HERE / "full.flac").read_bytes()
    (HERE / "truncated.flac").write_bytes(data[: len(data) // 3])
    (HERE / "full.flac").unlink()
    (HERE / "image.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # wrong extension: a PNG
    (HERE / "zero-bytes.wav").write_bytes(b"")
    sf.write(HERE / "zero-samples.wav", np.zeros(0, np.float32), 16_000)
    nan = tone()
    nan[100:110] = np.nan
    sf.write(HERE / "nan.wav", nan, 16_000, subtype="FLOAT")
    inf = tone()
    inf[5] = np.inf
    sf.write(HERE / "inf.wav", inf, 16_000, subtype="FLOAT")
    # odd but valid: each must simply work
    sf.write(HERE / "rate-8k.wav", tone(rate=8_000), 8_000)
    sf.write(HERE / "rate-44k.wav", tone(rate=44_100), 44_100)
    sf.write(HERE / "rate-48k.flac", tone(rate=48_000), 48_000)
    sf.write(HERE / "six-channels.wav", tone(channels=6), 16_000)
    sf.write(HERE / "silence.wav", np.zeros(9_600, np.float32), 16_000)
    sf.write(HERE / "clipped.wav", np.clip(tone() * 8, -1, 1), 16_000)
    # manifests
    good = line("good.wav")
    manifests = {
        "bom.jsonl": "\ufeff" + good + "\n" + good + "\n",  # valid: editors write BOMs
        "crlf.jsonl": good + "\r\n" + good + "\r\n",  # valid
        "trailing-comma.jsonl": good + "\n" + good[:-1] + ",}\n",
        "duplicate-keys.jsonl": good + "\n" + good[:-1] + ', "text": "再见"}\n',
        "missing-text.jsonl": good + "\n" + json.dumps({"audio_filepath": "good.wav", "duration": 0.6}) + "\n",
        "dotdot.jsonl": good + "\n" + line("../bad/nowhere/missing.wav") + "\n",
        "bad-audio.jsonl": good + "\n" + line("truncated.flac") + "\n",
    }
    for name, text in manifests.items():
        (HERE / name).write_text(text, encoding="utf-8", newline="")
    (HERE / "not-utf8.jsonl").write_bytes(good.encode() + b"\n" + line("good.wav").encode()[:-3] + b'\xff\xfe"}\n')
    print(f"wrote {len(list(HERE.iterdir())) - 1} files to {HERE}")


if __name__ == "__main__":
    main()
