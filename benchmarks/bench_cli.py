"""Speed of the `llm consortium` command against the simulated provider,
each figure measured in this one run (same machine, same moment).

    python benchmarks/bench_cli.py

1. A CLI round with N members of 1.0 s and an arbiter of 0.3 s, as a ratio to
   the ideal: plain `llm`'s own wall time for one 1.0 s call, plus 0.3 s.
2. One member that hangs: the round's wall time with --timeout 2, and with
   --quorum (4 of 5 answers are enough).
3. Time from the moment the provider sends the arbiter's first synthesis
   token to the moment it appears on the command's stdout.
4. Start-up: `llm --help` with this plugin loaded versus with no plugins
   (LLM_LOAD_PLUGINS=""), and `llm models` with a saved consortium,
   the runs interleaved.
"""

import os
import select
import statistics
import subprocess
import sys
import tempfile
import time


LLM = [sys.executable, "-m", "llm"]
MEMBER_S, ARBITER_S = 1.0, 0.3


def wall(args, env=None, repeat=1):
    """Median wall time of a command (it must succeed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, stdin=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rounds(sim, arbiter_xml):
    sim.add("bench-member", reply="An answer of a few words.", latency=MEMBER_S)
    sim.add("bench-judge", reply=arbiter_xml("Combined.", 0.95), latency=ARBITER_S)
    plain = wall(LLM + ["-m", "bench-member", "--no-log", "q"], repeat=3)
    ideal = plain + ARBITER_S
    print(f"\n1. CLI round vs ideal (plain llm one call {plain:.3f} s + {ARBITER_S} s = {ideal:.3f} s)")
    print(f"{'N':>5} {'wall (s)':>9} {'ratio':>7}")
    for n in (5, 20, 100):
        seconds = wall(LLM + ["consortium", "q", "-m", f"bench-member:{n}", "--arbiter", "bench-judge", "--quiet",
                              "--max-concurrency", str(max(n, 32))], repeat=3)
        print(f"{n:>5} {seconds:>9.3f} {seconds / ideal:>7.3f}")


def hung_member(sim, arbiter_xml):
    sim.add("bench-member", reply="An answer.", latency=MEMBER_S)
    sim.add("bench-hung", reply="never", latency=120)
    sim.add("bench-judge", reply=arbiter_xml("Combined.", 0.95), latency=ARBITER_S)
    base = LLM + ["consortium", "q", "-m", "bench-member:4", "-m", "bench-hung", "--arbiter", "bench-judge", "--quiet"]
    print("\n2. One hung member among five (others 1.0 s, arbiter 0.3 s)")
    print(f"   --timeout 2: {wall(base + ['--timeout', '2']):.3f} s   (ideal 2.3 s + start-up)")
    print(f"   --quorum 4:  {wall(base + ['--quorum', '4']):.3f} s   (ideal 1.3 s + start-up)")


def synthesis_latency(sim, arbiter_xml):
    words = " ".join(f"word{i}" for i in range(40))
    sim.add("bench-member", reply="An answer.")
    sim.add("bench-judge", reply=arbiter_xml(words, 0.95, analysis="a " * 60), chunk_delay=0.02)
    samples = []
    for _ in range(5):
        sim.requests.clear()
        proc = subprocess.Popen(LLM + ["consortium", "q", "-m", "bench-member", "--arbiter", "bench-judge", "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        select.select([proc.stdout], [], [], 30)
        proc.stdout.read1(1)
        shown = time.perf_counter()
        proc.wait(timeout=30)
        (call,) = [r for r in sim.requests if r.model == "bench-judge"]
        sent = next(t for t, piece in call.sent if "word0" in piece)
        samples.append(shown - sent)
    print("\n3. Arbiter's first synthesis token -> stdout")
    print(f"   median {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms (5 runs)")


def paired(args, repeat=9):
    """Median wall time of ``args`` without plugins and with this plugin, the
    two runs interleaved so that drift in the machine's load hits both alike."""
    env_none = {**os.environ, "LLM_LOAD_PLUGINS": ""}
    without, with_plugin = [], []
    for _ in range(repeat):
        without.append(wall(args, env=env_none))
        with_plugin.append(wall(args))
    return statistics.median(without), statistics.median(with_plugin)


def startup():
    subprocess.run(LLM + ["consortium", "save", "bench-saved", "-m", "bench-member", "--arbiter", "bench-judge"],
                   check=True, capture_output=True)
    print("\n4. Start-up (median of 9, interleaved)")
    for label, args in (("llm --help", ["--help"]), ("llm models (a saved consortium)", ["models"])):
        without, with_plugin = paired(LLM + args)
        print(f"   {label}: {without * 1000:.0f} ms without plugins, {with_plugin * 1000:.0f} ms with "
              f"llm-consortium: {(with_plugin - without) * 1000:+.0f} ms")


def main():
    os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-bench-")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_OPENAI_SHOW_RESPONSES", "LLM_LOAD_PLUGINS"):
        os.environ.pop(var, None)
    from llm_consortium.evaluation.simulator import SimProvider, arbiter_xml

    sim = SimProvider()
    try:
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        rounds(sim, arbiter_xml)
        hung_member(sim, arbiter_xml)
        synthesis_latency(sim, arbiter_xml)
        sim.add("bench-member", reply="x")
        sim.add("bench-judge", reply="x")
        startup()
    finally:
        sim.close()


if __name__ == "__main__":
    main()
