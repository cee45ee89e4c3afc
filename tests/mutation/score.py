"""Mutation score per module from a finished mutmut run, and the survivors SURVIVORS.md does not explain.

    python tests/mutation/score.py SCRATCH [GLOB ...]

SCRATCH is the folder mutmut ran in (it holds mutants/); GLOBs limit the report to matching mutants (as
`mutmut run GLOB` limited the run). Score = detected / (mutants - equivalent ones), where detected is killed
or timed out, and the equivalent ones are those SURVIVORS.md lists as equivalent. Exits 1 when a mutant
survived (or no test reached it) that SURVIVORS.md does not list, or when a selected mutant never ran.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

SURVIVORS = Path(__file__).with_name("SURVIVORS.md")
DETECTED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}
UNDETECTED = {0: "survived", 5: "no tests", 33: "no tests"}
ROW = re.compile(r"^\|\s*`(?P<name>[\w.]+)`\s*\|(?P<rest>.*)\|\s*$")


def explained(path: Path = SURVIVORS) -> dict[str, str]:
    """Mutant name -> kind ('equivalent' or 'not worth a test') from the SURVIVORS.md tables."""
    kinds = {}
    for line in path.read_text().splitlines():
        match = ROW.match(line)
        if match:
            cells = [cell.strip() for cell in match["rest"].split("|")]
            kinds[match["name"]] = (
                "equivalent" if any(cell.lower() == "equivalent" for cell in cells) else "not worth a test"
            )
    return kinds


def function_start(source: Path, mutant: str) -> int:
    """First line (decorators included) of the function a mutant was made from, in the original source."""
    name = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    cls, _, func = name.partition("ǁ")[2].partition("ǁ") if "ǁ" in name else (None, None, name[2:])
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ClassDef) and cls and node.name == cls:
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == func:
                    return min([child.lineno, *(d.lineno for d in child.decorator_list)])
        if not cls and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func:
            return min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return 0


def describe(mutant: str, path: str, source: Path) -> tuple[int, str]:
    """(line in the source file, 'old -> new') of one mutant, from mutmut's own diff."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=path).splitlines()
    removed = [line[1:].strip() for line in diff[2:] if line.startswith("-")]
    added = [line[1:].strip() for line in diff[2:] if line.startswith("+")]
    offset = 0
    for line in diff:
        if line.startswith("@@"):
            start = int(re.match(r"@@ -(\d+)", line)[1])
            body = diff[diff.index(line) + 1 :]
            offset = (
                start
                - 1
                + next(
                    (i for i, text in enumerate(b for b in body if not b.startswith("+")) if text.startswith("-")), 0
                )
            )
            break
    return function_start(source, mutant) + offset, f"{' / '.join(removed)}  ->  {' / '.join(added)}"


def main(scratch: Path, globs: list[str]) -> int:
    os.chdir(scratch)
    kinds = explained()
    rows, unexplained, unchecked = {}, [], []
    for meta in sorted(Path("mutants/src").rglob("*.py.meta")):
        path = str(meta.relative_to("mutants"))[: -len(".meta")]
        module = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
        counts = Counter()
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if globs and not any(fnmatch.fnmatch(mutant, g) for g in globs):
                continue
            counts["total"] += 1
            if code in DETECTED:
                counts[DETECTED[code]] += 1
            elif code is None:
                unchecked.append(mutant)
            elif kinds.get(mutant) == "equivalent":
                counts["equivalent"] += 1
            else:
                counts[UNDETECTED.get(code, f"exit {code}")] += 1
                if mutant in kinds:
                    counts["explained"] += 1
                else:
                    unexplained.append((mutant, path))
        if counts["total"]:
            rows[module] = counts
    print(
        f"{'module':38} {'mutants':>7} {'killed':>7} {'timeout':>7} {'equiv':>6} {'survived':>8} "
        f"{'explained':>9} {'score':>7}"
    )
    total = Counter()
    for c in rows.values():
        total.update(c)
    for module, c in [*rows.items(), ("all", total)]:
        undetected = c["total"] - c["killed"] - c["timeout"] - c["equivalent"]
        relevant = c["total"] - c["equivalent"]
        score = (c["killed"] + c["timeout"]) / relevant if relevant else 1.0
        print(
            f"{module:38} {c['total']:>7} {c['killed']:>7} {c['timeout']:>7} {c['equivalent']:>6} {undetected:>8} "
            f"{c['explained']:>9} {score:>7.1%}"
        )
    for mutant, path in unexplained:
        line, change = describe(mutant, path, Path(path))
        print(f"UNEXPLAINED {mutant} ({path}:{line}): {change}")
    for mutant in unchecked:
        print(f"NOT RUN {mutant}")
    return 1 if unexplained or unchecked else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
