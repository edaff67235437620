"""open_clip's HFTokenizer for BiomedCLIP in Python (ftfy + html cleaning, then HF tokenizers with
the model's tokenizer.json, truncated to the context length): the reference for the Rust tests
of long texts. Usage: reference_tokenize.py TOKENIZER.json CONTEXT INPUT.json OUTPUT.json
(a JSON list of strings in; a list of {"ids": [...], "cut": bool} out, "cut" when the
context length dropped tokens)."""
import json
import os
import sys

from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_clean import clean  # noqa: E402

if __name__ == "__main__":
    tokenizer_path, context, input_path, output_path = sys.argv[1:5]
    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_padding()
    tok.enable_truncation(int(context))
    with open(input_path) as f:
        cases = json.load(f)
    out = []
    for text in cases:
        enc = tok.encode(clean(text))
        out.append({"ids": enc.ids, "cut": len(enc.overflowing) > 0})
    with open(output_path, "w") as f:
        json.dump(out, f)
