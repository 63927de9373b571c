"""Compare edge_rt's pre-tokenizers with llama.cpp's own word splitter, word for word.

Builds a small program around the vendored llama.cpp's ``unicode_regex_split`` (src/unicode.cpp and
src/unicode-data.cpp from the pinned llama-cpp-python sdist, fetched and cached as the tests do) with
the system C++ compiler, then splits random texts with every distinct regex list of ``PRE_TYPES`` on
both sides. The test suite compares token ids through llama-cpp-python; this compares the words
themselves, which shows where a split differs even when the vocabulary would hide it.

Usage: PYTHONPATH=. python tools/pretokenize_vs_llamacpp.py [--count N] [--seed S] [--cxx g++]
(edge_rt comes from the environment, as for every script here: PYTHONPATH=. tests the working tree.)
Exit status 1 when a split differs (the first differences are printed).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # vocab_data: the vendored sources, fetched and cached

from edge_rt.tokenizer.pretokenize import PRE_TYPES, PreTokenizer  # noqa: E402

from vocab_data import cache_root, llama_cpp_source  # noqa: E402

_MAIN = r"""
#include "unicode.h"
#include <iostream>
#include <string>
#include <vector>
static std::string unhex(const std::string & h) {
    std::string o;
    for (size_t i = 0; i + 1 < h.size(); i += 2) o.push_back((char) std::stoi(h.substr(i, 2), nullptr, 16));
    return o;
}
static std::string tohex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string o;
    for (unsigned char c : s) { o.push_back(d[c >> 4]); o.push_back(d[c & 15]); }
    return o;
}
// input, repeated: a line with the number of regexes, one hex line per regex, one hex line of text;
// output: one line per text, the words in hex separated by spaces (empty words as '-')
int main() {
    std::string line;
    while (std::getline(std::cin, line)) {
        int k = std::stoi(line);
        std::vector<std::string> exprs;
        for (int i = 0; i < k; i++) { std::getline(std::cin, line); exprs.push_back(unhex(line)); }
        std::getline(std::cin, line);
        for (auto & w : unicode_regex_split(unhex(line), exprs, false)) {
            std::cout << (w.empty() ? "-" : tohex(w)) << " ";
        }
        std::cout << "\n" << std::flush;
    }
}
"""


def _build(cxx: str) -> Path:
    """The splitter program, compiled once per source version into the test-data cache."""
    srcs = {}
    for name in ("unicode.cpp", "unicode.h", "unicode-data.cpp", "unicode-data.h"):
        path, why = llama_cpp_source(name)
        if path is None:
            sys.exit(f"llama.cpp sources: {why}")
        srcs[name] = path
    digest = hashlib.sha256(_MAIN.encode() + b"".join(p.read_bytes() for p in srcs.values())).hexdigest()[:16]
    exe = cache_root() / "bin" / f"unicode-split-{digest}"
    if not exe.exists():
        exe.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            main = Path(tmp) / "main.cpp"
            main.write_text(_MAIN)
            out = Path(tmp) / "split"
            subprocess.run([cxx, "-O1", "-std=c++17", "-I", str(srcs["unicode.h"].parent), "-o", str(out), str(main),
                            str(srcs["unicode.cpp"]), str(srcs["unicode-data.cpp"])], check=True)
            shutil.move(str(out), str(exe))
    return exe


def _texts(seed: int, count: int) -> List[str]:
    rng = random.Random(seed)
    pieces = list(" \t\n\r\x0b\x0c\u00a0\u3000\u2028\u0085'sStTrReEvVlLmMdD0123456789aZ.,!?$+<=>^~|`_-()[]{}"
                  "\\/\"#%&*@:;")
    pieces += list("éüßñçÅΩжЖ中文日本한국ภาษ٣௧１²½ⅷ龥㐀豈ひらカタｶﾀㄱㅎㄅภไกขကခ…。，、！：；“”‘’—।۔،〃︰﹏")
    pieces += ["\u0301", "\u0300", "\u0951", "\u200d", "\ufe0f", "🦙", "👨", "🏽", "\U0001fae8", "\U000e0001",
               "\ue000", "\u0378", "\u2581", "\x00", "\x1c", "\x7f", "कि", "ǅ", "ʰ", "ǀ", "Ⅻ", "\u1f7d", "µ",
               "Ab", "aB", "ABC", "abc", "Hello", "1234567", "12345", "IMGIMG", "ABCDEFGHIZ", "<sentinel:12>",
               "    ", "\r\n", "\n\n", "'S", "'ll", "'VE"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 80))) for _ in range(count)]


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500, help="random texts per regex list (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cxx", default="c++", help="C++ compiler (default c++)")
    args = ap.parse_args(argv)
    exe = _build(args.cxx)
    texts = _texts(args.seed, args.count)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    failed = 0
    seen = set()
    for name, entry in PRE_TYPES.items():
        if entry.regexes in seen:
            continue
        seen.add(entry.regexes)
        ours_split = PreTokenizer(entry.regexes).split
        head = f"{len(entry.regexes)}\n" + "".join(e.encode().hex() + "\n" for e in entry.regexes)
        bad = []
        for text in texts:
            proc.stdin.write(head + text.encode().hex() + "\n")
            proc.stdin.flush()
            ref = [bytes.fromhex(w).decode("utf-8") for w in proc.stdout.readline().split() if w != "-"]
            ours = ours_split(text)
            if ours != ref:
                bad.append((text, ours, ref))
        print(f"{name or '(none)':28s} {len(texts) - len(bad)}/{len(texts)} texts split alike")
        for text, ours, ref in bad[:3]:
            print(f"    {text!r}\n      edge_rt:   {ours!r}\n      llama.cpp: {ref!r}")
        failed += bool(bad)
    proc.stdin.close()
    proc.wait()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
