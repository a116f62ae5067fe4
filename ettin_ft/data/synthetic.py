"""A deterministic, offline synthetic world in the style of the "bioS" biographies.

Each fictional person has a full name, birth date, birth city, university, major and employer, rendered
with many sentence templates. One world yields every kind of data the package trains on: pretraining
text, retrieval pairs, a held-out BEIR split, reranking examples, SFT chats, question topics (which attribute a
question asks for), true/false claims with their evidence, and zero-shot multiple-choice facts (zeroshot/, one task
per attribute: which of four employers, cities, ... a person has).
People are split into a training part and a held-out part; pretraining text covers everyone (as in the
bioS knowledge-extraction setting), while every fine-tuning set is split by person.

    python -m ettin_ft.data.synthetic --output-dir data/world --people 200 --seed 0
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass
from functools import cached_property

from ..errors import ArgumentParser, EttinError, check_output_dir, cli_entry

FIRST_NAMES = (
    "Alice Amara Beatrix Camila Dalia Elena Freya Greta Hana Ines Jolene Kira Leona Maren Nadia Odette "
    "Priya Quinn Rosa Selma Tamsin Ursula Vera Wren Ximena Yara Zelda Aaron Bruno Cyrus Dorian Emil "
    "Felix Gideon Hugo Ivan Jonas Kasimir Lucian Milo Nolan Oren Pavel Rafael Silas Tobias Ulrich "
    "Viktor Wendell Xavier Yusuf Zane"
).split()
FEMALE = set(FIRST_NAMES[:27])
MIDDLE_NAMES = "Rae Lee Jo Mae Ann Jay Kai Ray Sol Lou Eve Max Noel Sky Bo Dale".split()
LAST_NAMES = (
    "Abernathy Blackwood Castellano Delacroix Eastwood Fairbanks Galloway Hargrove Ingram Jablonski "
    "Kowalczyk Lindqvist Montague Northcott Oyelaran Pemberton Quintero Rasmussen Sandoval Thornbury "
    "Underhill Valentini Whitlock Yamamoto Zielinski Ashworth Brennan Calloway Dunmore Ellsworth "
    "Fitzgerald Grimaldi Holloway Iversen Kensington Lockhart Marchetti Nakamura Okonkwo Prescott"
).split()
CITIES = (
    "Lisbon;Kyoto;Tbilisi;Montevideo;Reykjavik;Nairobi;Krakow;Valparaiso;Hobart;Tromso;Cusco;Ghent;"
    "Porto Alegre;Salzburg;Zanzibar;Halifax;Bergen;Tallinn;Da Nang;Marrakesh;Cork;Ljubljana;Perth;"
    "Oaxaca;Trieste;Uppsala;Windhoek;Yerevan;Quebec City;Seville"
).split(";")
UNIVERSITIES = (
    "Harrowgate University;the University of Eldermoor;Brightwater Institute of Technology;"
    "Saint Alder College;the Royal Academy of Westmarch;Northvale University;Crestfield Polytechnic;"
    "the University of Ashbury;Lakeshore State University;Marbleton College;Redcliff University;"
    "the Institute of Sunhaven;Greywater University;Oakridge College;the University of Fenwick"
).split(";")
MAJORS = (
    "Marine Biology;Civil Engineering;Medieval History;Astrophysics;Linguistics;Organic Chemistry;"
    "Economics;Philosophy;Computer Science;Architecture;Geology;Musicology;Statistics;Anthropology;"
    "Nursing;Urban Planning;Mathematics;Journalism"
).split(";")
EMPLOYERS = (
    "Veridian Shipping;Kestrel Aerospace;Lumen Pharmaceuticals;Halcyon Bank;Tidewater Energy;"
    "Corvid Software;Mosaic Publishing;Ironleaf Robotics;Bluefin Foods;Silverline Railways;"
    "Quartz Analytics;Northwind Textiles;Solstice Hotels;Granite Insurance;Pinecrest Hospital;"
    "Aurora Telecom;Beacon Logistics;Cobalt Mining;Driftwood Studios;Emberly Chemicals"
).split(";")
MONTHS = "January February March April May June July August September October November December".split()

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer")

# Sentence templates per attribute ({name} is the full name, or a pronoun after the first sentence).
TEMPLATES = {
    "birth_date": (
        "{name} was born on {value}.",
        "{name} came into the world on {value}.",
        "{name} celebrates a birthday on {value}.",
        "The birth date of {name} is {value}.",
        "{name}'s life began on {value}.",
    ),
    "birth_city": (
        "{name} was born in {value}.",
        "{name} spent early years in {value}.",
        "{name} is a native of {value}.",
        "The hometown of {name} is {value}.",
        "{name} grew up in {value}.",
    ),
    "university": (
        "{name} studied at {value}.",
        "{name} graduated from {value}.",
        "{name} received an education at {value}.",
        "{name} is an alumnus of {value}.",
        "{name} attended {value}.",
    ),
    "major": (
        "{name} majored in {value}.",
        "{name} earned a degree in {value}.",
        "{name} specialized in {value}.",
        "{name} focused on {value} while at university.",
        "The field of study of {name} was {value}.",
    ),
    "employer": (
        "{name} works for {value}.",
        "{name} is employed by {value}.",
        "{name} has a job at {value}.",
        "{name} earns a living at {value}.",
        "{name} is on the staff of {value}.",
    ),
}
QUESTIONS = {
    "birth_date": ("When was {name} born?", "What is the birth date of {name}?", "On what day was {name} born?"),
    "birth_city": ("Where was {name} born?", "In which city was {name} born?", "What is the hometown of {name}?"),
    "university": ("Which university did {name} attend?", "Where did {name} study?", "Where did {name} graduate from?"),
    "major": ("What did {name} study?", "What was the major of {name}?", "Which field did {name} specialize in?"),
    "employer": ("Who employs {name}?", "Which company does {name} work for?", "Where does {name} work?"),
}
VALUES = {"birth_city": CITIES, "university": UNIVERSITIES, "major": MAJORS, "employer": EMPLOYERS}
# Named entities of a biography, tagged in BIO: the person (by name, not by pronoun) and three of the values.
ENTITY_TYPES = {"name": "person", "birth_city": "city", "university": "university", "employer": "employer"}
WORD = re.compile(r"'s\b|\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words and punctuation, "'s" apart: "Ann's job." → Ann, 's, job, ."""
    return WORD.findall(text)


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    female: bool
    birth_date: str
    birth_city: str
    university: str
    major: str
    employer: str

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


