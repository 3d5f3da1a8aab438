"""The minibatch shuffle: ``metareward.rl.shuffle.permutation`` against
``jax.random.permutation`` (the baseline; the same permutation bit for bit, checked here
on every call's output), at the learners' batch sizes, 1 to 64 seeds vmapped.

Both are jitted (``jax.vmap`` over the seeds' keys) in one process; each round times
``--calls`` calls of each (median), the order rotated per round; the ratio is the
baseline's time over ours per round, median over ``--rounds``. Prints a table, writes
JSON.

    python benchmarks/shuffle.py
    python benchmarks/shuffle.py --cases 64x2048 1x512 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness

#: ``seeds x n``: PureJaxRL's CartPole batch (512), the Pendulum preset's (2048),
#: rejax's CartPole batch (500), MinAtar's (8192), and the packed sort's limit.
DEFAULT_CASES = ("1x500", "1x512", "64x512", "1x2048", "16x2048", "64x2048", "1x8192",
                 "1x65536")


def parse_case(text: str) -> tuple[int, int]:
    """``"SEEDSxN"`` -> ``(seeds, n)``.

    Args:
        text: the case.

    Returns:
        ``(seeds, n)``.

    Raises:
        ValueError: not two positive integers joined by ``x``.
    """
    parts = text.split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"case {text!r}: expected SEEDSxN with positive integers, "
                         "e.g. 64x2048")
    return int(parts[0]), int(parts[1])


def measure(seeds: int, n: int, rounds: int, calls: int) -> dict[str, Any]:
    """One row: both shuffles of ``n`` elements for ``seeds`` vmapped keys.

    Args:
        seeds: vmapped keys.
        n: elements.
        rounds: interleaved rounds.
        calls: timed calls per learner per round.

    Returns:
        The row (microseconds per call, medians; the per-round ratios and their median).

    Raises:
        AssertionError: the two permutations differ.
    """
    import jax
    import numpy as np

    from benchmarks import _timing
    from metareward.rl import shuffle

    keys = jax.random.split(jax.random.PRNGKey(n), seeds)
    fns = {"jax.random.permutation": jax.jit(jax.vmap(lambda k: jax.random.permutation(k, n))),
           "rl.shuffle.permutation": jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))}
    outs = [np.asarray(f(keys)) for f in fns.values()]
    assert (outs[0] == outs[1]).all(), f"{seeds}x{n}: the permutations differ"
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in _harness.rotated(list(fns), r):
            times[name].append(_timing.time_call(fns[name], keys, calls=calls)["us"] / 1e6)
    base, ours = times["jax.random.permutation"], times["rl.shuffle.permutation"]
    per_round = [b / o for b, o in zip(base, ours, strict=True)]
    return {"seeds": seeds, "n": n,
            "baseline_us": statistics.median(base) * 1e6, "ours_us": statistics.median(ours) * 1e6,
            "speedup_per_round": per_round, "speedup": statistics.median(per_round)}


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The results written to ``--json``.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), metavar="SEEDSxN")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--json", default=str(_harness.RESULTS / "shuffle.json"))
    args = p.parse_args(argv)
    try:
        cases = [parse_case(c) for c in args.cases]
    except ValueError as e:
        p.error(str(e))
    if args.rounds < 1 or args.calls < 1:
        p.error(f"--rounds {args.rounds} --calls {args.calls}: both must be at least 1")
    rows = [measure(s, n, args.rounds, args.calls) for s, n in cases]
    print(f"{'seeds':>5} {'n':>6} {'jax us':>9} {'ours us':>9} {'speed-up':>8}")
    for r in rows:
        print(f"{r['seeds']:5d} {r['n']:6d} {r['baseline_us']:9.0f} {r['ours_us']:9.0f} "
              f"{r['speedup']:7.2f}x")
    command = " ".join(["python", "benchmarks/shuffle.py", *(argv or sys.argv[1:])])
    path = _harness.write_results(args.json, "shuffle", rows, command=command,
                                  rounds=args.rounds, calls=args.calls)
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
