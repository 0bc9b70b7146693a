"""When the answer's first character reaches a terminal, against the
simulated provider, each figure measured in this one run.

Two members answer in 1.0 s; the judge's first token comes 1.0 s after it
is asked, and its reply streams for 1.0 s more, its ``<synthesis>`` tag
about half-way. The ideal is the first answer character on the terminal
the moment the provider sends that tag (the target: within 0.1 s of it).
Before issue 21 the answer was shown only once the whole reply was in:
``--no-stream`` keeps that behaviour, measured here as the baseline.

Each command runs as a user starts it, in a process of its own whose
stdout is a pseudo-terminal (stderr a pipe, so no live progress): `llm
consortium run` and `llm -m` of a saved consortium, streamed and with
--no-stream, interleaved, REPEAT times each. For each: the median delay
from the tag's sending to the first character read, from the reply's last
chunk to it, and the ratio of the wall time to the first character to the
ideal's (the tag's sending), both counted from the command's start.

    python benchmarks/stream_first_char.py
"""

import os
import select
import statistics
import subprocess
import sys
import tempfile
import time

LLM = [sys.executable, "-m", "llm"]
MEMBER_S = 1.0
JUDGE_FIRST_TOKEN_S = 1.0
JUDGE_STREAM_S = 1.0
TARGET_S = 0.1
REPEAT = 3


def first_char(args):
    """Run ``args`` with stdout on a pseudo-terminal: (start, when its first byte arrived, everything read)."""
    master, slave = os.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    first, data = None, b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            raise RuntimeError(f"no output for 60 s from {args}")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command closed the terminal
            chunk = b""
        if not chunk:
            break
        if first is None and chunk.strip():
            first = time.perf_counter()
        data += chunk
    os.close(master)
    stderr = proc.stderr.read().decode()
    if proc.wait(timeout=60) != 0:
        raise RuntimeError(f"{args} failed: {stderr}")
    return start, first, data.decode()


def main():
    os.environ["LLM_USER_PATH"] = tempfile.mkdtemp(prefix="consortium-bench-")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_OPENAI_SHOW_RESPONSES", "LLM_LOAD_PLUGINS",
                "LLM_CONSORTIUM_TERMINAL"):
        os.environ.pop(var, None)
    from llm_consortium.evaluation.simulator import SimProvider, _stream_pieces, arbiter_xml

    answer = "Forty-two. " + " ".join(f"reason{i}" for i in range(120)) + "."
    reply = arbiter_xml(answer, 0.95, analysis=" ".join(f"checked{i}" for i in range(120)), dissent="none")
    chunk_delay = JUDGE_STREAM_S / (len(_stream_pieces(reply)) - 1)
    sim = SimProvider()
    try:
        sim.add("bench-m1", reply="Forty-two.", latency=MEMBER_S)
        sim.add("bench-m2", reply="42", latency=MEMBER_S)
        sim.add("bench-judge", reply=reply, latency=JUDGE_FIRST_TOKEN_S, chunk_delay=chunk_delay)
        subprocess.run(LLM + ["consortium", "save", "bench", "-m", "bench-m1", "-m", "bench-m2",
                              "--arbiter", "bench-judge"], check=True, capture_output=True)
        commands = {
            "llm consortium run": LLM + ["consortium", "q", "-m", "bench-m1", "-m", "bench-m2",
                                         "--arbiter", "bench-judge", "--no-raw", "-q", "--no-log"],
            "llm -m bench": LLM + ["-m", "bench", "q", "--no-log"],
        }
        samples = {(name, mode): [] for name in commands for mode in ("streamed", "--no-stream")}
        for _ in range(REPEAT):
            for name, args in commands.items():
                for mode in ("streamed", "--no-stream"):
                    sim.requests.clear()
                    start, shown, text = first_char(args + ([] if mode == "streamed" else ["--no-stream"]))
                    assert answer in text.replace("\r\n", "\n"), text
                    (judge,) = [r for r in sim.requests if r.model == "bench-judge"]
                    tag = next(t for t, piece in judge.sent if "<synthesis>" in piece)
                    last = judge.sent[-1][0]
                    samples[(name, mode)].append((shown - tag, shown - last, (shown - start) / (tag - start)))
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; members {MEMBER_S} s, judge's first token "
              f"at {JUDGE_FIRST_TOKEN_S} s, then {JUDGE_STREAM_S} s of reply; median of {REPEAT}")
        print(f"{'command':<20} {'mode':<12} {'after <synthesis>':>18} {'after last chunk':>17} {'ratio to ideal':>15}")
        for (name, mode), rows in samples.items():
            after_tag, after_last, ratio = (statistics.median(column) for column in zip(*rows))
            print(f"{name:<20} {mode:<12} {after_tag * 1000:>15.0f} ms {after_last * 1000:>14.0f} ms {ratio:>15.3f}")
        streamed = [row[0] for (name, mode), rows in samples.items() if mode == "streamed" for row in rows]
        verdict = "met" if max(streamed) <= TARGET_S else "NOT met"
        print(f"target: first character within {TARGET_S * 1000:.0f} ms of the <synthesis> tag: {verdict} "
              f"(worst streamed run {max(streamed) * 1000:.0f} ms)")
    finally:
        sim.close()


if __name__ == "__main__":
    main()