class SyntheticWorld:
    """A world of ``people`` fictional people; the same (people, seed) always gives the same data."""

    def __init__(self, people: int = 200, seed: int = 0, held_out: float = 0.2, biographies_per_person: int = 3):
        max_people = len(FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES)
        if not 5 <= people <= max_people:
            raise EttinError(f"people must be between 5 and {max_people}, got {people}")
        if not 0 < held_out < 1:
            raise EttinError(f"held_out must be a fraction between 0 and 1, got {held_out}")
        self.seed = seed
        self.biographies_per_person = biographies_per_person
        rng = random.Random(seed)
        names = rng.sample(
            [(f, m, l) for f in FIRST_NAMES for m in MIDDLE_NAMES for l in LAST_NAMES], people
        )
        self.people = [
            Person(
                id=i,
                name=f"{first} {middle} {last}",
                female=first in FEMALE,
                birth_date=f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1940, 2005)}",
                **{attribute: rng.choice(VALUES[attribute]) for attribute in VALUES},
            )
            for i, (first, middle, last) in enumerate(names)
        ]
        n_held_out = max(1, round(people * held_out))
        self.train_people = self.people[:-n_held_out]
        self.test_people = self.people[-n_held_out:]

    def _rng(self, *salt) -> random.Random:
        return random.Random(f"{self.seed}:" + ":".join(map(str, salt)))

    def _people(self, split: str) -> list[Person]:
        if split not in ("train", "test"):
            raise EttinError(f"unknown split {split!r}; expected 'train' or 'test'")
        return self.train_people if split == "train" else self.test_people

    def biography(self, person: Person, variant: int = 0) -> str:
        """One rendering: random templates, random sentence order, pronouns after the first sentence."""
        rng = self._rng("bio", person.id, variant)
        attributes = list(ATTRIBUTES)
        rng.shuffle(attributes)
        pronoun = "She" if person.female else "He"
        sentences = []
        for position, attribute in enumerate(attributes):
            template = rng.choice(TEMPLATES[attribute])
            # Later sentences refer to the person by pronoun where the name opens the sentence.
            if position == 0 or not template.startswith("{name}"):
                subject = person.name
            elif template.startswith("{name}'s"):
                template, subject = template.replace("{name}'s", "{name}", 1), "Her" if person.female else "His"
            else:
                subject = pronoun
            sentences.append(template.format(name=subject, value=person.value(attribute)))
        return " ".join(sentences)

    def question(self, person: Person, attribute: str, variant: int = 0) -> str:
        return self._rng("q", person.id, attribute, variant).choice(QUESTIONS[attribute]).format(name=person.name)

    # ------------------------------------------------------------------------------ derived datasets

    def pretraining_texts(self) -> list[str]:
        """Several biographies of every person (train and held-out), shuffled."""
        texts = [self.biography(p, v) for p in self.people for v in range(self.biographies_per_person)]
        self._rng("pretrain").shuffle(texts)
        return texts

    def _hard_negative(self, person: Person, rng: random.Random) -> Person:
        """Another person, preferably one sharing a first or last name (the harder confusion)."""
        first, last = person.name.split()[0], person.name.split()[-1]
        similar = [p for p in self.people if p.id != person.id and (p.name.startswith(first) or p.name.endswith(last))]
        return rng.choice(similar or [p for p in self.people if p.id != person.id])

    def retrieval_pairs(self, split: str = "train") -> list[dict]:
        """(query, positive, negative): a question about a person → a biography passage answering it."""
        rows = []
        for person in self._people(split):
            for attribute in ATTRIBUTES:
                rng = self._rng("pair", person.id, attribute)
                negative = self._hard_negative(person, rng)
                rows.append(
                    {
                        "query": self.question(person, attribute, rng.randrange(3)),
                        "positive": self.biography(person, rng.randrange(self.biographies_per_person)),
                        "negative": self.biography(negative, rng.randrange(self.biographies_per_person)),
                    }
                )
        return rows

    @cached_property
    def corpus(self) -> dict[str, dict]:
        """BEIR corpus: one biography per person (everyone), keyed by document id."""
        return {f"doc{p.id}": {"title": p.name, "text": self.biography(p, 0)} for p in self.people}

    def beir(self, split: str = "test") -> dict:
        """A BEIR split: queries about ``split`` people, judged against the corpus of everyone."""
        queries, qrels = {}, {}
        for person in self._people(split):
            for attribute in ATTRIBUTES:
                query_id = f"q{person.id}-{attribute}"
                queries[query_id] = self.question(person, attribute, 1)
                qrels[query_id] = {f"doc{person.id}": 1}
        return {"corpus": self.corpus, "queries": queries, "qrels": qrels}

    def rerank_examples(self, split: str = "train", negatives: int = 3) -> list[dict]:
        """(query, passage, label) rows: each question with its biography (1) and other biographies (0)."""
        rows = []
        for pair_index, pair in enumerate(self.retrieval_pairs(split)):
            rows.append({"query": pair["query"], "passage": pair["positive"], "label": 1})
            rows.append({"query": pair["query"], "passage": pair["negative"], "label": 0})
            rng = self._rng("rerank", split, pair_index)
            for other in rng.sample(self.people, negatives - 1):
                if other.name not in pair["query"]:
                    rows.append({"query": pair["query"], "passage": self.biography(other, 0), "label": 0})
        return rows

    def rerank_examples_about_others(self, people: int, negatives: int = 3) -> list[dict]:
        """Reranking examples about the training people of a second world of ``people`` people, leaving out
        every row that names one of this world's held-out people.

        A cross-encoder learns to match the person in the query with the one in the passage only from many
        different names; on a small world's few training people it memorises them instead.
        """
        others = SyntheticWorld(people=people, seed=self.seed + 1)
        held_out = [person.name for person in self.test_people]
        return [row for row in others.rerank_examples("train", negatives)
                if not any(name in row["query"] or name in row["passage"] for name in held_out)]

    def sft_chats(self, split: str = "train") -> list[dict]:
        """Chats: a question about a person → the short answer."""
        return [
            {
                "messages": [
                    {"role": "user", "content": self.question(person, attribute, variant)},
                    {"role": "assistant", "content": person.value(attribute)},
                ]
            }
            for person in self._people(split)
            for attribute in ATTRIBUTES
            for variant in ((0, 1) if split == "train" else (2,))
        ]

    def question_topics(self, split: str = "train") -> list[dict]:
        """Sequence classification: a question about a person → the attribute it asks for (text, label)."""
        return [{"text": self.question(person, attribute, variant), "label": attribute}
                for person in self._people(split) for attribute in ATTRIBUTES for variant in range(3)]

    def claims(self, split: str = "train") -> list[dict]:
        """True/false claims with the person's biography as evidence: (evidence, text, label, label_text), label 1
        for true and 0 for a swapped attribute value. With the evidence it is fact verification (a text pair);
        the claim alone asks what the model remembers from pretraining."""
        rows = []
        for person in self._people(split):
            evidence = self.biography(person, 0)
            for attribute in ATTRIBUTES:
                rng = self._rng("claim", person.id, attribute)
                template = rng.choice(TEMPLATES[attribute])
                others = [p.value(attribute) for p in self.people if p.value(attribute) != person.value(attribute)]
                for value, label in ((person.value(attribute), 1), (rng.choice(others), 0)):
                    rows.append({"evidence": evidence, "text": template.format(name=person.name, value=value),
                                 "label": label, "label_text": ("false", "true")[label]})
        return rows

    def entities(self, split: str = "train") -> list[dict]:
        """Token classification: every biography of the split's people as words with BIO tags for the person, the
        birth city, the university and the employer ({tokens, tags})."""
        rows = []
        for person in self._people(split):
            spans = [(split_words(person.value(attribute).removeprefix("the ")), kind)
                     for attribute, kind in ENTITY_TYPES.items()]
            for variant in range(self.biographies_per_person):
                tokens = split_words(self.biography(person, variant))
                tags = ["O"] * len(tokens)
                for words, kind in spans:
                    for start in range(len(tokens) - len(words) + 1):
                        if tokens[start:start + len(words)] == words:
                            tags[start:start + len(words)] = [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
                rows.append({"tokens": tokens, "tags": tags})
        return rows

    def multiple_choice(self, attribute: str = "employer", choices: int = 4) -> list[dict]:
        """Zero-shot items {query, choices, gold} on facts seen in pretraining, e.g. "Ann B. Lee works for" → the
        right employer among ``choices`` (the others drawn from the rest of the attribute's values)."""
        if attribute not in VALUES:
            raise EttinError(f"unknown attribute {attribute!r}; expected one of {', '.join(VALUES)}")
        query = TEMPLATES[attribute][0].split(" {value}")[0]
        rows = []
        for person in self.people:  # every person's biographies are in the pretraining text
            rng = self._rng("choice", person.id, attribute)
            options = [person.value(attribute)] + rng.sample(
                [value for value in VALUES[attribute] if value != person.value(attribute)], choices - 1)
            rng.shuffle(options)
            rows.append({"query": query.format(name=person.name), "choices": options,
                         "gold": options.index(person.value(attribute))})
        return rows

    # ------------------------------------------------------------------------------------- writing

    def write(self, output_dir: str) -> dict[str, str]:
        """Write every dataset as files the loaders read; returns {dataset name: path}."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {}

        def write_named(name: str, rows: list[dict]) -> None:
            paths[name] = write_jsonl(os.path.join(output_dir, f"{name}.jsonl"), rows)

        paths["pretrain"] = os.path.join(output_dir, "pretrain.txt")
        with open(paths["pretrain"], "w", encoding="utf-8") as handle:
            handle.writelines(text + "\n" for text in self.pretraining_texts())
        write_named("world", [asdict(p) | {"split": "train" if p in self.train_people else "test"} for p in self.people])
        for split in ("train", "test"):
            write_named(f"retrieval_{split}", self.retrieval_pairs(split))
            write_named(f"rerank_{split}", self.rerank_examples(split))
            write_named(f"sft_{split}", self.sft_chats(split))
            write_named(f"claims_{split}", self.claims(split))
            write_named(f"topics_{split}", self.question_topics(split))
            write_named(f"entities_{split}", self.entities(split))
        os.makedirs(os.path.join(output_dir, "zeroshot"), exist_ok=True)
        for attribute in VALUES:
            paths[f"zeroshot_{attribute}"] = write_jsonl(os.path.join(output_dir, "zeroshot", f"{attribute}.jsonl"),
                                                         self.multiple_choice(attribute))
        paths["retrieval_eval"] = write_beir(os.path.join(output_dir, "retrieval_eval"), **self.beir("test"))
        return paths


def write_jsonl(path: str, rows: list[dict]) -> str:
    """One JSON object per line; returns ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def write_beir(folder: str, corpus: dict, queries: dict, qrels: dict, split: str = "test") -> str:
    """Write a BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": i, **doc}, ensure_ascii=False) + "\n" for i, doc in corpus.items())
    with open(os.path.join(folder, "queries.jsonl"), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in queries.items())
    with open(os.path.join(folder, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{q}\t{d}\t{s}\n" for q, docs in qrels.items() for d, s in docs.items())
    return folder


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m ettin_ft.data.synthetic",
        description="Write the built-in synthetic world (bioS-style biographies) and every dataset derived from it.",
    )
    parser.add_argument("--output-dir", required=True, help="folder to write the datasets into")
    parser.add_argument("--people", type=int, default=200, help="number of fictional people (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives byte-identical files")
    args = parser.parse_args(argv)
    check_output_dir(args.output_dir)
    paths = SyntheticWorld(args.people, args.seed).write(args.output_dir)
    for name, path in paths.items():
        print(f"{name:16s} {path}")


if __name__ == "__main__":
    main()
