"""The mutation score of `make mutation`, per module, and the surviving mutants (docs/testing.md).

Reads mutmut's results (mutants/**/*.py.meta) for the mutants whose names match the patterns given on the command
line, the same patterns `mutmut run` got. Score = killed / (killed + survived + no tests): a mutant that no selected
test runs counts against the score, as a survivor does. Exit status 1 when a module is below --goal.

    python tools/mutation_report.py 'audioclip.models.losses.*' 'audioclip.evaluation.metrics.*' --goal 85
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections import defaultdict
from pathlib import Path

KILLED = {1, 3, 36, 24, -24, 152, 255}  # a failing test, pytest's internal error, a timeout (mutmut's own mapping)
NOT_COVERED = {5, 33}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="+", help="mutant name patterns (fnmatch), as given to `mutmut run`")
    parser.add_argument("--mutants", default="mutants", help="mutmut's working folder")
    parser.add_argument("--goal", type=float, default=85.0, help="minimum score per module, in percent")
    args = parser.parse_args(argv)

    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: list[str] = []
    for meta in sorted(Path(args.mutants).rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if not any(fnmatch.fnmatchcase(name, p) for p in args.patterns):
                continue
            module = name.split(".x_")[0].split(".xǁ")[0]
            if code is None:
                counts[module]["not run"] += 1
            elif code in KILLED:
                counts[module]["killed"] += 1
            elif code in NOT_COVERED:
                counts[module]["no tests"] += 1
                survivors.append(f"{name}  (no test runs it)")
            else:
                counts[module]["survived"] += 1
                survivors.append(name)
    if not counts:
        print("no mutant matches the patterns: run `make mutation` first", file=sys.stderr)
        return 2
    below = False
    print(f"{'module':<34} {'killed':>7} {'survived':>9} {'no tests':>9} {'not run':>8} {'score':>7}")
    for module, c in sorted(counts.items()):
        tested = c["killed"] + c["survived"] + c["no tests"]
        score = 100.0 * c["killed"] / tested if tested else 0.0
        below |= score < args.goal or c["not run"] > 0
        print(f"{module:<34} {c['killed']:>7} {c['survived']:>9} {c['no tests']:>9} {c['not run']:>8} {score:>6.1f}%")
    total = {k: sum(c[k] for c in counts.values()) for k in ("killed", "survived", "no tests")}
    tested = sum(total.values())
    print(f"{'all':<34} {total['killed']:>7} {total['survived']:>9} {total['no tests']:>9} {'':>8} "
          f"{100.0 * total['killed'] / max(tested, 1):>6.1f}%")  # fmt: skip
    print(f"\nsurviving mutants ({len(survivors)}; `mutmut show NAME` prints the change):")
    for name in survivors:
        print(f"  {name}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
