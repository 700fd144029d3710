#!/usr/bin/env python3
"""Derives the name lists of the realistic-handle generator (benches/support/handles.rs) from the
person providers of the PyPI package Faker (MIT licence), version 40.63.0.

Run once, by hand, in a virtualenv with `pip install faker==40.63.0`:

    python3 benches/data/handles/derive.py

Writes one file per locale, `<locale>.tsv`, lines `g|s<TAB>name<TAB>weight`: given names
(Faker's `first_names`, or for ja_JP its romanized lists) and surnames (`last_names`; for
pl_PL also `male_last_names` and `unisex_last_names`), folded to plain a-z like
data/names/derive.py folds them. Weights are Faker's where it has them (its OrderedDict lists),
1 otherwise. Names are kept as spelled: the matcher's own folding is what is being tested.

This is deliberately another source than data/names/ (which comes from the PyPI package
nominate): the matcher's commonness table and the benchmark's population must not share one.
"""
import importlib
import os
import unicodedata

SPECIAL = {"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "đ": "d", "ı": "i", "œ": "oe", "þ": "th", "ð": "d"}
LOCALES = ["en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "pl_PL", "nl_NL", "sv_SE", "tr_TR", "ja_JP"]
# The fresh held-out split's locales, added later and never tuned on (see handles.rs).
LOCALES += ["pt_BR", "cs_CZ", "fi_FI", "hu_HU", "id_ID"]
# The second fresh held-out split's locales, added when the first had been looked at.
LOCALES += ["lt_LT", "hr_HR", "ro_RO", "da_DK", "yo_NG"]


def ascii_fold(s):
    s = "".join(SPECIAL.get(c, c) for c in s.lower())
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if "a" <= c <= "z")


def weighted(items):
    if isinstance(items, dict):
        return list(items.items())
    return [(n, 1.0) for n in items]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for loc in LOCALES:
        p = importlib.import_module(f"faker.providers.person.{loc}").Provider
        if loc == "ja_JP":
            given, surnames = weighted(p.first_romanized_names), weighted(p.last_romanized_names)
        else:
            given = weighted(p.first_names)
            surnames = weighted(p.last_names) if hasattr(p, "last_names") else []
            if loc == "pl_PL":
                surnames = weighted(p.male_last_names) + weighted(p.unisex_last_names)
        rows = {}
        for kind, items in (("g", given), ("s", surnames)):
            for name, w in items:
                plain = ascii_fold(name)
                if len(plain) >= 2:
                    rows[(kind, plain)] = rows.get((kind, plain), 0.0) + float(w)
        with open(os.path.join(here, f"{loc}.tsv"), "w") as out:
            for (kind, name), w in sorted(rows.items()):
                out.write(f"{kind}\t{name}\t{w:g}\n")


if __name__ == "__main__":
    main()
