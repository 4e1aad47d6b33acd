"""Word lists for the synthetic unseen-language corpus, and a seeded sentence maker.

Source-language audio is never transcribed (it only pretrains the stand-in model), so its
"sentences" are random strings of common words: what matters is that espeak-ng speaks them
with the language's sounds. The target language, Maori (te reo Maori: CV syllables, five vowels
with phonemic length, a small consonant set, much as in Ainu), gets sentences from a tiny
grammar, so that its transcripts read like the language and train, dev and test never share one.
"""

from __future__ import annotations

import random

SOURCE_WORDS = {
    "en-us": (
        "the house morning river small green window table water people always because through"
        " children garden winter yellow kitchen question answer between mountain forward evening"
        " friendly brother thought bridge street quickly orange thunder silver weather picture"
        " letter doctor market station birthday holiday yesterday tomorrow together sometimes"
    ).split(),
    "de": (
        "das haus morgen fluss klein grün fenster tisch wasser leute immer weil durch kinder"
        " garten winter gelb küche frage antwort zwischen berg vorwärts abend freundlich bruder"
        " gedanke brücke straße schnell orange donner silber wetter bild brief arzt markt bahnhof"
        " geburtstag urlaub gestern übermorgen zusammen manchmal schön möglich natürlich zwölf"
    ).split(),
    "fr-fr": (
        "la maison matin rivière petit vert fenêtre table eau gens toujours parce que à travers"
        " enfants jardin hiver jaune cuisine question réponse entre montagne avant soir aimable"
        " frère pensée pont rue vite orange tonnerre argent temps image lettre médecin marché gare"
        " anniversaire vacances hier demain ensemble parfois heureux beaucoup déjà oiseau"
    ).split(),
    "pl": (
        "dom rano rzeka mały zielony okno stół woda ludzie zawsze ponieważ przez dzieci ogród"
        " zima żółty kuchnia pytanie odpowiedź między góra naprzód wieczór przyjazny brat myśl"
        " most ulica szybko pomarańcza grzmot srebro pogoda obraz list lekarz rynek dworzec"
        " urodziny wakacje wczoraj jutro razem czasem szczęście chrząszcz źródło książka"
    ).split(),
}

# the target: nouns, verbs and adjectives of everyday Maori, macrons kept (long vowels)
MI_NOUNS = (
    "whare whenua wai moana maunga awa rangi tamaiti tamariki wahine tāne whānau hoa kai manu ika"
    " kurī ngeru rākau pua kōhatu one ua hau kapua ahi marama whetū kura pukapuka waka marae"
    " kāinga tāone huarahi motokā pahi ngahere kōrero waiata mahi rongoā kākahu tuakana teina"
    " kaumātua tangata iwi tai ata ahiahi pō rā tīma kēmu āporo parāoa miraka tēpu tūru matapihi"
).split()
MI_VERBS = (
    "haere noho kite rongo mōhio aroha pātai tuhi pānui waiata kanikani tākaro hīkoi kai inu"
    " moe oho tū oma hoki whakaako ako mahi hanga horoi tiaki kimi tatari karanga āwhina"
).split()
MI_ADJ = "pai nui iti roa poto hou tawhito mā pango whero kākāriki kikorangi reka wera makariri ora harikoa".split()
MI_PLACES = "ki te whare|ki te kura|ki te moana|ki te ngahere|i te marae|i te tāone|ki te awa|i te kāinga".split("|")
MI_TIMES = "ināianei|āpōpō|inanahi|i te ata|i te ahiahi|i te pō".split("|")
MI_PRONOUNS = "au|koe|ia|mātou|tātou|rātou|kōrua".split("|")


def source_sentence(rng: random.Random, language: str) -> str:
    words = SOURCE_WORDS[language]
    return " ".join(rng.choice(words) for _ in range(rng.randint(5, 9)))


def maori_sentence(rng: random.Random) -> str:
    """One sentence from a small grammar of verbal and descriptive clauses."""
    noun = rng.choice(MI_NOUNS)
    article = rng.choice(["te", "ngā"])
    patterns = [
        lambda: f"ka {rng.choice(MI_VERBS)} {article} {noun} {rng.choice(MI_PLACES)}",
        lambda: f"kei te {rng.choice(MI_VERBS)} {rng.choice(MI_PRONOUNS)} {rng.choice(MI_TIMES)}",
        lambda: f"he {rng.choice(MI_ADJ)} {article} {noun} {rng.choice(['nei', 'nā', 'rā'])}",
        lambda: f"i {rng.choice(MI_VERBS)} te {noun} {rng.choice(MI_ADJ)} {rng.choice(MI_TIMES)}",
        lambda: f"e {rng.choice(MI_VERBS)} ana {rng.choice(MI_PRONOUNS)} i te {noun} {rng.choice(MI_PLACES)}",
    ]
    first = rng.choice(patterns)()
    if rng.random() < 0.4:  # a second clause makes the lengths vary
        first += f" ā ka {rng.choice(MI_VERBS)} {rng.choice(MI_PRONOUNS)}"
    return first


def maori_sentences(seed: int, n: int, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` distinct sentences not in ``exclude``."""
    rng, out, seen = random.Random(seed), [], set(exclude)
    while len(out) < n:
        s = maori_sentence(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
