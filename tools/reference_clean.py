"""open_clip's HFTokenizer cleaning in Python, the reference for the Rust text cleaning test.
Usage: reference_clean.py INPUT.json OUTPUT.json (a JSON list of strings in, cleaned list out)."""
import html
import json
import sys

import ftfy


def clean(text):
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    return " ".join(text.split()).strip()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    with open(sys.argv[2], "w") as f:
        json.dump([clean(c) for c in cases], f)
