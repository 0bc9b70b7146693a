"""One consortium round, in-process, against the simulated provider.

N members each take 1.0 s, the arbiter 0.3 s: the ideal round is 1.3 s.
Prints wall time and the ratio to that ideal for each N.

    python benchmarks/bench_round.py            # N = 5, 20, 100
    python benchmarks/bench_round.py 5 50       # other sizes
"""

import os
import sys
import tempfile
import time


MEMBER_S, ARBITER_S = 1.0, 0.3


def main(sizes):
    os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-bench-")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_OPENAI_SHOW_RESPONSES"):
        os.environ.pop(var, None)
    from llm_consortium.simulator import SimProvider, arbiter_xml

    from llm_consortium import ConsortiumOrchestrator

    sim = SimProvider()
    try:
        ideal = MEMBER_S + ARBITER_S
        # Warm-up: imports and llm's plugin loading are start-up costs, not round costs.
        sim.add("bench-member", reply="warm")
        sim.add("bench-judge", reply=arbiter_xml("warm", 0.95))
        ConsortiumOrchestrator(models=["bench-member"], arbiter="bench-judge").orchestrate_sync("warm-up")
        print(f"{'N':>5} {'wall (s)':>9} {'ratio':>7}   (ideal {ideal:.1f} s)")
        for n in sizes:
            sim.reset()
            sim.add("bench-member", reply="An answer of a few words.", latency=MEMBER_S)
            sim.add("bench-judge", reply=arbiter_xml("Combined.", 0.95), latency=ARBITER_S)
            orchestrator = ConsortiumOrchestrator(
                models=[f"bench-member:{n}"], arbiter="bench-judge", max_concurrency=max(n, 32)
            )
            start = time.perf_counter()
            result = orchestrator.orchestrate_sync("Benchmark question")
            wall = time.perf_counter() - start
            assert result["metadata"]["iteration_count"] == 1
            assert all(m["text"] for m in result["model_responses"]), "a member failed"
            print(f"{n:>5} {wall:>9.3f} {wall / ideal:>7.3f}")
    finally:
        sim.close()


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [5, 20, 100])
