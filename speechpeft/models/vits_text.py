"""Text front ends of VITS voices: text -> the ids the text encoder reads.

Two kinds of voice folder exist:

- transformers' (MMS and friends): a ``vocab.json`` read by ``VitsTokenizer``, characters or
  uroman'd letters with a blank between them;
- Piper's: a ``phonemes.json`` whose ``phoneme_id_map`` maps each espeak-ng IPA codepoint to an
  id. The text is phonemized by espeak-ng (through the ``phonemizer`` binding, which keeps
  punctuation as Piper does), then wrapped as BOS, pad, then each phoneme followed by pad, then EOS.

Both raise one-line errors for text they would otherwise mangle silently.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from ..errors import SpeechPeftError

PHONEMES_FILE = "phonemes.json"
_FLAG = re.compile(r"\(([a-z]{2,3}(?:-[a-z]+)?)\)")  # espeak-ng's language-switch marks, e.g. "(zh)"
# The script each espeak-ng language is written in (by the voice's language code before "-");
# Latin otherwise. Letters of another script are spelt out by name ("chinese letter"), silently.
SCRIPTS = {
    **dict.fromkeys(("ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "tt", "ba", "cv", "mn"), "CYRILLIC"),
    "el": "GREEK", "grc": "GREEK", "hy": "ARMENIAN", "ka": "GEORGIAN", "he": "HEBREW",
    **dict.fromkeys(("ar", "fa", "ur", "ps", "sd", "ug"), "ARABIC"),
    **dict.fromkeys(("hi", "mr", "ne", "sa", "kok", "bpy"), "DEVANAGARI"),
    "bn": "BENGALI", "as": "BENGALI", "pa": "GURMUKHI", "gu": "GUJARATI", "or": "ORIYA", "ta": "TAMIL", "te": "TELUGU",
    "kn": "KANNADA", "ml": "MALAYALAM", "si": "SINHALA", "th": "THAI", "lo": "LAO", "my": "MYANMAR", "am": "ETHIOPIC",
    **dict.fromkeys(("cmn", "yue", "hak", "zh"), "CJK"), "ja": "CJK", "ko": "HANGUL",
}  # fmt: skip


class CharFrontEnd:
    """transformers' ``VitsTokenizer``: refuses letters its vocabulary cannot spell."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._vocab = set(tokenizer.get_vocab())

    def ids(self, text: str, where: str) -> list[int]:
        tok = self.tokenizer
        if not tok.phonemize:  # character vocabularies: letters outside it would vanish
            normal = tok.normalize_text(text) if tok.normalize else text
            bad = sorted({c for c in normal if c.isalnum() and c not in self._vocab})
            if bad:
                raise SpeechPeftError(
                    f"{where}: this model's tokenizer cannot spell {''.join(bad)!r} (in {text[:40]!r})"
                )
        out = list(tok(text).input_ids)
        if not out:
            raise SpeechPeftError(f"{where}: nothing to say after the tokenizer's normalisation: {text[:40]!r}")
        return out

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)


class PhonemeFrontEnd:
    """A Piper voice's ``phonemes.json``: espeak-ng IPA, one id per codepoint."""

    def __init__(self, spec: dict, source: str):
        try:
            self.voice = str(spec["espeak_voice"])
            table = spec["phoneme_id_map"]
            self.bos, self.eos, self.pad = (table[spec[k]][0] for k in ("bos", "eos", "pad"))
            self.table = {str(k): int(v[0]) for k, v in table.items()}
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise SpeechPeftError(f"{source}: not a Piper phoneme map ({type(e).__name__}: {e})") from None
        self.spec, self._backend = spec, None

    @classmethod
    def from_file(cls, path: Path) -> PhonemeFrontEnd:
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SpeechPeftError(f"{path}: cannot read the phoneme map ({e})") from None
        return cls(spec, str(path))

    def phonemes(self, text: str, where: str = "text") -> str:
        """espeak-ng's IPA for ``text``, punctuation kept.

        Raises:
            SpeechPeftError: phonemizer or the espeak-ng library is missing, or espeak-ng reads
                part of the text as another language (this voice cannot say it).
        """
        script = SCRIPTS.get(self.voice.split("-")[0], "LATIN")
        foreign = [c for c in text if c.isalpha() and script not in unicodedata.name(c, "")]
        if foreign:
            word = "".join(foreign)[:12]
            raise SpeechPeftError(
                f"{where}: this {self.voice} voice reads {script.title()} script; {word!r} in {text[:40]!r} "
                "would be spelt out letter by letter"
            )
        out = self.backend().phonemize([text], strip=True)[0]
        other = _FLAG.search(out)
        if other:
            raise SpeechPeftError(
                f"{where}: espeak-ng reads part of {text[:40]!r} as language {other.group(1)!r}, "
                f"which this {self.voice} voice cannot say"
            )
        return out

    def ids(self, text: str, where: str) -> list[int]:
        phones = self.phonemes(text, where)
        unknown = sorted({c for c in phones if c not in self.table})
        if unknown:
            raise SpeechPeftError(
                f"{where}: this voice has no id for phoneme(s) {''.join(unknown)!r} (from {text[:40]!r})"
            )
        body = [i for c in phones for i in (self.table[c], self.pad)]
        if not any(c.isalpha() for c in phones):
            raise SpeechPeftError(f"{where}: nothing to say in {text[:40]!r}")
        return [self.bos, self.pad, *body, self.eos]

    def backend(self) -> Any:
        if self._backend is None:
            try:
                from phonemizer.backend import EspeakBackend
            except ImportError:
                raise SpeechPeftError(
                    "this voice reads espeak-ng phonemes: pip install 'speechpeft[tts]' (phonemizer) "
                    "and apt-get install espeak-ng"
                ) from None
            try:  # keep-flags: a switch to another language shows as "(xx)", which phonemes() refuses
                self._backend = EspeakBackend(
                    self.voice, preserve_punctuation=True, with_stress=True, language_switch="keep-flags"
                )
            except RuntimeError as e:
                raise SpeechPeftError(f"espeak-ng for voice {self.voice!r}: {e} (apt-get install espeak-ng)") from None
        return self._backend

    def save(self, folder: Path) -> None:
        (folder / PHONEMES_FILE).write_text(json.dumps(self.spec, ensure_ascii=False, indent=1) + "\n", "utf-8")


def load_front_end(folder: Path | None, name_or_path: str) -> CharFrontEnd | PhonemeFrontEnd:
    """The front end of a voice: ``phonemes.json`` if the folder has one, else ``VitsTokenizer``.

    Raises:
        SpeechPeftError: neither can be loaded.
    """
    if folder is not None and (folder / PHONEMES_FILE).is_file():
        return PhonemeFrontEnd.from_file(folder / PHONEMES_FILE)
    from transformers import VitsTokenizer

    try:
        return CharFrontEnd(VitsTokenizer.from_pretrained(name_or_path))
    except (OSError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeechPeftError(
            f"cannot load the text front end of {name_or_path!r} (no {PHONEMES_FILE}): {first}"
        ) from None
