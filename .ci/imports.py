#!/usr/bin/env python3
"""Import rules of the house (ARCHITECTURE.md, "Import rules"): no circle among the
files of one crate's src/, and the rooms that must not know the event loop do not
import it. Reads `use crate::X` and `crate::X::` paths outside comments and outside a
file's trailing `#[cfg(test)] mod tests`.

Exit 1 with what breaks a rule.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["node/src", "storage/src", "consensus/src", "crypto/src", "node/ledger/src"]
# Files that may never import the event loop (service.rs) or the API.
NOT_THE_LOOP = {
    "node/src": {
        "api.rs": {"service"},
        "api_page.rs": {"service"},
        "api_proofs.rs": {"service"},
        "scrub.rs": {"service", "api"},
        "control.rs": {"service", "api"},
        "overview.rs": {"service", "api"},
        "mempool.rs": {"service", "api"},
        "chain.rs": {"service", "api"},
        "proposal.rs": {"service", "api"},
        "held.rs": {"service", "api"},
        "sync.rs": {"service", "api"},
        "gather.rs": {"service", "api"},
        "serve.rs": {"service", "api"},
        "gossip.rs": {"service", "api"},
        "peers.rs": {"service", "api"},
    }
}
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"use\s+crate::\{([^}]*)\}", re.S)


def modules(src):
    found = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.name in ("lib.rs", "main.rs"):
            continue
        name = rel.parts[0].removesuffix(".rs")
        found.setdefault(name, []).append(path)
    return found


def edges(src):
    mods = modules(src)
    graph = {m: set() for m in mods}
    for name, paths in mods.items():
        for path in paths:
            # Comments name modules without importing them, and a file's own
            # test module (at its end) may use any sibling.
            text = path.read_text().split("#[cfg(test)]\nmod tests")[0]
            text = re.sub(r"//[^\n]*", "", text)
            targets = set(PATH.findall(text))
            for group in USE_GROUP.findall(text):
                targets.update(t.strip().split("::")[0] for t in group.split(","))
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def circles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    failed = False
    for crate in CRATES:
        src = ROOT / crate
        if not src.is_dir():
            continue
        graph = edges(src)
        for comp in circles(graph):
            print(f"{crate}: import circle: {' <-> '.join(comp)}")
            failed = True
        for file, banned in NOT_THE_LOOP.get(crate, {}).items():
            name = file.removesuffix(".rs")
            bad = graph.get(name, set()) & banned
            if bad:
                print(f"{crate}/{file} imports {', '.join(sorted(bad))}, which it must not know")
                failed = True
    if failed:
        return 1
    print("import rules hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
