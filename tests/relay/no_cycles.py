#!/usr/bin/env python3
"""relay/ is built in layers: no two of its files call each other in a
circle (issue 16). Reads the defined and undefined symbols of each member
of the relay's static library with nm, draws file -> file for every call
across files, and fails naming a cycle if there is one.

usage: no_cycles.py LIBRARY.a"""
import collections
import subprocess
import sys


def graph(lib):
    defs, undef = {}, collections.defaultdict(set)
    out = subprocess.run(["nm", "-A", lib], capture_output=True, text=True, check=True).stdout
    # "LIB:MEMBER:VALUE TYPE NAME", or "LIB:MEMBER: U NAME" (no value)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        where = parts[0].split(":")
        if len(where) < 3:
            continue
        member = where[-2].removesuffix(".c.o").removesuffix(".o")
        kind, name = parts[-2], parts[-1]
        if kind in ("T", "D", "B", "R"):
            defs[name] = member
        elif kind == "U":
            undef[member].add(name)
    calls = collections.defaultdict(set)
    for member, names in undef.items():
        for name in names:
            if defs.get(name, member) != member:
                calls[member].add(defs[name])
    return defs, calls


def find_cycle(calls):
    state = {}

    def visit(n, path):
        state[n] = "open"
        for m in sorted(calls.get(n, ())):
            if state.get(m) == "open":
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m, path + [m])
                if found:
                    return found
        state[n] = "done"
        return None

    for n in sorted(calls):
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None


def main():
    defs, calls = graph(sys.argv[1])
    files = set(defs.values())
    if len(files) < 10:
        print(f"only {len(files)} files with symbols in {sys.argv[1]}: not the relay?")
        return 1
    cycle = find_cycle(calls)
    for n in sorted(calls):
        print(f"{n} -> {', '.join(sorted(calls[n]))}")
    if cycle:
        print("cycle: " + " -> ".join(cycle))
        return 1
    print(f"{len(files)} files, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
