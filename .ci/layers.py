#!/usr/bin/env python3
"""Check src/'s import graph against the layers docs/design.md draws.

docs/design.md holds a block

    <!-- layers (top first; modules on one line are siblings)
    main
    daemon sendmail
    ...
    -->

A module may use (`crate::x`, `super::`-free paths into another top-level
module) only modules on a line below its own: never a sibling, never one
above. Prints every offending reference (file:line), the cycles, and source
files over a thousand lines before their tests; exits 1 if there is any. Usage: .ci/layers.py [REPO]
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
design = open(os.path.join(root, "docs/design.md"), encoding="utf-8").read()
m = re.search(r"<!-- layers[^\n]*\n(.*?)-->", design, re.S)
if not m:
    sys.exit("docs/design.md has no <!-- layers ... --> block")
floor = {}
lines = [l.split() for l in m.group(1).strip().splitlines() if l.strip()]
for depth, mods in enumerate(lines):
    for mod in mods:
        floor[mod] = len(lines) - depth  # higher number = higher floor

src = os.path.join(root, "src")
problems = []
edges = {}
sub_edges = {}
ref = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
for dirpath, _, files in os.walk(src):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, src)
        top = rel.split(os.sep)[0]
        top = top[:-3] if top.endswith(".rs") else top
        if top == "lib":
            continue
        if top not in floor:
            problems.append(f"src/{rel}: module `{top}` is not in docs/design.md's layers")
            continue
        parts = rel[:-3].split(os.sep)
        # A file directly in a module's folder is a submodule: its own
        # imports within the module must not go round in circles either.
        sub = parts[1] if len(parts) == 2 and parts[1] != "mod" else None
        in_tests = False
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            # Test modules may reach anywhere (they build fixtures).
            if re.match(r"\s*#\[cfg\(test\)\]", line):
                in_tests = True
            if in_tests:
                continue
            code = line.split("//", 1)[0]
            if sub:
                inner = re.findall(r"\bcrate::" + top + r"::([a-z_][a-z0-9_]*)", code)
                inner += re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", code)
                for u in inner:
                    if u != sub and os.path.exists(os.path.join(src, top, u + ".rs")):
                        sub_edges.setdefault(f"{top}::{sub}", set()).add(f"{top}::{u}")
            for used in ref.findall(code):
                if used == top:
                    continue
                edges.setdefault(top, set()).add(used)
                if used not in floor:
                    problems.append(f"src/{rel}:{n}: uses unknown module `{used}`")
                elif floor[used] >= floor[top]:
                    where = "its own floor" if floor[used] == floor[top] else "a floor above"
                    problems.append(f"src/{rel}:{n}: `{top}` uses `{used}`, on {where}")

# Cycles among top-level modules, for the report.
def cycles(edges):
    seen, stack, out = set(), [], []
    def visit(n):
        if n in stack:
            out.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            visit(m)
        stack.pop()
    for n in sorted(edges):
        visit(n)
    return out

# No source file over about a thousand lines, apart from its tests.
MAX_LINES = 1000
for dirpath, _, files in os.walk(src):
    for f in files:
        if f.endswith(".rs"):
            path = os.path.join(dirpath, f)
            code = 0
            for line in open(path, encoding="utf-8"):
                if re.match(r"\s*#\[cfg\(test\)\]", line):
                    break
                code += 1
            if code > MAX_LINES:
                problems.append(f"src/{os.path.relpath(path, src)}: {code} lines before its tests "
                                f"(keep files under about {MAX_LINES})")

for c in cycles(edges) + cycles(sub_edges):
    problems.append("import circle: " + " -> ".join(c))
for p in problems:
    print(p)
if problems:
    sys.exit(1)
print(f"ok: {sum(len(v) for v in edges.values())} module dependencies, all pointing down "
      f"({len(lines)} floors)")
