"""The web viewer with many recorded runs (issue 23's scale targets).

Records RUNS runs (default 10,000) through the real recorder (``RunRecorder``,
the observer every run writes through: its writer thread, its transactions),
each with three members' answers and a verdict, into a fresh logs.db (on
/dev/shm where there is one: about 0.1 s of disk flushes per run otherwise); then
serves the viewer (uvicorn, in this process) on a free loopback port and
times, over HTTP, the median and worst of repeated requests for:

* a page of the runs list: the newest page, and one deep in the list;
* a run's page;
* a search over every run's prompt (a word in 1 % of them, and one in none).

Targets: a runs list page under 100 ms, a run page under 50 ms, a search
under 200 ms; the server's resident memory grows by under 10 MB between
page load 100 and page load 1,000 (runs list and run pages alternating).

    python benchmarks/bench_viewer.py            # 10,000 runs
    python benchmarks/bench_viewer.py 2000       # another count
"""

import http.client
import os
import resource
import statistics
import sys
import tempfile
import threading
import time

TARGETS = {"runs list": 0.100, "runs list, page 100": 0.100, "run page": 0.050, "search (1 % match)": 0.200,
           "search (no match)": 0.200}


def record_runs(count: int) -> list[str]:
    from llm_consortium.core.config import ConsortiumConfig
    from llm_consortium.core.engine import Round, Run
    from llm_consortium.core.results import Judgement, MemberResult, Usage
    from llm_consortium.storage.recorder import RunRecorder

    config = ConsortiumConfig(models=["model-a", "model-b", "model-c"], arbiter="judge")
    recorder = RunRecorder("team")
    ids = []
    for i in range(count):
        topic = "needle" if i % 100 == 0 else "haystack"
        run = Run(config=config, prompt=f"Question {i} about the {topic}: what is {i} squared?", system=None,
                  conversation="", history=[], handles={})
        recorder.run_started(run)
        members = []
        for instance, model in enumerate(config.models, 1):
            member = MemberResult(model=model, instance=instance, text=f"{model} says {i * i}. " * 20,
                                  seconds=1.0, usage=Usage(input=40, output=60, cost=0.0001))
            members.append(member)
            run.usage.add(member.usage)
            recorder.member_finished(run, 1, member, run.prompt)
        round_ = Round(1, members, Judgement(synthesis=f"{i * i}", confidence=0.9, analysis="All agree."), "raw")
        run.rounds.append(round_)
        recorder.round_finished(run, round_)
        recorder.run_finished(run, run.to_dict())
        ids.append(run.run_id)
    return ids


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def timed(port: int, path: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    response.read()
    seconds = time.perf_counter() - start
    connection.close()
    assert response.status == 200, (path, response.status)
    return seconds


def main(count: int) -> None:
    # In memory where there is a tmpfs: the recording's commits then cost no
    # disk flush (what is measured is reading the runs, not writing them).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-viewer-bench-", dir=shm)
    from llm_consortium.faces.web.app import listen, server

    start = time.perf_counter()
    ids = record_runs(count)
    print(f"Recorded {count:,} runs through RunRecorder in {time.perf_counter() - start:.1f} s")

    sock = listen("127.0.0.1", 0)
    running = server(sock, "127.0.0.1")
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    port = sock.getsockname()[1]

    paths = {"runs list": "/", "runs list, page 100": "/?page=100", "run page": f"/runs/{ids[count // 2]}",
             "search (1 % match)": "/?q=NEEDLE", "search (no match)": "/?q=nothing-has-this"}
    print(f"\n{'request':<22} {'median':>9} {'worst':>9} {'target':>8}  ratio")
    for label, path in paths.items():
        timed(port, path)  # warm
        times = [timed(port, path) for _ in range(30)]
        median = statistics.median(times)
        print(f"{label:<22} {median * 1000:>7.1f}ms {max(times) * 1000:>7.1f}ms {TARGETS[label] * 1000:>6.0f}ms"
              f"  {median / TARGETS[label]:.2f}")

    run_paths = [f"/runs/{run_id}" for run_id in ids[:500]]
    for load in range(1, 1001):
        timed(port, "/" if load % 2 else run_paths[load % len(run_paths)])
        if load == 100:
            at_100 = rss_mb()
    at_1000 = rss_mb()
    print(f"\nResident memory: {at_100:.1f} MB at page load 100, {at_1000:.1f} MB at 1,000: "
          f"{at_1000 - at_100:+.1f} MB (target: under +10 MB)")
    running.should_exit = True
    thread.join(10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
