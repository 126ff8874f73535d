#!/usr/bin/env python3
"""Import rules of the house (ARCHITECTURE.md, "Import rules"): no circle among the
files of one crate's src/; only service.rs knows the driver (the event loop), and
the rooms it drives know neither it nor the API; inside node/src/driver/ calls go
one way (mod -> ticks/swarm -> relay/catchup/gossip/serving -> consensus ->
outbound -> state), and only relay.rs and outbound.rs reach the edge (the
Byzantine test behaviour). Reads `use crate::X` and `crate::X::` paths, `use
super::X` and `self.method(` calls outside comments and outside a file's trailing
`#[cfg(test)] mod tests`.

Exit 1 with what breaks a rule.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["node/src", "storage/src", "consensus/src", "crypto/src", "node/ledger/src"]
# The files of node/src that may know the event loop (driver/) or service.rs: the
# wiring file itself and the API (which knows service only through control.rs,
# see NOT_THE_LOOP); every other file knows none of driver, service and api.
LOOP_KNOWERS = {"service", "driver", "api", "api_routes", "api_page", "api_proofs"}
# The driver's files by rank: a method of one may call methods of its own file
# or of a higher rank only.
DRIVER_RANKS = {
    "mod": 0,
    "ticks": 1,
    "swarm": 1,
    "relay": 2,
    "catchup": 2,
    "gossip": 2,
    "serving": 2,
    "consensus": 3,
    "outbound": 4,
    "state": 5,
}
# No file of node/src is longer (one room per concern), and service.rs only wires.
FILE_LINES_MAX = 1_000
SERVICE_LINES_MAX = 700
# The driver's files that may call the edge (`self.edge.`).
EDGE_CALLERS = {"relay", "outbound"}
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
        # A directory module's tests.rs is its test module.
        if rel.name in ("lib.rs", "main.rs", "tests.rs"):
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


def production(path):
    text = path.read_text().split("#[cfg(test)]\nmod tests")[0]
    return re.sub(r"//[^\n]*", "", text)


FN = re.compile(r"\bfn\s+([a-z_][a-z0-9_]*)")
CALL = re.compile(r"\bself\s*\.\s*([a-z_][a-z0-9_]*)\s*\(")
SUPER = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


def driver_rules(driver):
    """Problems with the driver's call direction and its use of the edge."""
    problems = []
    files = {p.stem: production(p) for p in sorted(driver.glob("*.rs"))}
    unknown = set(files) - set(DRIVER_RANKS)
    for name in sorted(unknown):
        problems.append(f"node/src/driver/{name}.rs has no rank in DRIVER_RANKS")
    defined = {}
    for name, text in files.items():
        for fn in FN.findall(text):
            defined.setdefault(fn, name)
    for name, text in files.items():
        if name in unknown:
            continue
        rank = DRIVER_RANKS[name]
        for fn in sorted(set(CALL.findall(text))):
            target = defined.get(fn)
            if target is None or target == name or target in unknown:
                continue
            if DRIVER_RANKS[target] <= rank:
                problems.append(
                    f"node/src/driver/{name}.rs calls {fn} of {target}.rs, against the "
                    "driver's direction"
                )
        if name != "mod":
            for target in sorted(set(SUPER.findall(text))):
                if target in DRIVER_RANKS and target != name and DRIVER_RANKS[target] <= rank:
                    problems.append(
                        f"node/src/driver/{name}.rs imports super::{target}, against the "
                        "driver's direction"
                    )
        if name not in EDGE_CALLERS and re.search(r"\bself\s*\.\s*edge\s*\.", text):
            problems.append(f"node/src/driver/{name}.rs calls the edge directly")
        if re.search(r"\bcrate::maverick\b", text):
            problems.append(f"node/src/driver/{name}.rs knows crate::maverick (use crate::edge)")
    return problems


def main():
    failed = False
    node = ROOT / "node/src"
    graph = edges(node)
    for name in sorted(graph):
        if name not in LOOP_KNOWERS:
            bad = graph[name] & {"driver", "service", "api"}
            if bad:
                print(f"node/src/{name}.rs imports {', '.join(sorted(bad))}, which it must not know")
                failed = True
        if name != "service" and "driver" in graph[name]:
            print(f"node/src/{name} imports the driver: only service.rs may")
            failed = True
    for problem in driver_rules(node / "driver"):
        print(problem)
        failed = True
    for path in sorted(node.rglob("*.rs")):
        count = len(path.read_text().splitlines())
        if count > FILE_LINES_MAX:
            print(f"{path.relative_to(ROOT)} has {count} lines: split it by concern (at most {FILE_LINES_MAX})")
            failed = True
    service = len((node / "service.rs").read_text().splitlines())
    if service > SERVICE_LINES_MAX:
        print(f"node/src/service.rs has {service} lines: it wires, the driver runs (at most {SERVICE_LINES_MAX})")
        failed = True
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
