"""`make bench`: every bench module's rows side by side, written to bench/results.md with the machine.

    .venv/bin/python bench/run.py [--only fit,data,tta,overhead,predict,resume] [--out bench/results.md]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

MODULES = {"fit": "bench_fit", "data": "bench_data", "tta": "bench_tta", "overhead": "bench_overhead",
           "predict": "bench_predict", "resume": "bench_resume"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(MODULES), help="comma-separated: " + ", ".join(MODULES))
    parser.add_argument("--out", default=str(HERE / "results.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    before = common.machine()
    start = time.perf_counter()
    rows, timings = [], []
    for key in args.only.split(","):
        t0 = time.perf_counter()
        for row in importlib.import_module(MODULES[key]).run():
            row.show()
            rows.append(row)
        timings.append(f"{key} {time.perf_counter() - t0:.0f} s")
    after = common.machine()
    lines = [
        "# Bench results", "",
        f"`make bench` on {datetime.now():%Y-%m-%d %H:%M}, {time.perf_counter() - start:.0f} s in all ({', '.join(timings)}).",
        "Each ratio is measured side by side in one run: repeats interleaved, median.", "",
        "| machine | |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in before.items() if k != "load average (1, 5, 15 min)"),
        f"| load average at start | {before['load average (1, 5, 15 min)']} |",
        f"| load average at end | {after['load average (1, 5, 15 min)']} |", "",
        "| ratio | measured | against | ratio | goal | met | note |", "|---|---|---|---|---|---|---|",
        *(row.line() for row in rows), "",
    ]
    notes = HERE / "notes.md"
    if notes.is_file():
        lines += [notes.read_text()]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
