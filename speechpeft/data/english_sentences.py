"""A seeded bank of plain English sentences: the texts a voice reads to teach itself.

``speechpeft tts complete-base`` has an English voice synthesize these, then fits the voice's
missing posterior side to what it said. They are generated from small hand-written phrase lists
(subject, verb phrase, object, adjunct), so every sentence is grammatical, varied in length and
covers the common English phonemes; they are not natural text and are not meant to be.
"""

from __future__ import annotations

import random

_SUBJECTS = (
    "the old farmer",
    "my younger sister",
    "a tired teacher",
    "the children",
    "our neighbour",
    "the doctor",
    "a quiet student",
    "the baker on the corner",
    "my grandfather",
    "the pilot",
    "two fishermen",
    "the new judge",
    "her cousin from the north",
    "the mayor",
    "a friendly stranger",
    "the gardener",
    "his father",
    "the singer",
    "everyone at the meeting",
    "the young engineer",
    "a nurse",
    "the captain",
    "my best friend",
    "the librarian",
)
_VERBS = (
    "carried",
    "painted",
    "found",
    "bought",
    "fixed",
    "described",
    "borrowed",
    "forgot",
    "noticed",
    "washed",
    "measured",
    "ordered",
    "wrapped",
    "returned",
    "cleaned",
    "delivered",
    "lifted",
    "examined",
    "sold",
    "hid",
    "opened",
    "shared",
    "sketched",
    "counted",
)
_OBJECTS = (
    "a heavy wooden chair",
    "the broken clock",
    "three yellow apples",
    "a letter from the bank",
    "the map of the city",
    "an empty glass jar",
    "the red bicycle",
    "a basket of fresh bread",
    "the leather boots",
    "a small brown puppy",
    "the silver key",
    "a thick winter coat",
    "the kitchen window",
    "a pile of old newspapers",
    "the garden gate",
    "a bottle of cold water",
    "the blue umbrella",
    "six copper coins",
    "a jigsaw puzzle",
    "the village church bell",
    "a photograph of the harbour",
    "the muddy shoes",
    "a cup of hot chocolate",
    "the ship's anchor",
)
_ADJUNCTS = (
    "before breakfast",
    "in the pouring rain",
    "after the long journey",
    "without saying a word",
    "near the river",
    "on Thursday morning",
    "with great care",
    "at the end of the street",
    "during the storm",
    "just before midnight",
    "in a hurry",
    "behind the station",
    "for the third time",
    "while the kettle boiled",
    "under the bright lights",
    "beside the fireplace",
    "at the edge of the forest",
    "early this year",
)
_QUESTIONS = (
    "why did {s} leave {o} {a}?",
    "did {s} really want {o}?",
    "where would {s} put {o}?",
    "how often has {s} seen {o} {a}?",
    "who told {s} about {o}?",
)
_EXTRAS = (
    "Please call me when you get home.",
    "It is much colder today than it was yesterday.",
    "The museum opens at nine and closes at five.",
    "Could you pass the salt and the pepper?",
    "We watched the sun go down over the hills.",
    "Thank you very much for your help.",
    "Turn left at the second set of traffic lights.",
    "The train to the coast leaves in ten minutes.",
    "I think it is going to snow tonight.",
    "She laughed at the joke, although she had heard it before.",
    "The number seven is my favourite.",
    "A thousand birds flew south over the lake.",
)


def english_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences (the first are hand-written, the rest generated), deterministic in ``seed``."""
    rng = random.Random(seed)
    out = list(_EXTRAS[:n])
    seen = set(out)
    while len(out) < n:
        s, v, o, a = (rng.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS, _ADJUNCTS))
        if rng.random() < 0.2:
            text = rng.choice(_QUESTIONS).format(s=s, o=o, a=a)
        elif rng.random() < 0.3:
            s2, v2, o2 = (rng.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS))
            text = f"{s} {v} {o}, and then {s2} {v2} {o2} {a}."
        else:
            text = f"{s} {v} {o} {a}."
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
