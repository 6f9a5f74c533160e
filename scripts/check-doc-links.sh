#!/bin/sh
# Checks that every relative link in README.md and docs/*.md names a file
# that exists and, with a #fragment, a heading of that Markdown file
# (GitHub's anchor rule). Prints each broken link; exits 1 if there is one.
# Usage: scripts/check-doc-links.sh  (from anywhere inside the repository)
set -eu
cd "$(dirname "$0")/.."
exec python3 - README.md docs/*.md <<'PY'
import os, re, sys

def anchors(path):
    """GitHub heading anchors of a Markdown file, with -1, -2 for repeats."""
    seen, out, fence = {}, set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip()
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out

bad = 0
for src in sys.argv[1:]:
    text = re.sub(r"```.*?```", "", open(src, encoding="utf-8").read(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto: are not checked here
        path, _, frag = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(src), path)) if path else src
        if not os.path.exists(dest):
            print(f"{src}: {target}: no such file {dest}")
            bad += 1
        elif frag and dest.endswith(".md") and frag not in anchors(dest):
            print(f"{src}: {target}: no heading #{frag} in {dest}")
            bad += 1
sys.exit(1 if bad else 0)
PY
