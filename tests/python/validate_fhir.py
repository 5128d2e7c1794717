"""Parses every *.json Bundle in a folder with fhir.resources (FHIR R4 models, pydantic) and
checks every entry's resource type and required elements. Prints invalid ones; exit 1 if any.

Usage: validate_fhir.py BUNDLE_DIR
"""
import json
import os
import sys

from fhir.resources.bundle import Bundle


def main():
    d = sys.argv[1]
    names = sorted(f for f in os.listdir(d) if f.endswith(".json"))
    bad = 0
    for name in names:
        with open(os.path.join(d, name)) as f:
            data = json.load(f)
        try:
            Bundle.parse_obj(data)
        except Exception as e:  # the validator's message names the element, never patient data of ours
            bad += 1
            print("%s: %s" % (name, str(e)[:500]))
    print("fhir.resources: %d of %d bundles valid" % (len(names) - bad, len(names)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
