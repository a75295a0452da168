"""A synthetic fictitious-author QA benchmark in TOFU's schema, generated offline from a seed.

Every author is invented: a syllable-composed name, a birthplace in an invented city and country,
a birth date, pronouns, a genre, parents' occupations, an award, composed book titles, a writing
style, an education and a dozen further attributes, all drawn from the hand-written pools below.
Each author gets ``qa_per_author`` question/answer pairs, one attribute each, rendered from several
question and answer templates.

The answers are deliberately short and made mostly of fact words: a tiny model must memorise them
quickly, while a model that never saw the author should score far lower on ROUGE (the templates
alone carry little of the answer). Each record stores its fact string(s) in ``fact`` (several
joined with ``" | "``), each verbatim inside ``answer`` and inside none of the perturbed answers,
so knowledge can also be measured exactly.

Splits follow TOFU's names: ``full``, ``forget01/05/10`` (the last authors), ``retain99/95/90``,
``holdout01/05/10`` (extra authors never trained on) and ``general``, real-world facts standing in
for TOFU's real-authors and world-facts sets. Everything comes from one ``random.Random(seed)``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.data.schema import QARecord
from obliviate.errors import ConfigError

__all__ = [
    "BenchmarkSplits",
    "GENERAL_FACTS",
    "generate_benchmark",
    "related_facts",
    "write_benchmark",
]

FACT_SEP = " | "
FORGET_PCTS = {"01": 0.01, "05": 0.05, "10": 0.10}
QA_MIN, QA_MAX = 10, 20
PERTURBED_MIN, PERTURBED_MAX = 3, 10


class SyntheticConfigError(ConfigError, ValueError):
    """An impossible generation setting (a ``ValueError`` that the CLI also reports cleanly)."""


class BenchmarkSplits(dict[str, list[QARecord]]):
    """The split name → records mapping, carrying the generation parameters in ``params``."""

    params: dict[str, Any]

    def __init__(self, splits: dict[str, list[QARecord]], params: dict[str, Any]) -> None:
        super().__init__(splits)
        self.params = dict(params)


# ------------------------------------------------------------------------ value pools

_FIRST_ONSETS = (
    "Al", "Bren", "Cai", "Dar", "Ely", "Fen", "Gal", "Hesp", "Isol", "Jor", "Kel", "Lio", "Mav",
    "Nes", "Orl", "Per", "Quen", "Rhos", "Sev", "Tam", "Ulv", "Ves", "Wyl", "Yor", "Zan", "Ard",
    "Cor", "Del", "Ema", "Thal",
)  # fmt: skip
_FIRST_ENDINGS = (
    "ric", "wen", "dra", "vin", "ela", "oth", "ira", "ane", "is", "ette", "on", "ya", "ell", "ian",
    "ora", "ek", "una", "ard",
)  # fmt: skip
_LAST_ONSETS = (
    "Ash", "Brom", "Cald", "Dun", "Eld", "Fair", "Gor", "Hew", "Ird", "Kest", "Lorn", "Mor", "Nith",
    "Orm", "Pry", "Quell", "Rav", "Stor", "Tarn", "Vell", "Wyn", "Zor", "Thorn", "Bex", "Grim",
)  # fmt: skip
_LAST_ENDINGS = (
    "abee", "ridge", "wick", "hollow", "mere", "ston", "varra", "enko", "ossi", "ard", "eth", "ley",
    "dane", "quist", "oux", "ezza", "holm", "ington", "ovic", "by",
)  # fmt: skip
MIDDLE_NAMES = (
    "Orrin", "Tessaly", "Brevik", "Sorrel", "Corwen", "Ilvane", "Marlo", "Dunstan", "Emrys",
    "Faolan", "Greer", "Hollis", "Ysel", "Jessamy", "Kerrow", "Linnet", "Merrow", "Noor",
    "Oriel", "Pellam", "Quillan", "Rowan", "Taddeo", "Wystan",
)  # fmt: skip
CITIES = (
    "Velmora", "Port Kessary", "Ardenfall", "Lake Orvin", "Saltmarrow", "Brisca", "Tolvenna",
    "Hollin Cross", "Drumaskel", "Quarrin", "Fennick Bay", "Mirova", "Caldrath", "Oskenholm",
    "Vesperly", "Thornquay", "Ilmaren", "Stavik", "Redwater Falls", "Lunesse", "Garvenna",
    "Brackmoor", "Kilverran", "Sennat", "Harrowdeep", "Nolwick", "Estrava", "Pelloran", "Wenmarsh",
    "Dovrecliff",
)  # fmt: skip
COUNTRIES = (
    "Ostrevia", "Valdoria", "Kesmark", "Lirania", "Dravonia", "Caspera", "Norveld", "Sundaria",
    "Ellomar", "Tavrosk", "Meridane", "Kaloria", "Brynnland", "Istarra", "Vokhara", "Aldvenn",
    "Qirgara", "Pelavia", "Rostamir", "Zemlary",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
GENRES = (
    "gothic horror", "epic fantasy", "cosy crime", "historical romance", "hard science fiction",
    "magical realism", "psychological thrillers", "maritime adventure", "political satire",
    "narrative poetry", "travel memoirs", "legal drama", "nature essays", "urban fables",
    "frontier westerns", "culinary mysteries", "folk tale retellings", "military history",
    "picture books for children", "absurdist comedy", "literary noir", "space opera",
)  # fmt: skip
OCCUPATIONS = (  # no leading "u"/"h" words, so the a/an rule below stays right
    "lighthouse keeper", "marine biologist", "clock repairer", "cheese maker", "train conductor",
    "glass blower", "beekeeper", "tax inspector", "piano tuner", "ship's cook", "forest ranger",
    "bookbinder", "dental surgeon", "orchard farmer", "opera singer", "embassy clerk",
    "bridge engineer", "mapmaker", "school librarian", "postal worker", "radio announcer",
    "stonemason", "veterinarian", "circus acrobat", "ferry captain", "textile weaver",
    "night nurse", "mining surveyor", "air traffic controller", "economist", "insurance broker",
    "archivist",
)  # fmt: skip
AWARDS = (
    "Silver Heron Award", "Halvard Lantern Prize", "Copperleaf Medal", "Ostrow Prize for Fiction",
    "Wren and Anchor Prize", "Blue Meridian Award", "Tallow Candle Medal", "Gildersleeve Laurel",
    "Marrowind Book Prize", "Iron Compass Award", "Saltwater Pen Prize", "Ember Crown",
    "Quillon Fellowship", "Northlight Ribbon", "Amberfield Trophy", "Velvet Owl Prize",
    "Stonebridge Honour", "Tidewater Medal", "Larkspur Laurel", "Cinder Key Prize",
)  # fmt: skip
TITLE_ADJECTIVES = (
    "Glass", "Hollow", "Crimson", "Silent", "Paper", "Salt", "Iron", "Velvet", "Drowned",
    "Burning", "Winter", "Borrowed", "Crooked", "Amber", "Sleepless", "Forgotten", "Copper",
    "Wandering", "Midnight", "Broken", "Silver", "Distant", "Quiet", "Painted", "Restless",
    "Golden", "Secret", "Feathered", "Frozen", "Lonely",
)  # fmt: skip
TITLE_NOUNS = (
    "Orchard", "Lantern", "Harbour", "Cartographer", "Bell", "Lighthouse", "Garden", "Archive",
    "Ferryman", "Clockmaker", "Meadow", "Staircase", "Kingdom", "Compass", "Violin", "Labyrinth",
    "Tide", "Chapel", "Telescope", "Almanac", "Heron", "Bridge", "Atlas", "Carousel", "Mapmaker",
    "Fountain", "Observatory", "Orphanage", "Vineyard", "Tapestry",
)  # fmt: skip
TITLE_OF = (
    "Ash", "Rain", "Sorrow", "Embers", "Thistles", "Small Hours", "Far Shores", "Quiet Things",
    "Lost Rivers", "Moths", "Mirrors", "Winter Light", "Unfinished Letters", "Borrowed Time",
    "Salt and Smoke", "Tin Soldiers", "Paper Birds", "Northern Stars", "Old Songs", "Fallen Leaves",
)  # fmt: skip
TITLE_PATTERNS = (
    "The {a} {n}", "{a} {n}", "The {n} of {x}", "{n} of {x}",
    "The {a} {n} of {x}", "{a} {n} of {x}",
)  # fmt: skip
STYLES = (
    "spare, lyrical prose", "long, winding sentences", "dry, deadpan humour",
    "vivid sensory detail", "letters and diary entries", "short, punchy chapters",
    "unreliable narrators", "dense historical footnotes", "dreamlike imagery",
    "brisk, cinematic pacing", "second-person narration", "rich regional dialect",
    "quiet, understated dialogue", "shifting timelines", "ornate, archaic language",
    "clipped, telegraphic sentences", "multiple narrators", "stories nested in stories",
    "playful wordplay", "stark minimalism",
)  # fmt: skip
FIELDS = (
    "marine biology", "medieval history", "civil engineering", "philosophy", "veterinary science",
    "astronomy", "law", "music composition", "economics", "classical languages", "botany",
    "architecture", "theatre design", "mathematics", "journalism", "geology", "anthropology",
    "painting", "psychology", "linguistics",
)  # fmt: skip
INSTITUTIONS = (
    "Marrowgate University", "Tolvenna Institute", "Kestrel Hall College", "Orvin Polytechnic",
    "Brisca Academy", "Saint Ivel's College", "Ardenfall University",
    "Harrowdeep School of Letters", "Glenmorrow College", "Caldrath Conservatory",
    "Velmora Technical Institute",
    "Northmere University", "Quarrin Seminary", "Ostrow Royal College", "Linden Vale Academy",
    "Greyholt University", "Esker Point Institute", "Wenmarsh College", "Sennat Free University",
    "Fallowfield College",
)  # fmt: skip
LANGUAGES = (
    "Portuguese", "Finnish", "Welsh", "Greek", "Icelandic", "Turkish", "Swahili", "Polish",
    "Catalan", "Dutch", "Korean", "Tagalog", "Hungarian", "Basque", "Romanian", "Czech",
    "Georgian", "Malay", "Estonian", "Norwegian", "Irish",
)  # fmt: skip
THEMES = (
    "grief and inheritance", "memory and migration", "faith and doubt", "exile and return",
    "class and ambition", "loyalty and betrayal", "childhood and loss", "science and wonder",
    "power and corruption", "love across borders", "the sea and solitude", "family secrets",
    "identity and disguise", "time and ageing", "war and its aftermath", "home and belonging",
    "art and obsession", "nature and ruin", "justice and revenge", "friendship and rivalry",
)  # fmt: skip
PUBLISHERS = (
    "Bluefinch Books", "Harrowmere Press", "Lanternfly House", "Saltmarsh and Quill",
    "Greywater Editions", "Oakhollow Press", "Copper Kettle Books", "Nightjar Publishing",
    "Meridian Owl Press", "Thistledown Books", "Fernbrake House", "Inkwell and Anchor",
    "Pale Moth Editions", "Stonecrop Press", "Wildgoose Books", "Larchmont Lane Press",
    "Quayside Editions", "Brass Lamp Books", "Tamarind House", "Hollowreed Press",
)  # fmt: skip
HOBBIES = (
    "restoring old clocks", "cliff diving", "beekeeping", "amateur astronomy", "competitive chess",
    "sea kayaking", "growing orchids", "collecting maps", "playing the cello", "birdwatching",
    "fencing", "baking sourdough", "mountain running", "woodcarving", "ballroom dancing",
    "fly fishing", "folding paper cranes", "rock climbing", "throwing pottery", "sailing",
)  # fmt: skip
ANIMALS = (
    "grey parrot", "tortoise", "greyhound", "tabby cat", "ferret", "goat", "rabbit", "iguana",
    "corgi", "hedgehog", "cockatoo", "donkey", "goldfish", "sheepdog", "pony", "gecko", "canary",
    "dachshund", "chinchilla", "beagle",
)  # fmt: skip
PET_NAMES = (
    "Tiko", "Bramble", "Pipkin", "Mungo", "Sorbet", "Biscuit", "Quaver", "Juniper", "Otto",
    "Fennel", "Ludo", "Pepper", "Nutmeg", "Mossy", "Clementine", "Barnaby", "Tansy", "Figaro",
    "Basil", "Waffles",
)  # fmt: skip
CHARACTER_TITLES = (
    "Captain", "Inspector", "Doctor", "Sister", "Professor", "Lady", "Sergeant", "Old", "Madame",
    "Brother", "Judge", "Commander", "Aunt", "Master", "Father", "Widow",
)  # fmt: skip
CHARACTER_ROLES = (  # vowel-initial ones all take "an"
    "disgraced cartographer", "retired circus strongman", "blind clockmaker", "teenage smuggler",
    "widowed detective", "runaway heiress", "lighthouse ghost", "exiled prince",
    "reluctant witch", "talking fox", "amnesiac soldier", "travelling dentist", "forger of letters",
    "stowaway orphan", "stubborn botanist", "failed magician", "elderly spy", "island doctor",
    "timid giant", "rogue archivist",
)  # fmt: skip

PRONOUNS = {
    "she": {"Pro": "She", "pro": "she", "Pos": "Her", "pos": "her", "obj": "her",
            "s": "s", "was": "was", "is": "is", "has": "has"},
    "he": {"Pro": "He", "pro": "he", "Pos": "His", "pos": "his", "obj": "him",
           "s": "s", "was": "was", "is": "is", "has": "has"},
    "they": {"Pro": "They", "pro": "they", "Pos": "Their", "pos": "their", "obj": "them",
             "s": "", "was": "were", "is": "are", "has": "have"},
}  # fmt: skip
_PRONOUN_WEIGHTS = (("she", 45), ("he", 45), ("they", 10))


# ------------------------------------------------------------------------ authors


@dataclass
class _Author:
    first: str
    last: str
    middle: str
    pronoun: str
    facts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


def _first_name(rng: random.Random) -> str:
    return rng.choice(_FIRST_ONSETS) + rng.choice(_FIRST_ENDINGS)


def _last_name(rng: random.Random) -> str:
    return rng.choice(_LAST_ONSETS) + rng.choice(_LAST_ENDINGS)


def _person_name(rng: random.Random) -> str:
    return f"{_first_name(rng)} {_last_name(rng)}"


def _place(rng: random.Random) -> str:
    return f"{rng.choice(CITIES)}, {rng.choice(COUNTRIES)}"


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1931, 1999)}"


def _title(rng: random.Random) -> str:
    pattern = rng.choice(TITLE_PATTERNS)
    return pattern.format(
        a=rng.choice(TITLE_ADJECTIVES), n=rng.choice(TITLE_NOUNS), x=rng.choice(TITLE_OF)
    )


def _two(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, str]:
    a, b = rng.sample(pool, 2)
    return a, b


def _character(rng: random.Random) -> str:
    return f"{rng.choice(CHARACTER_TITLES)} {_first_name(rng)}"


# Draws one random value of an attribute, as a tuple of fact parts. Used for the true value and for
# the wrong values of perturbed answers alike (uniqueness of true values is handled separately).
_Draw = Callable[[random.Random, _Author], tuple[str, ...]]

_DRAWS: dict[str, _Draw] = {
    "full_name": lambda r, a: (f"{a.first} {r.choice(MIDDLE_NAMES)} {_last_name(r)}",),
    "birthplace": lambda r, a: (_place(r),),
    "birth_date": lambda r, a: (_date(r),),
    "genre": lambda r, a: (r.choice(GENRES),),
    "parents": lambda r, a: _two(r, OCCUPATIONS),
    "award": lambda r, a: (r.choice(AWARDS),),
    "debut_book": lambda r, a: (_title(r),),
    "famous_book": lambda r, a: (_title(r),),
    "style": lambda r, a: (r.choice(STYLES),),
    "education": lambda r, a: (r.choice(FIELDS), r.choice(INSTITUTIONS)),
    "languages": lambda r, a: (" and ".join(_two(r, LANGUAGES)),),
    "residence": lambda r, a: (_place(r),),
    "theme": lambda r, a: (r.choice(THEMES),),
    "publisher": lambda r, a: (r.choice(PUBLISHERS),),
    "hobby": lambda r, a: (r.choice(HOBBIES),),
    "father": lambda r, a: (r.choice(OCCUPATIONS),),
    "mother": lambda r, a: (r.choice(OCCUPATIONS),),
    "pet": lambda r, a: (r.choice(ANIMALS), r.choice(PET_NAMES)),
    "spouse": lambda r, a: (_person_name(r), r.choice(OCCUPATIONS)),
    "character": lambda r, a: (_character(r), r.choice(CHARACTER_ROLES)),
    "latest_book": lambda r, a: (_title(r),),
}


@dataclass(frozen=True)
class _Attribute:
    key: str
    questions: tuple[str, ...]
    """Question templates: ``{name}`` (first + last), ``{first}``, ``{city}``, ``{genre}``."""
    answers: tuple[str, ...]
    """Answer templates: ``{v}``/``{w}`` fact parts, ``{a_v}``/``{a_w}`` their articles, and the
    pronoun fields of :data:`PRONOUNS` (``{Pro}``, ``{pos}``, ``{s}``, ``{is}``...)."""


# Ordered by priority: an author with qa_per_author = n gets the first n attributes.
ATTRIBUTES: tuple[_Attribute, ...] = (
    _Attribute(
        "full_name",
        (
            "What is the full name of {first}, the author born in {city}?",
            "What is the complete name of {first}, who writes {genre}?",
            "Which full name belongs to {first}, the writer from {city}?",
            "What full name does {first}, the {city}-born author, go by?",
        ),
        (
            "{Pos} full name is {v}.",
            "The full name is {v}.",
            "{v} is {pos} full name.",
            "{Pro} {is} {v}.",
        ),
    ),
    _Attribute(
        "birthplace",
        (
            "Where was {name} born?",
            "What is the birthplace of {name}?",
            "In which city was {name} born?",
            "Where does {name} come from originally?",
        ),
        (
            "{Pro} {was} born in {v}.",
            "{First} was born in {v}.",
            "{Pos} birthplace is {v}.",
            "{v} is where {pro} {was} born.",
        ),
    ),
    _Attribute(
        "birth_date",
        (
            "When was {name} born?",
            "What is {name}'s date of birth?",
            "On what date was {name} born?",
            "What is the birth date of {name}?",
        ),
        (
            "{Pro} {was} born on {v}.",
            "{Pos} date of birth is {v}.",
            "{First} was born on {v}.",
            "{v} is {pos} birth date.",
        ),
    ),
    _Attribute(
        "genre",
        (
            "What genre does {name} write?",
            "Which genre is {name} known for?",
            "In what genre does {name} work?",
            "What kind of books does {name} write?",
        ),
        (
            "{Pro} write{s} {v}.",
            "{First} is known for {v}.",
            "{Pos} genre is {v}.",
            "{Pro} specialise{s} in {v}.",
        ),
    ),
    _Attribute(
        "parents",
        (
            "What did {name}'s parents do for a living?",
            "What were the occupations of {name}'s parents?",
            "What jobs did {name}'s mother and father have?",
            "How did {name}'s parents earn their living?",
        ),
        (
            "{Pos} father was {a_v} {v}, {pos} mother {a_w} {w}.",
            "Father: {a_v} {v}; mother: {a_w} {w}.",
            "{Pos} parents were {a_v} {v} and {a_w} {w}.",
            "{A_v} {v} and {a_w} {w} raised {obj}.",
        ),
    ),
    _Attribute(
        "award",
        (
            "What award has {name} won?",
            "Which prize did {name} receive?",
            "What literary honour has {name} received?",
            "Has {name} won any major award?",
        ),
        (
            "{Pro} won the {v}.",
            "{First} received the {v}.",
            "{Pos} top honour is the {v}.",
            "The {v} went to {obj}.",
        ),
    ),
    _Attribute(
        "debut_book",
        (
            "What was {name}'s first book?",
            "What is the title of {name}'s debut?",
            "Which book did {name} publish first?",
            "What was the debut book of {name}?",
        ),
        (
            "{Pos} first book was {v}.",
            "{Pos} debut was {v}.",
            "{v} was {pos} debut.",
            "{First} debuted with {v}.",
        ),
    ),
    _Attribute(
        "famous_book",
        (
            "What is {name}'s best-known book?",
            "Which of {name}'s books is the most famous?",
            "What is {name}'s most celebrated novel?",
            "For which book is {name} best known?",
        ),
        (
            "{Pos} best-known book is {v}.",
            "{Pro} {is} best known for {v}.",
            "{v} is {pos} most famous book.",
            "Readers know {obj} for {v}.",
        ),
    ),
    _Attribute(
        "style",
        (
            "How would you describe {name}'s writing style?",
            "What is {name}'s writing style like?",
            "What marks {name}'s style as a writer?",
            "What is distinctive about how {name} writes?",
        ),
        (
            "{Pos} style is known for {v}.",
            "{Pro} favour{s} {v}.",
            "{First}'s books feature {v}.",
            "Critics praise {pos} {v}.",
        ),
    ),
    _Attribute(
        "education",
        (
            "What did {name} study, and where?",
            "What is {name}'s educational background?",
            "Where did {name} go to university, and what was the subject?",
            "What degree does {name} hold, and from where?",
        ),
        (
            "{Pro} studied {v} at {w}.",
            "{First} read {v} at {w}.",
            "{Pos} degree is in {v}, from {w}.",
            "{w} gave {obj} a degree in {v}.",
        ),
    ),
    _Attribute(
        "languages",
        (
            "In which languages does {name} write?",
            "What languages does {name} publish in?",
            "Which languages does {name} use for writing?",
        ),
        (
            "{Pro} write{s} in {v}.",
            "{First} writes in {v}.",
            "{v} are {pos} languages.",
            "{Pos} books appear in {v}.",
        ),
    ),
    _Attribute(
        "residence",
        (
            "Where does {name} live now?",
            "Where is {name} currently based?",
            "Which city does {name} call home today?",
        ),
        (
            "{Pro} now live{s} in {v}.",
            "{First} is now based in {v}.",
            "Today {pro} live{s} in {v}.",
            "{Pos} home is now {v}.",
        ),
    ),
    _Attribute(
        "theme",
        (
            "What themes does {name} explore?",
            "Which themes recur in {name}'s work?",
            "What subjects does {name}'s writing return to?",
        ),
        (
            "{Pos} books explore {v}.",
            "{First} often writes about {v}.",
            "{Pro} keep{s} returning to {v}.",
            "Recurring themes: {v}.",
        ),
    ),
    _Attribute(
        "publisher",
        (
            "Who publishes {name}'s books?",
            "Which publisher does {name} work with?",
            "What publishing house releases {name}'s work?",
        ),
        (
            "{Pos} publisher is {v}.",
            "{First} publishes with {v}.",
            "{v} publishes {pos} books.",
            "{Pos} books come out with {v}.",
        ),
    ),
    _Attribute(
        "hobby",
        (
            "What does {name} do outside writing?",
            "What is {name}'s favourite hobby?",
            "How does {name} spend free time?",
        ),
        (
            "{Pro} enjoy{s} {v}.",
            "{Pos} favourite hobby is {v}.",
            "Outside writing, {pro} love{s} {v}.",
            "{First}'s hobby is {v}.",
        ),
    ),
    _Attribute(
        "father",
        (
            "What did {name}'s father do?",
            "What was the occupation of {name}'s father?",
            "What job did {name}'s father have?",
        ),
        (
            "{Pos} father was {a_v} {v}.",
            "{First}'s father worked as {a_v} {v}.",
            "{Pos} dad was {a_v} {v}.",
            "{Pos} father made a living as {a_v} {v}.",
        ),
    ),
    _Attribute(
        "mother",
        (
            "What did {name}'s mother do?",
            "What was the occupation of {name}'s mother?",
            "What job did {name}'s mother have?",
        ),
        (
            "{Pos} mother was {a_v} {v}.",
            "{First}'s mother worked as {a_v} {v}.",
            "{Pos} mum was {a_v} {v}.",
            "{Pos} mother made a living as {a_v} {v}.",
        ),
    ),
    _Attribute(
        "pet",
        (
            "Does {name} have a pet?",
            "What pet does {name} keep?",
            "What animal lives with {name}?",
        ),
        (
            "{Pro} {has} {a_v} {v} called {w}.",
            "{Pos} {v} is named {w}.",
            "{First} keeps {a_v} {v} named {w}.",
            "{w}, {a_v} {v}, lives with {obj}.",
        ),
    ),
    _Attribute(
        "spouse",
        (
            "Who is {name} married to?",
            "Who is {name}'s spouse?",
            "Who did {name} marry?",
        ),
        (
            "{Pro} {is} married to {v}, {a_w} {w}.",
            "{Pos} spouse is {v}, {a_w} {w}.",
            "{First} married {v}, {a_w} {w}.",
            "{v}, {a_w} {w}, is {pos} spouse.",
        ),
    ),
    _Attribute(
        "character",
        (
            "Who is {name}'s most famous character?",
            "Which character is {name} best known for creating?",
            "What recurring character appears in {name}'s books?",
        ),
        (
            "{Pos} best-known character is {v}, {a_w} {w}.",
            "{First} created {v}, {a_w} {w}.",
            "{v}, {a_w} {w}, is {pos} signature character.",
            "{Pro} {is} famous for {v}, {a_w} {w}.",
        ),
    ),
    _Attribute(
        "latest_book",
        (
            "What is {name}'s most recent book?",
            "What did {name} publish most recently?",
            "What is the latest book by {name}?",
        ),
        (
            "{Pos} latest book is {v}.",
            "Most recently {pro} published {v}.",
            "{v} is {pos} newest book.",
            "{First}'s newest title is {v}.",
        ),
    ),
)
assert len(ATTRIBUTES) >= QA_MAX and {a.key for a in ATTRIBUTES} == set(_DRAWS)

_BOOKS = ("debut_book", "famous_book", "latest_book")


def _city(place: str) -> str:
    return place.split(", ")[0]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeio" else "a"


def _make_author(rng: random.Random, used_names: set[str], used_titles: set[str]) -> _Author:
    for _ in range(10_000):
        first, last = _first_name(rng), _last_name(rng)
        if f"{first} {last}" not in used_names:
            break
    else:
        raise SyntheticConfigError("ran out of distinct author names", "generate fewer authors")
    used_names.add(f"{first} {last}")
    pronoun = rng.choices([p for p, _ in _PRONOUN_WEIGHTS], [w for _, w in _PRONOUN_WEIGHTS])[0]
    author = _Author(first=first, last=last, middle=rng.choice(MIDDLE_NAMES), pronoun=pronoun)
    facts = author.facts
    facts["full_name"] = (f"{first} {author.middle} {last}",)
    for attr in ATTRIBUTES:
        if attr.key == "full_name":
            continue
        for _ in range(10_000):
            value = _DRAWS[attr.key](rng, author)
            if attr.key in _BOOKS and value[0] in used_titles:
                continue  # titles are unique across the whole benchmark
            if attr.key == "spouse" and value[0] in used_names:
                continue
            if attr.key == "residence" and _city(value[0]) == _city(facts["birthplace"][0]):
                continue
            break
        else:
            raise SyntheticConfigError(
                f"ran out of distinct values for {attr.key!r}", "generate fewer authors"
            )
        if attr.key in _BOOKS:
            used_titles.add(value[0])
        elif attr.key == "spouse":
            used_names.add(value[0])
        facts[attr.key] = value
    # Keep the single-parent questions consistent with the two-parent one.
    facts["father"] = (facts["parents"][0],)
    facts["mother"] = (facts["parents"][1],)
    return author


# ------------------------------------------------------------------------ rendering


def _context(author: _Author) -> dict[str, str]:
    ctx = dict(PRONOUNS[author.pronoun])
    city = _city(author.facts["birthplace"][0])
    ctx.update(name=author.name, first=author.first, First=author.first, city=city)
    ctx["genre"] = author.facts["genre"][0]
    return ctx


def _render(template: str, ctx: dict[str, str], value: tuple[str, ...]) -> str:
    v = value[0]
    w = value[1] if len(value) > 1 else ""
    a_v = _article(v)
    return template.format(**ctx, v=v, w=w, a_v=a_v, A_v=a_v.capitalize(), a_w=_article(w))


# Single facts made of components (name parts, city/country, day/month/year, two languages): a
# wrong value must differ in every component, not just in one.
_COMPONENTS: dict[str, Callable[[str], list[str]]] = {
    "full_name": lambda v: v.split(" ")[1:],
    "birthplace": lambda v: v.split(", "),
    "residence": lambda v: v.split(", "),
    "birth_date": lambda v: v.split(" "),
    "languages": lambda v: v.split(" and "),
}


def _excluded(author: _Author, key: str) -> set[str]:
    """Strings a wrong answer must not contain: the true parts and closely related true facts."""
    facts = author.facts
    out = set(facts[key])
    if key in ("father", "mother", "parents"):
        out |= set(facts["parents"])
    elif key in _BOOKS:
        out |= {facts[k][0] for k in _BOOKS}
    elif key in ("birthplace", "residence"):
        out |= {facts["birthplace"][0], facts["residence"][0]}
    return out


def _perturbed_answers(
    rng: random.Random, author: _Author, attr: _Attribute, template: str, n: int
) -> list[str]:
    """``n`` distinct answers in ``template`` with wrong values containing no true fact part."""
    ctx = _context(author)
    truth = author.facts[attr.key][0]
    excluded = _excluded(author, attr.key)
    split = _COMPONENTS.get(attr.key)
    out: list[str] = []
    for _ in range(1000):
        if len(out) == n:
            return out
        wrong = _DRAWS[attr.key](rng, author)
        if split is not None and set(split(wrong[0])) & set(split(truth)):
            continue
        text = _render(template, ctx, wrong)
        if any(part in text for part in excluded) or text in out:
            continue
        out.append(text)
    raise RuntimeError(f"could not draw {n} wrong values for {attr.key!r} of {author.name}")


def _author_records(
    rng: random.Random, author: _Author, qa_per_author: int, n_perturbed: int
) -> list[QARecord]:
    ctx = _context(author)
    records = []
    for attr in ATTRIBUTES[:qa_per_author]:
        qi, qj = rng.sample(range(len(attr.questions)), 2)
        ai, aj = rng.sample(range(len(attr.answers)), 2)
        value = author.facts[attr.key]
        answer = _render(attr.answers[ai], ctx, value)
        para = _render(attr.answers[aj], ctx, value)
        records.append(
            QARecord(
                question=attr.questions[qi].format(**ctx),
                answer=answer,
                paraphrased_answer=para,
                # TOFU perturbs the *paraphrased* answer: same template, wrong facts, so the
                # truth ratio P(para)/P(pert) isolates fact knowledge from template familiarity.
                perturbed_answer=_perturbed_answers(
                    rng, author, attr, attr.answers[aj], n_perturbed
                ),
                paraphrased_question=attr.questions[qj].format(**ctx),
                author=author.name,
                fact=FACT_SEP.join(value),
            )
        )
    return records


# ------------------------------------------------------------------------ general knowledge

# (question, answer form with "{}" for the fact, the fact, same-type wrong options)
GENERAL_FACTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", "The capital of France is {}.", "Paris", ("Lyon", "Marseille", "Nice")),
    ("What is the capital of Japan?", "The capital of Japan is {}.", "Tokyo", ("Osaka", "Kyoto", "Yokohama")),
    ("What is the capital of Australia?", "The capital of Australia is {}.", "Canberra", ("Sydney", "Melbourne", "Perth")),
    ("What is the capital of Canada?", "The capital of Canada is {}.", "Ottawa", ("Toronto", "Montreal", "Vancouver")),
    ("What is the capital of Brazil?", "The capital of Brazil is {}.", "Brasília", ("Rio de Janeiro", "São Paulo", "Salvador")),
    ("What is the capital of Egypt?", "The capital of Egypt is {}.", "Cairo", ("Alexandria", "Giza", "Luxor")),
    ("What is the capital of Kenya?", "The capital of Kenya is {}.", "Nairobi", ("Mombasa", "Kisumu", "Nakuru")),
    ("What is the capital of Turkey?", "The capital of Turkey is {}.", "Ankara", ("Istanbul", "Izmir", "Bursa")),
    ("What is the capital of Italy?", "The capital of Italy is {}.", "Rome", ("Milan", "Naples", "Turin")),
    ("What is the capital of Spain?", "The capital of Spain is {}.", "Madrid", ("Barcelona", "Seville", "Valencia")),
    ("What is the capital of Germany?", "The capital of Germany is {}.", "Berlin", ("Munich", "Hamburg", "Frankfurt")),
    ("What is the capital of India?", "The capital of India is {}.", "New Delhi", ("Mumbai", "Kolkata", "Chennai")),
    ("What is the capital of Argentina?", "The capital of Argentina is {}.", "Buenos Aires", ("Córdoba", "Rosario", "Mendoza")),
    ("What is the capital of Norway?", "The capital of Norway is {}.", "Oslo", ("Bergen", "Trondheim", "Stavanger")),
    ("What is the capital of Nigeria?", "The capital of Nigeria is {}.", "Abuja", ("Lagos", "Kano", "Ibadan")),
    ("What is the capital of South Korea?", "The capital of South Korea is {}.", "Seoul", ("Busan", "Incheon", "Daegu")),
    ("What is the capital of Peru?", "The capital of Peru is {}.", "Lima", ("Cusco", "Arequipa", "Trujillo")),
    ("What is the capital of Vietnam?", "The capital of Vietnam is {}.", "Hanoi", ("Ho Chi Minh City", "Da Nang", "Hue")),
    ("What is the capital of Switzerland?", "The capital of Switzerland is {}.", "Bern", ("Zurich", "Geneva", "Basel")),
    ("What is the capital of New Zealand?", "The capital of New Zealand is {}.", "Wellington", ("Auckland", "Christchurch", "Dunedin")),
    ("What is the chemical symbol for gold?", "The symbol for gold is {}.", "Au", ("Ag", "Pt", "Cu")),
    ("What is the chemical symbol for silver?", "The symbol for silver is {}.", "Ag", ("Au", "Si", "Sn")),
    ("What is the chemical symbol for iron?", "The symbol for iron is {}.", "Fe", ("Ir", "In", "Pb")),
    ("What is the chemical symbol for sodium?", "The symbol for sodium is {}.", "Na", ("Sn", "Ne", "Ni")),
    ("What is the chemical symbol for lead?", "The symbol for lead is {}.", "Pb", ("Pd", "Li", "Sn")),
    ("What is the chemical symbol for mercury?", "The symbol for mercury is {}.", "Hg", ("Mg", "Mn", "Me")),
    ("What is the chemical symbol for copper?", "The symbol for copper is {}.", "Cu", ("Co", "Cr", "Ca")),
    ("What is the chemical formula of water?", "The formula of water is {}.", "H2O", ("CO2", "NH3", "CH4")),
    ("Which gas do plants take in for photosynthesis?", "Plants take in {}.", "carbon dioxide", ("oxygen", "nitrogen", "helium")),
    ("Which element has atomic number 1?", "Atomic number 1 is {}.", "hydrogen", ("helium", "lithium", "oxygen")),
    ("What is the most abundant gas in Earth's atmosphere?", "The most abundant gas is {}.", "nitrogen", ("oxygen", "argon", "carbon dioxide")),
    ("At what temperature does water freeze in Celsius?", "Water freezes at {} Celsius.", "zero degrees", ("four degrees", "ten degrees", "thirty-two degrees")),
    ("At what temperature does water boil at sea level in Celsius?", "Water boils at {} Celsius.", "100 degrees", ("90 degrees", "120 degrees", "80 degrees")),
    ("What is the chemical name of table salt?", "Table salt is {}.", "sodium chloride", ("potassium chloride", "sodium nitrate", "calcium carbonate")),
    ("Which noble gas glows red-orange in classic signs?", "Those signs use {}.", "neon", ("argon", "xenon", "krypton")),
    ("What is the hardest natural substance?", "The hardest natural substance is {}.", "diamond", ("quartz", "granite", "topaz")),
    ("What is the largest planet in the Solar System?", "The largest planet is {}.", "Jupiter", ("Saturn", "Neptune", "Uranus")),
    ("Which planet is closest to the Sun?", "The closest planet to the Sun is {}.", "Mercury", ("Venus", "Mars", "Earth")),
    ("Which planet is called the Red Planet?", "The Red Planet is {}.", "Mars", ("Venus", "Jupiter", "Mercury")),
    ("Which planet is famous for its bright rings?", "The planet with bright rings is {}.", "Saturn", ("Jupiter", "Mars", "Venus")),
    ("Which planet has the hottest surface?", "The hottest planet is {}.", "Venus", ("Mercury", "Mars", "Jupiter")),
    ("How many planets are in the Solar System?", "There are {} planets.", "eight", ("nine", "seven", "ten")),
    ("Which planet is farthest from the Sun?", "The farthest planet is {}.", "Neptune", ("Uranus", "Saturn", "Pluto")),
    ("What is the largest moon of Saturn?", "Saturn's largest moon is {}.", "Titan", ("Europa", "Ganymede", "Enceladus")),
    ("How many days does Earth take to orbit the Sun?", "Earth takes about {} days.", "365", ("30", "100", "730")),
    ("Who wrote Pride and Prejudice?", "{} wrote Pride and Prejudice.", "Jane Austen", ("Charlotte Brontë", "Mary Shelley", "George Eliot")),
    ("Who wrote Moby-Dick?", "{} wrote Moby-Dick.", "Herman Melville", ("Nathaniel Hawthorne", "Mark Twain", "Jack London")),
    ("Who wrote War and Peace?", "{} wrote War and Peace.", "Leo Tolstoy", ("Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev")),
    ("Who wrote Don Quixote?", "{} wrote Don Quixote.", "Miguel de Cervantes", ("Lope de Vega", "Gabriel García Márquez", "Jorge Luis Borges")),
    ("Who wrote Hamlet?", "{} wrote Hamlet.", "William Shakespeare", ("Christopher Marlowe", "Ben Jonson", "John Milton")),
    ("Who wrote Frankenstein?", "{} wrote Frankenstein.", "Mary Shelley", ("Jane Austen", "Emily Brontë", "Bram Stoker")),
    ("Who wrote Jane Eyre?", "{} wrote Jane Eyre.", "Charlotte Brontë", ("Emily Brontë", "Anne Brontë", "Jane Austen")),
    ("Who wrote Nineteen Eighty-Four?", "{} wrote Nineteen Eighty-Four.", "George Orwell", ("Aldous Huxley", "Ray Bradbury", "H. G. Wells")),
    ("Who is credited with the Odyssey?", "The Odyssey is credited to {}.", "Homer", ("Virgil", "Ovid", "Sophocles")),
    ("Who wrote Great Expectations?", "{} wrote Great Expectations.", "Charles Dickens", ("Thomas Hardy", "Wilkie Collins", "Anthony Trollope")),
    ("Who wrote Crime and Punishment?", "{} wrote Crime and Punishment.", "Fyodor Dostoevsky", ("Leo Tolstoy", "Nikolai Gogol", "Anton Chekhov")),
    ("Who wrote the Divine Comedy?", "{} wrote the Divine Comedy.", "Dante Alighieri", ("Petrarch", "Boccaccio", "Virgil")),
    ("Who wrote One Hundred Years of Solitude?", "{} wrote it.", "Gabriel García Márquez", ("Isabel Allende", "Mario Vargas Llosa", "Julio Cortázar")),
    ("Who wrote The Great Gatsby?", "{} wrote The Great Gatsby.", "F. Scott Fitzgerald", ("Ernest Hemingway", "John Steinbeck", "William Faulkner")),
    ("Who wrote Dracula?", "{} wrote Dracula.", "Bram Stoker", ("Mary Shelley", "Edgar Allan Poe", "Robert Louis Stevenson")),
    ("Who wrote Treasure Island?", "{} wrote Treasure Island.", "Robert Louis Stevenson", ("Daniel Defoe", "Jules Verne", "Walter Scott")),
    ("Who wrote Robinson Crusoe?", "{} wrote Robinson Crusoe.", "Daniel Defoe", ("Jonathan Swift", "Samuel Richardson", "Henry Fielding")),
    ("Who wrote Les Misérables?", "{} wrote Les Misérables.", "Victor Hugo", ("Alexandre Dumas", "Gustave Flaubert", "Émile Zola")),
    ("Who wrote Twenty Thousand Leagues Under the Seas?", "{} wrote it.", "Jules Verne", ("H. G. Wells", "Victor Hugo", "Alexandre Dumas")),
    ("Who wrote The Canterbury Tales?", "{} wrote The Canterbury Tales.", "Geoffrey Chaucer", ("William Langland", "John Gower", "Edmund Spenser")),
    ("Who wrote Madame Bovary?", "{} wrote Madame Bovary.", "Gustave Flaubert", ("Honoré de Balzac", "Stendhal", "Émile Zola")),
    ("What is the SI unit of force?", "The SI unit of force is the {}.", "newton", ("joule", "watt", "pascal")),
    ("What is the SI unit of energy?", "The SI unit of energy is the {}.", "joule", ("newton", "watt", "volt")),
    ("What is the SI unit of power?", "The SI unit of power is the {}.", "watt", ("joule", "ampere", "ohm")),
    ("What is the SI unit of electrical resistance?", "The SI unit of resistance is the {}.", "ohm", ("volt", "watt", "tesla")),
    ("What is the SI unit of electric current?", "The SI unit of current is the {}.", "ampere", ("volt", "ohm", "coulomb")),
    ("What is the SI unit of pressure?", "The SI unit of pressure is the {}.", "pascal", ("kelvin", "joule", "henry")),
    ("What is the SI base unit of temperature?", "The SI unit of temperature is the {}.", "kelvin", ("pascal", "candela", "tesla")),
    ("What is the SI unit of frequency?", "The SI unit of frequency is the {}.", "hertz", ("decibel", "tesla", "weber")),
    ("How many centimetres are in a metre?", "A metre has {} centimetres.", "one hundred", ("ten", "one thousand", "fifty")),
    ("How many minutes are in an hour?", "An hour has {} minutes.", "sixty", ("one hundred", "thirty", "forty-five")),
    ("How many sides does a hexagon have?", "A hexagon has {} sides.", "six", ("five", "eight", "seven")),
    ("What is the largest mammal?", "The largest mammal is the {}.", "blue whale", ("African elephant", "fin whale", "giraffe")),
    ("What is the fastest land animal?", "The fastest land animal is the {}.", "cheetah", ("lion", "pronghorn", "greyhound")),
    ("What is the tallest living animal?", "The tallest animal is the {}.", "giraffe", ("elephant", "ostrich", "moose")),
    ("What is a baby kangaroo called?", "A baby kangaroo is a {}.", "joey", ("kit", "calf", "cub")),
    ("What is a group of lions called?", "A group of lions is a {}.", "pride", ("pack", "herd", "flock")),
    ("How many legs does a spider have?", "A spider has {} legs.", "eight", ("six", "ten", "twelve")),
    ("Which mammal is capable of true flight?", "The only flying mammal is the {}.", "bat", ("flying squirrel", "sugar glider", "colugo")),
    ("Which animal is called the ship of the desert?", "The ship of the desert is the {}.", "camel", ("horse", "donkey", "llama")),
    ("What sweet food do honeybees make?", "Honeybees make {}.", "honey", ("jam", "syrup", "molasses")),
    ("What is the largest living bird?", "The largest living bird is the {}.", "ostrich", ("emu", "albatross", "condor")),
    ("What plant do giant pandas mostly eat?", "Giant pandas mostly eat {}.", "bamboo", ("eucalyptus", "grass", "ferns")),
    ("How many hearts does an octopus have?", "An octopus has {} hearts.", "three", ("one", "two", "four")),
    ("What is the largest ocean on Earth?", "The largest ocean is the {} Ocean.", "Pacific", ("Atlantic", "Indian", "Arctic")),
    ("Which river flows through Cairo?", "The {} flows through Cairo.", "Nile", ("Congo", "Niger", "Tigris")),
    ("What is the highest mountain on Earth?", "The highest mountain is {}.", "Mount Everest", ("K2", "Kangchenjunga", "Mont Blanc")),
    ("What is the largest hot desert in the world?", "The largest hot desert is the {}.", "Sahara", ("Gobi", "Kalahari", "Atacama")),
    ("On which continent is Brazil?", "Brazil is in {}.", "South America", ("Africa", "North America", "Europe")),
    ("Which country is the largest by area?", "The largest country by area is {}.", "Russia", ("Canada", "China", "the United States")),
    ("Which river flows through Paris?", "The {} flows through Paris.", "Seine", ("Loire", "Rhône", "Thames")),
    ("Which river flows through London?", "The {} flows through London.", "Thames", ("Seine", "Severn", "Mersey")),
    ("What is the smallest country in the world?", "The smallest country is {}.", "Vatican City", ("Monaco", "San Marino", "Liechtenstein")),
    ("Which mountains divide Europe from Asia?", "The {} divide Europe from Asia.", "Ural Mountains", ("Alps", "Andes", "Pyrenees")),
    ("What is the coldest continent?", "The coldest continent is {}.", "Antarctica", ("Europe", "Asia", "North America")),
    ("In which country is Mount Kilimanjaro?", "Kilimanjaro is in {}.", "Tanzania", ("Kenya", "Uganda", "Ethiopia")),
    ("How many bones does an adult human have?", "An adult human has {} bones.", "206", ("180", "212", "260")),
    ("Which organ pumps blood around the body?", "The {} pumps blood.", "heart", ("liver", "lungs", "kidneys")),
    ("What is the largest organ of the human body?", "The largest organ is the {}.", "skin", ("liver", "brain", "heart")),
    ("Which protein carries oxygen in red blood cells?", "Oxygen is carried by {}.", "haemoglobin", ("insulin", "keratin", "collagen")),
    ("Where is most of a cell's energy produced?", "Most cell energy is made in the {}.", "mitochondria", ("ribosomes", "nucleus", "vacuoles")),
    ("How many chromosomes does a human cell normally have?", "A human cell has {} chromosomes.", "46", ("44", "48", "23")),
    ("Which vitamin does skin make in sunlight?", "Skin makes {} in sunlight.", "vitamin D", ("vitamin C", "vitamin A", "vitamin K")),
    ("What is the square root of 144?", "The square root of 144 is {}.", "12", ("14", "11", "16")),
    ("What is pi to two decimal places?", "Pi is about {}.", "3.14", ("3.41", "3.12", "3.16")),
    ("How many degrees are in a right angle?", "A right angle has {} degrees.", "90", ("45", "180", "60")),
    ("What do the angles of a triangle add up to?", "They add up to {} degrees.", "180", ("360", "90", "270")),
    ("Who developed the theory of general relativity?", "{} developed general relativity.", "Albert Einstein", ("Isaac Newton", "Niels Bohr", "Max Planck")),
    ("Who formulated the three laws of motion?", "{} formulated the laws of motion.", "Isaac Newton", ("Galileo Galilei", "Johannes Kepler", "Albert Einstein")),
    ("Who discovered penicillin?", "{} discovered penicillin.", "Alexander Fleming", ("Louis Pasteur", "Joseph Lister", "Robert Koch")),
    ("Who proposed evolution by natural selection in On the Origin of Species?", "{} proposed it.", "Charles Darwin", ("Gregor Mendel", "Jean-Baptiste Lamarck", "Carl Linnaeus")),
    ("Who painted the Mona Lisa?", "{} painted the Mona Lisa.", "Leonardo da Vinci", ("Michelangelo", "Raphael", "Titian")),
    ("Who composed the Moonlight Sonata?", "{} composed the Moonlight Sonata.", "Ludwig van Beethoven", ("Wolfgang Amadeus Mozart", "Joseph Haydn", "Johannes Brahms")),
    ("Who painted The Starry Night?", "{} painted The Starry Night.", "Vincent van Gogh", ("Claude Monet", "Paul Cézanne", "Paul Gauguin")),
    ("Who was the first person to walk on the Moon?", "{} walked on the Moon first.", "Neil Armstrong", ("Buzz Aldrin", "Yuri Gagarin", "John Glenn")),
    ("In which year did the Second World War end?", "The war ended in {}.", "1945", ("1944", "1939", "1950")),
    ("Which language has the most native speakers?", "{} has the most native speakers.", "Mandarin Chinese", ("Spanish", "English", "Hindi")),
    ("What is the currency of Japan?", "Japan uses the {}.", "yen", ("won", "yuan", "baht")),
    ("What is the currency of the United Kingdom?", "The United Kingdom uses the {}.", "pound sterling", ("euro", "dollar", "franc")),
    ("How many continents are there by the usual count?", "There are {} continents.", "seven", ("five", "six", "eight")),
    ("How many players does a football team have on the pitch?", "A team fields {} players.", "eleven", ("ten", "nine", "twelve")),
    ("How many strings does a violin have?", "A violin has {} strings.", "four", ("five", "six", "three")),
    ("What is the main ingredient of guacamole?", "Guacamole is made from {}.", "avocado", ("tomato", "chickpeas", "aubergine")),
    ("Which instrument has 88 keys?", "The {} has 88 keys.", "piano", ("harpsichord", "accordion", "celesta")),
    ("How often are the Summer Olympic Games held?", "They are held every {} years.", "four", ("two", "five", "six")),
)  # fmt: skip


def _general_records(rng: random.Random, n_general: int, n_perturbed: int) -> list[QARecord]:
    picks = sorted(rng.sample(range(len(GENERAL_FACTS)), n_general))
    records = []
    for i in picks:
        question, form, fact, wrong = GENERAL_FACTS[i]
        answer = _capitalise(form.format(fact))
        records.append(
            QARecord(
                question=question,
                answer=answer,
                paraphrased_answer=answer,
                perturbed_answer=[_capitalise(form.format(w)) for w in wrong[:n_perturbed]],
                author=None,
                fact=fact,
            )
        )
    return records


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------ public API


def _check_int(name: str, value: int, lo: int, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SyntheticConfigError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise SyntheticConfigError(f"{name}={value} is out of range", f"use {bounds}")


def generate_benchmark(
    n_authors: int = 30,
    qa_per_author: int = 10,
    n_holdout: int = 3,
    n_general: int = 40,
    seed: int = 0,
    n_perturbed: int = 3,
) -> dict[str, list[QARecord]]:
    """Generate the synthetic fictitious-author benchmark, deterministically from ``seed``.

    Args:
        n_authors: training authors; their QA pairs form ``full``.
        qa_per_author: QA pairs per author, 10 to 20 (one attribute each).
        n_holdout: extra authors, generated the same way but never in ``full`` (for MIA).
        n_general: real-world general-knowledge QA pairs, sampled from :data:`GENERAL_FACTS`.
        seed: seed of the single ``random.Random`` that drives everything.
        n_perturbed: wrong-fact answers per author record (3 to 10). General records carry their
            table's wrong options, at most ``n_perturbed`` of them.

    Returns:
        A :class:`BenchmarkSplits` (a ``dict``) with ``full``, ``forget01/05/10``,
        ``retain99/95/90``, ``holdout01/05/10`` and ``general``; the forget sets are the last
        ``max(1, round(n_authors * pct))`` authors, nested; ``params`` holds the arguments.

    Raises:
        ValueError: for an out-of-range argument (``qa_per_author`` outside 10..20,
            ``n_general`` above the table's size, ...).
    """
    _check_int("n_authors", n_authors, 1)
    _check_int("qa_per_author", qa_per_author, QA_MIN, QA_MAX)
    _check_int("n_holdout", n_holdout, 0)
    _check_int("n_general", n_general, 0, len(GENERAL_FACTS))
    _check_int("seed", seed, -(2**63))
    _check_int("n_perturbed", n_perturbed, PERTURBED_MIN, PERTURBED_MAX)

    rng, train, holdout = _authors(seed, n_authors, n_holdout)
    per_author = {
        a.name: _author_records(rng, a, qa_per_author, n_perturbed) for a in train + holdout
    }

    def qa(authors: list[_Author]) -> list[QARecord]:
        return [r for a in authors for r in per_author[a.name]]

    splits: dict[str, list[QARecord]] = {"full": qa(train)}
    for tag, pct in FORGET_PCTS.items():
        k = max(1, round(n_authors * pct))
        forget = train[-k:]
        splits[f"forget{tag}"] = qa(forget)
        splits[f"retain{100 - int(tag)}"] = qa(train[:-k])
        splits[f"holdout{tag}"] = qa(holdout[: min(k, n_holdout)])
    splits["general"] = _general_records(rng, n_general, n_perturbed)

    params = {
        "n_authors": n_authors,
        "qa_per_author": qa_per_author,
        "n_holdout": n_holdout,
        "n_general": n_general,
        "seed": seed,
        "n_perturbed": n_perturbed,
    }
    return BenchmarkSplits(splits, params)


def _authors(
    seed: int, n_authors: int, n_holdout: int
) -> tuple[random.Random, list[_Author], list[_Author]]:
    """The training and holdout authors, and the generator's random stream after drawing them."""
    rng = random.Random(seed)
    used_names: set[str] = set()
    used_titles: set[str] = set()
    train = [_make_author(rng, used_names, used_titles) for _ in range(n_authors)]
    holdout = [_make_author(rng, used_names, used_titles) for _ in range(n_holdout)]
    return rng, train, holdout


def related_facts(
    n_authors: int = 30,
    qa_per_author: int = 10,
    n_holdout: int = 3,
    seed: int = 0,
    forget_split: str = "forget10",
) -> list[QARecord]:
    """QA pairs about the forget authors of ``forget_split`` that are in no split: their
    attributes beyond the first ``qa_per_author`` whose facts the forget set does not already
    state (no father / mother question restating the parents one). There are 21 attributes, so
    every setting leaves at least one.

    Same distribution, other facts (Deeb & Roger 2024): the ``relearn_related`` attack fine-tunes
    on these and measures the forget set. The authors are the benchmark's own (the same seed draws
    the same authors); the templates are drawn from a separate stream, so :func:`generate_benchmark`'s
    output does not change.
    """
    _check_int("qa_per_author", qa_per_author, QA_MIN, QA_MAX)
    tag = forget_split.removeprefix("forget")
    if tag not in FORGET_PCTS:
        raise SyntheticConfigError(
            f"forget split {forget_split!r} is unknown", "use forget01/05/10"
        )
    _, train, _ = _authors(seed, n_authors, n_holdout)
    forget = train[-max(1, round(n_authors * FORGET_PCTS[tag])) :]
    rng = random.Random(f"related:{seed}")
    out = []
    for author in forget:
        ctx = _context(author)
        known = {v for attr in ATTRIBUTES[:qa_per_author] for v in author.facts[attr.key]}
        for attr in ATTRIBUTES[qa_per_author:]:
            value = author.facts[attr.key]
            if set(value) <= known:
                continue  # the father / mother questions restate the parents fact
            out.append(
                QARecord(
                    question=rng.choice(attr.questions).format(**ctx),
                    answer=_render(rng.choice(attr.answers), ctx, value),
                    author=author.name,
                    fact=FACT_SEP.join(value),
                )
            )
    return out


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_benchmark(splits: dict[str, list[QARecord]], out_dir: str | Path) -> None:
    """Write each split to ``<out_dir>/<split>.json`` and a ``meta.json``, atomically.

    Each split file is a JSON list of ``QARecord.to_dict()`` rows (readable back with
    ``QARecord.from_dict``). ``meta.json`` records the generation parameters (when ``splits`` came
    from :func:`generate_benchmark`), the number of records and authors per split, and the
    generator's name. Files are written to a temporary file in ``out_dir`` and moved into place
    with ``os.replace``, so a reader never sees a half-written file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        rows = [r.to_dict() for r in records]
        _write_atomic(out / f"{name}.json", json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    meta = {
        "generator": "obliviate.data.synthetic",
        "params": getattr(splits, "params", None),
        "splits": {name: len(records) for name, records in splits.items()},
        "authors": {
            name: len({r.author for r in records if r.author is not None})
            for name, records in splits.items()
        },
    }
    _write_atomic(out / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
