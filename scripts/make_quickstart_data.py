"""Writes the small English NER corpus bundled for the quickstart (seqtag/examples/quickstart/*.conll).

Sentences are drawn from templates filled with names of people, places, organisations and miscellaneous entities,
with distractor words that look like entities (capitalised sentence starts, months, titles), tagged in IOB2.
Deterministic: the same files come out on every machine.

    python scripts/make_quickstart_data.py
"""

from __future__ import annotations

import random
from pathlib import Path

FIRST = (
    "Anna Peter Maria John Li Wei Fatima Carlos Sofia Ivan Aisha Kenji Olga Pierre Hannah Diego Amara Lars Mei Omar"
).split()
LAST = (
    "Schmidt Johnson Rossi Nakamura Okafor Garcia Novak Dubois Larsen Chen Haddad Kowalski Silva Murphy Ivanova Tanaka"
).split()
LOC = [
    "Berlin",
    "Paris",
    "Lagos",
    "Tokyo",
    "New York",
    "Buenos Aires",
    "Cairo",
    "Oslo",
    "Mumbai",
    "Lima",
    "Toronto",
    "Nairobi",
    "Madrid",
    "Seoul",
    "Rio de Janeiro",
    "Germany",
    "Brazil",
    "Kenya",
    "Japan",
    "Canada",
    "the Alps",
]
ORG = [
    "Siemens",
    "the United Nations",
    "Reuters",
    "Toyota",
    "the World Bank",
    "Acme Corp",
    "Nordic Rail",
    "the Red Cross",
    "Bank of Canada",
    "Real Madrid",
    "Apex Labs",
    "Globex",
    "the European Commission",
    "UNESCO",
]
MISC = ["German", "French", "Olympic", "Nobel", "Japanese", "Brazilian", "Christmas", "World Cup", "Euro", "English"]
# Names that only dev and test use, so the scores say how well the tagger generalises from context and spelling.
UNSEEN = {
    "FIRST": "Greta Tomas Nadia Yusuf Elena Marco Ingrid Kwame".split(),
    "LAST": "Bergstrom Adeyemi Moreau Petrov Sato Costa".split(),
    "LOC": ["Lisbon", "Accra", "Hanoi", "Vienna", "Chile", "Norway", "Santiago"],
    "ORG": ["Orbital Systems", "Vantor Bank", "the Arctic Council", "Helix Pharma"],
    "MISC": ["Swedish", "Paralympic", "Korean", "Easter"],
}
TEMPLATES = [
    "{PER} arrived in {LOC} on Monday .",
    "{PER} , a spokesman for {ORG} , said the talks would continue .",
    "Shares of {ORG} rose 3 percent in {LOC} trading .",
    "The {MISC} team beat {LOC} 2-1 in the final .",
    "{ORG} said on Tuesday it would open an office in {LOC} .",
    "{PER} met {PER} in {LOC} to discuss the {MISC} proposal .",
    "Police in {LOC} arrested two men , {ORG} reported .",
    "{PER} won the {MISC} prize for her work on climate models .",
    "Talks between {ORG} and {ORG} ended without agreement .",
    "In March , {PER} moved from {LOC} to {LOC} .",
    "The {MISC} government asked {ORG} for help .",
    "{PER} told reporters that {ORG} had no plans to leave {LOC} .",
    "Rain delayed the match in {LOC} for two hours .",
    "Analysts expect {ORG} to report higher profits this year .",
    "{PER} scored twice as {ORG} won in {LOC} .",
    "Thousands gathered in {LOC} for the {MISC} celebrations .",
]


def fill(template: str, rng: random.Random, unseen: float) -> tuple[list[str], list[str]]:
    """Fills a template; each entity comes from the held-out names with probability ``unseen``."""

    def names(kind: str) -> list[str]:
        seen = {"FIRST": FIRST, "LAST": LAST, "LOC": LOC, "ORG": ORG, "MISC": MISC}[kind]
        return UNSEEN[kind] if rng.random() < unseen else seen

    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        if word.startswith("{") and word.endswith("}"):
            kind = word[1:-1]
            if kind == "PER":
                first, last = rng.choice(names("FIRST")), rng.choice(names("LAST"))
                entity = [first, last] if rng.random() < 0.7 else [last]
            else:
                entity = rng.choice(names(kind)).split()
            tokens += entity
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def main() -> None:
    rng = random.Random(2024)
    out = Path(__file__).resolve().parent.parent / "seqtag" / "examples" / "quickstart"
    out.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 1500), ("dev", 300), ("test", 300)):
        lines = []
        for _ in range(count):
            tokens, tags = fill(rng.choice(TEMPLATES), rng, unseen=0.0 if split == "train" else 0.4)
            lines += [f"{token} {tag}" for token, tag in zip(tokens, tags)] + [""]
        (out / f"{split}.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{out / split}.conll: {count} sentences")


if __name__ == "__main__":
    main()
