"""The papers' MuJoCo claims against the ``--scale mujoco-cpu`` results: one verdict per
claim, with the numbers it rests on.

Reads ``lirpg_delayed.json``, ``cln_curves.json`` and ``tare_curves.json`` from
``--results`` (default ``experiments/results/mujoco-cpu``), and writes ``claims.md``
there (also printed). A claim is "method A ends above method B on env E" (the paper's
figure in brackets); on each env where both ran:

* the final evaluation return of every seed (32 fresh episodes of the final stochastic
  policy, ``eval_return_per_seed``) is compared by Welch's t-test, one-sided;
* **ahead** if A's mean is above B's with p < 0.05, **tied** if the difference is not
  significant either way, **behind** if B's is above A's with p < 0.05;
* the training return over the last 10% of the run (the papers' y-axis: the return of
  recent training episodes) is shown beside it, mean +- std over seeds.

A claim is **reproduced** when A is ahead on every env it was run on, **partly** when
ahead on some but not all, and **not reproduced** otherwise (tied or behind everywhere).
Each method is also set against its control (the same run with the learned part off),
which is this library's standard, not the paper's claim.

    python experiments/claims.py                    # experiments/results/mujoco-cpu
    python experiments/claims.py --results /tmp/out
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: One-sided significance level of the comparisons.
ALPHA = 0.05
#: Fraction of the run, from the end, whose training return is averaged.
LAST = 0.1


@dataclasses.dataclass(frozen=True)
class Claim:
    """"``method`` ends above ``baseline``" in experiment ``source`` (one of the JSON
    files), on runs whose labels match ``where`` (e.g. the delay)."""

    paper: str
    figure: str
    source: str
    method: str
    baseline: str
    control: bool = False
    where: tuple[tuple[str, object], ...] = ()


CLAIMS = (
    Claim("LIRPG", "Fig. 4", "lirpg_delayed", "lirpg-mix", "ppo", where=(("delay", 20),)),
    Claim("LIRPG", "Fig. 4", "lirpg_delayed", "lirpg-mix", "ppo-bonus",
          where=(("delay", 20),)),
    Claim("LIRPG", "Fig. 4", "lirpg_delayed", "lirpg", "ppo", where=(("delay", 20),)),
    Claim("LIRPG", "Fig. 4", "lirpg_delayed", "lirpg", "ppo-bonus", where=(("delay", 20),)),
    Claim("LIRPG", "control", "lirpg_delayed", "lirpg", "lirpg-frozen", control=True,
          where=(("delay", 20),)),
    Claim("CLN", "Fig. 4", "cln_curves", "cln", "ppo"),
    Claim("CLN", "Fig. 4", "cln_curves", "cln", "lirpg"),
    Claim("CLN", "control", "cln_curves", "cln", "cln-nohyper", control=True),
    Claim("TARE", "Fig. 6", "tare_curves", "ppo-tare", "ppo"),
    Claim("TARE", "Fig. 6", "tare_curves", "awr-tare", "awr"),
    Claim("TARE", "control", "tare_curves", "ppo-tare", "ppo-tare-frozen", control=True),
    Claim("TARE", "control", "tare_curves", "awr-tare", "awr-tare-frozen", control=True),
)


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided p-value of Welch's t-test that ``mean(a) > mean(b)``."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.var(a) == 0 and np.var(b) == 0:
        return 0.0 if a.mean() > b.mean() else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def last_return(run: dict) -> np.ndarray:
    """Per seed: the mean training-episode return over the last :data:`LAST` of the run's
    records (NaN where no episode ended)."""
    y = np.array(run["episode_return"], dtype=np.float64)
    k = max(1, math.ceil(LAST * y.shape[1]))
    tail = y[:, -k:]
    out = np.full(y.shape[0], np.nan)
    ok = np.isfinite(tail).any(axis=1)
    out[ok] = np.nanmean(tail[ok], axis=1)
    return out


def compare(a: dict, b: dict) -> dict:
    """The comparison of two runs on one env (see the module docstring)."""
    ea, eb = (np.asarray(r["eval_return_per_seed"], dtype=np.float64) for r in (a, b))
    p_up, p_down = welch_p(ea, eb), welch_p(eb, ea)
    outcome = "ahead" if p_up < ALPHA else "behind" if p_down < ALPHA else "tied"
    return {"env": a["env"], "method_eval": ea.tolist(), "baseline_eval": eb.tolist(),
            "diff": float(ea.mean() - eb.mean()), "p": p_up, "outcome": outcome,
            "method_last": last_return(a).tolist(), "baseline_last": last_return(b).tolist(),
            "steps": a["env_steps"][-1]}


def verdict(outcomes: list[str]) -> str:
    """reproduced / partly / not reproduced from the per-env outcomes."""
    if not outcomes:
        return "not run"
    ahead = sum(o == "ahead" for o in outcomes)
    return ("reproduced" if ahead == len(outcomes) else "partly" if ahead
            else "not reproduced")


def evaluate(claim: Claim, runs: list[dict]) -> dict:
    """A claim's per-env comparisons and verdict on the runs of its experiment."""
    runs = [r for r in runs if all(r.get(k) == v for k, v in claim.where)]
    by = {(r["env"], r["learner"]): r for r in runs}
    envs_ = [e for e in dict.fromkeys(r["env"] for r in runs)
             if (e, claim.method) in by and (e, claim.baseline) in by]
    rows = [compare(by[(e, claim.method)], by[(e, claim.baseline)]) for e in envs_]
    return {**dataclasses.asdict(claim), "rows": rows,
            "verdict": verdict([r["outcome"] for r in rows])}


def _ms(x: list) -> str:
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    return f"{a.mean():.0f} +- {a.std():.0f}" if a.size else "-"


def _seeds(x: list) -> str:
    return "[" + ", ".join("-" if not np.isfinite(v) else f"{v:.0f}" for v in x) + "]"


def table(results: list[dict]) -> str:
    """Markdown: one row per (claim, env) and the claim's verdict."""
    head = ["paper", "claim (figure)", "env", "steps", "A final eval (mean +- std; per seed)",
            "B final eval", "A - B", "p (A > B)", "outcome", "A / B last 10% training",
            "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in results:
        name = f"{c['method']} > {c['baseline']} ({c['figure']})"
        if not c["rows"]:
            lines.append(f"| {c['paper']} | {name} | - | - | - | - | - | - | - | - | not run |")
        for i, r in enumerate(c["rows"]):
            lines.append("| " + " | ".join([
                c["paper"], name, r["env"], f"{r['steps']:,}",
                f"{_ms(r['method_eval'])}; {_seeds(r['method_eval'])}",
                f"{_ms(r['baseline_eval'])}; {_seeds(r['baseline_eval'])}",
                f"{r['diff']:+.0f}", f"{r['p']:.3f}", r["outcome"],
                f"{_ms(r['method_last'])} / {_ms(r['baseline_last'])}",
                f"**{c['verdict']}**" if i == 0 else "",
            ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=HERE / "results" / "mujoco-cpu")
    args = ap.parse_args(argv)
    sources = {}
    for name in dict.fromkeys(c.source for c in CLAIMS):
        path = args.results / f"{name}.json"
        sources[name] = json.loads(path.read_text()) if path.is_file() else []
    results = [evaluate(c, sources[c.source]) for c in CLAIMS]
    md = table(results)
    (args.results / "claims.md").write_text(md + "\n")
    (args.results / "claims.json").write_text(json.dumps(results, indent=1) + "\n")
    print(md)
    return results


if __name__ == "__main__":
    main()
