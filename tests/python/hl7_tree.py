"""Parses HL7 v2 files with python-hl7 (the `hl7` package) and prints, as JSON, every value
it yields: for each file, each segment's name and every field expanded to
repetitions -> components -> subcomponents (raw), plus python-hl7's unescaped text of each
subcomponent. Used by tests/agreement.rs to compare the Sluice parser with an independent one.

Usage: hl7_tree.py DIR  (reads DIR/*.hl7, prints {file: {"segments": [...]} | {"error": ...}})
"""
import json
import os
import sys

import hl7


def expand(field):
    if isinstance(field, str):
        return [[[field]]]
    reps = []
    for r in field:
        if isinstance(r, str):
            reps.append([[r]])
            continue
        comps = []
        for c in r:
            comps.append([c] if isinstance(c, str) else [str(s) for s in c])
        reps.append(comps)
    return reps


def tree(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    msg = hl7.parse(text)
    segments = []
    for seg in msg:
        name = str(seg[0])
        fields = [expand(f) for f in seg[1:]]
        literal = 2 if name in ("MSH", "FHS", "BHS") else 0
        text_fields = []
        for i, f in enumerate(fields):
            if i < literal:
                text_fields.append(f)
            else:
                text_fields.append([[[msg.unescape(s) for s in c] for c in r] for r in f])
        segments.append({"name": name, "fields": fields, "text": text_fields})
    return {"segments": segments}


def main():
    out = {}
    d = sys.argv[1]
    for name in sorted(os.listdir(d)):
        if not name.endswith(".hl7"):
            continue
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        try:
            out[name] = tree(data)
        except Exception as e:  # report, the Rust side decides
            out[name] = {"error": "%s: %s" % (type(e).__name__, e)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
