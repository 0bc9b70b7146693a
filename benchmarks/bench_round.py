"""One consortium round, in-process, against the simulated provider.

Part 1, the engine's overhead: N members of 1.0 s each and an arbiter of
0.3 s (the ideal round is 1.3 s), each N run twice:

* "system CAs": as users run it. llm's OpenAI plugin builds a new client,
  and so a new TLS context loading the system's CA bundle, for every
  prompt; the calls of a round build theirs one after another (each holds
  the GIL), before the last request can leave.
* "one CA": the same code with ``SSL_CERT_FILE`` naming a one-certificate
  file, so that each client costs a few milliseconds instead.

For each it prints the wall time, its ratio to the ideal, the cost of one
client measured on its own (``get_client``, median of 21), and what is left:
wall - ideal - (N + 1) clients (the members' and the arbiter's), which is
the engine's overhead and the rest of llm's and openai's work per call
(building the request, reading the reply). The engine's own share is then
measured directly: one more round under cProfile, in both threads (the
caller's and the event loop's), summing the time spent in llm_consortium's
own functions (the profiler slows them, so this is an upper bound).

Part 2, realistic latencies: 5 members of 5 s and an arbiter of 2 s (ideal
7 s), as users run it (system CAs) and with one CA. The ratio of the round's
wall time, what the user waits for, to the ideal must be within 2 %.

    python benchmarks/bench_round.py            # N = 5, 20, 64 (the most a run may have)
    python benchmarks/bench_round.py 5 50       # other sizes
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MEMBER_S, ARBITER_S = 1.0, 0.3
REALISTIC_MEMBERS, REALISTIC_MEMBER_S, REALISTIC_ARBITER_S = 5, 5.0, 2.0
REALISTIC_TARGET = 1.02
ONE_CA = Path(__file__).resolve().parent.parent / "tests" / "trusts-nothing.pem"


def own_seconds(*profiles) -> float:
    """Seconds spent in llm_consortium's own functions (not the simulator's)."""
    import pstats

    stats = pstats.Stats(*profiles)
    return sum(
        tottime for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items()
        if "/llm_consortium/" in filename and not filename.endswith("simulator.py")
    )


def profiled(run):
    """``run()`` with every thread's Python calls profiled; (its result, the engine's own seconds)."""
    import asyncio
    import cProfile

    from llm_consortium.core.runner import background_loop

    caller, loop_thread = cProfile.Profile(), cProfile.Profile()

    async def switch(on: bool):
        loop_thread.enable() if on else loop_thread.disable()

    loop = background_loop()
    asyncio.run_coroutine_threadsafe(switch(True), loop).result()
    caller.enable()
    try:
        result = run()
    finally:
        caller.disable()
        asyncio.run_coroutine_threadsafe(switch(False), loop).result()
    return result, own_seconds(caller, loop_thread)


def main(sizes):
    os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-bench-")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_OPENAI_SHOW_RESPONSES", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        os.environ.pop(var, None)
    from llm_consortium.evaluation.simulator import SimProvider, arbiter_xml

    from llm_consortium import ConsortiumOrchestrator

    sim = SimProvider()

    def one_round(n, member_s, arbiter_s):
        sim.reset()
        sim.add("bench-member", reply="An answer of a few words.", latency=member_s)
        sim.add("bench-judge", reply=arbiter_xml("Combined.", 0.95), latency=arbiter_s)
        orchestrator = ConsortiumOrchestrator(
            models=[f"bench-member:{n}"], arbiter="bench-judge", max_concurrency=max(n, 32)
        )
        start = time.perf_counter()
        result = orchestrator.orchestrate_sync("Benchmark question")
        wall = time.perf_counter() - start
        assert result["metadata"]["iteration_count"] == 1
        assert all(m["text"] for m in result["model_responses"]), "a member failed"
        return wall

    def client_seconds():
        import llm

        model = llm.get_async_model("bench-member")
        times = []
        for _ in range(21):
            start = time.perf_counter()
            model.get_client(None, async_=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    try:
        # Warm-up: imports and llm's plugin loading are start-up costs, not round costs.
        one_round(1, 0, 0)
        ideal = MEMBER_S + ARBITER_S
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        print(f"Part 1: N members of {MEMBER_S} s, arbiter {ARBITER_S} s (ideal {ideal:.1f} s)")
        print(f"{'N':>5} {'trust store':>12} {'wall (s)':>9} {'ratio':>6} {'client (ms)':>12} "
              f"{'clients (s)':>12} {'left (ms)':>10} {'left/call (ms)':>15}")
        for n in sizes:
            for name, cafile in (("system CAs", None), ("one CA", str(ONE_CA))):
                if cafile:
                    os.environ["SSL_CERT_FILE"] = cafile
                try:
                    wall = one_round(n, MEMBER_S, ARBITER_S)
                    client = client_seconds()
                finally:
                    os.environ.pop("SSL_CERT_FILE", None)
                clients = (n + 1) * client
                left = wall - ideal - clients
                print(f"{n:>5} {name:>12} {wall:>9.3f} {wall / ideal:>6.3f} {client * 1000:>12.1f} "
                      f"{clients:>12.3f} {left * 1000:>10.0f} {left * 1000 / (n + 1):>15.2f}")
            os.environ["SSL_CERT_FILE"] = str(ONE_CA)
            try:
                _, own = profiled(lambda: one_round(n, MEMBER_S, ARBITER_S))
            finally:
                os.environ.pop("SSL_CERT_FILE", None)
            print(f"{n:>5} {'the engine':>12}: {own * 1000:.0f} ms of CPU in llm_consortium's own code, "
                  f"{own * 1000 / (n + 1):.2f} ms per call")
        ideal = REALISTIC_MEMBER_S + REALISTIC_ARBITER_S
        print(f"Part 2: {REALISTIC_MEMBERS} members of {REALISTIC_MEMBER_S} s, arbiter {REALISTIC_ARBITER_S} s "
              f"(ideal {ideal:.1f} s)")
        for name, cafile in (("system CAs", None), ("one CA", str(ONE_CA))):
            if cafile:
                os.environ["SSL_CERT_FILE"] = cafile
            try:
                walls = [one_round(REALISTIC_MEMBERS, REALISTIC_MEMBER_S, REALISTIC_ARBITER_S) for _ in range(3)]
            finally:
                os.environ.pop("SSL_CERT_FILE", None)
            ratio = statistics.median(walls) / ideal
            print(f"  {name:>10}: walls {', '.join(f'{w:.3f}' for w in walls)} s, median ratio {ratio:.4f} "
                  f"(target <= {REALISTIC_TARGET}: {'met' if ratio <= REALISTIC_TARGET else 'NOT met'})")
    finally:
        sim.close()


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [5, 20, 64])
