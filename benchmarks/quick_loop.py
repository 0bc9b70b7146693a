"""How long the quick loop takes: the suite without the real-model,
real-browser, subprocess and install tests, as
`python -m pytest -m "not local_model and not browser and not slow and not install"`,
run several times in a row (wall seconds and the CPU seconds of everything it
started), with the median.

    python benchmarks/quick_loop.py [--runs 3] [--workers N] [--fresh] [-m MARKERS]

--workers passes -n to pytest-xdist (the suite's own default otherwise);
--fresh deletes the bytecode caches of the package and the tests before each
run, as in a fresh clone; -m runs another selection (the whole suite: -m "").
"""

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = "not local_model and not browser and not slow and not install"


def one_run(markers: str, workers: str | None, fresh: bool) -> tuple[float, float, str]:
    if fresh:
        for cache in [*ROOT.joinpath("llm_consortium").rglob("__pycache__"), ROOT / "tests" / "__pycache__"]:
            shutil.rmtree(cache, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", markers]
    result = subprocess.run(command + (["-n", workers] if workers else []), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()[-200:]
    return wall, cpu, last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("-m", dest="markers", default=QUICK)
    args = parser.parse_args()
    walls = []
    for number in range(1, args.runs + 1):
        wall, cpu, last = one_run(args.markers, args.workers, args.fresh)
        walls.append(wall)
        print(f"run {number}: {wall:.1f} s wall, {cpu:.1f} s CPU  ({last})", flush=True)
    print(f"median {statistics.median(walls):.1f} s wall over {args.runs} runs"
          f" (workers: {args.workers or 'the suite default'})")


if __name__ == "__main__":
    main()
