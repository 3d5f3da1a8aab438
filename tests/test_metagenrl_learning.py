"""MetaGenRL's learning test (issue 9): an objective meta-trained on CPU envs trains fresh
agents on an env outside that set to a clearly better return than the randomly
initialised objective it started from.

Budget: meta-training 16 TD3 agents (8 on ``pendulum``, 8 on ``mountaincar-continuous``;
64x64 nets, 20 windows of 20 steps per objective batch) for 120k env steps each; then
meta-testing (Algorithm 2: fresh agent, frozen objective, no annealing) on brax's
``inverted-pendulum`` -- another body, reward and observation size -- for 20k env steps:
3 agents with the meta-trained objective and the same 3 agent seeds with the initial
objective, in one vmapped program. Two meta-seeds.

This is accelerator work: on an H100 one meta-training takes ~8 minutes, on one core of
the project's 2-core CPU the whole test takes 1 h 58 min per meta-seed. So the test
carries the ``accelerator`` marker, which neither the default run nor CI's ``-m slow`` run
selects: ``pytest -m accelerator tests/test_metagenrl_learning.py`` on a GPU.

Status (2026-11-23): the test does NOT pass reliably yet (issue 9 stays open). Final
returns, meta-trained vs initial:

- meta-seed 0, H100 (the run behind the README's meta-test table): 104, 48, 20 vs 4, 2, 2
  (passed);
- meta-seed 0, CPU: 2, 2, 192 vs 2, 3, 2.2 (failed);
- meta-seed 1, CPU: 2, 2, 2 vs 2, 2, 2 (failed).

A fresh agent on the held-out env either falls within 2 steps or learns to balance. The
same meta-seed gave different results on the two machines (same code and keys; jax
0.11.2 on the H100 against the pinned 0.10.2 here, and a different floating-point order),
so at this budget the outcome is not robust.

Smaller budgets that fit CI are no better: with 4 agents x 30k steps (~7 minutes on one
CPU core) meta-seed 0 passed (10.8, 23.3, 11.6 vs 2.0, 3.0, 2.2) and meta-seed 1 did not
(2, 2, 2 vs 2, 2, 2); 8 agents or 40 windows per batch for meta-seed 1 moved one agent
seed of three (18.9; 48.6).
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from metareward import envs
from metareward.algos import metagenrl as mg

TRAIN_ENVS = ("pendulum", "mountaincar-continuous")
HELD_OUT = "inverted-pendulum"
BASE = dataclasses.replace(mg.PRESETS["pendulum"], batch_size=20, learning_starts=5_000)
META_TRAIN = dataclasses.replace(BASE, num_agents=16, total_steps=120_000,
                                 buffer_size=120_000, anneal_steps=10_000)
META_TEST = dataclasses.replace(BASE, num_agents=1, total_steps=20_000, buffer_size=20_000)
SEEDS = 3


def meta_train_then_meta_test(meta_seed: int, out: Path | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Final deterministic returns (10 episodes each) on the held-out env of ``SEEDS``
    fresh agents trained by the meta-trained objective and by its initialisation. With
    ``out``, the meta-trained objective is written there (``flax.serialization``; the
    held-out experiment's ``--objective`` meta-tests it again without hours of
    meta-training)."""
    tr = mg.make_train(META_TRAIN, [envs.make(e) for e in TRAIN_ENVS])
    key = jax.random.PRNGKey(meta_seed)
    alpha0 = jax.jit(tr.init)(key).params["objective"]
    state, m = jax.jit(tr.train)(key)
    for e in TRAIN_ENVS:  # the agents' training returns, to tell a collapse after annealing
        r = np.array_split(np.asarray(m[f"return_{e}"], float), 10)
        print(f"meta-train {e}: return deciles {[round(float(np.nanmean(d)), 1) for d in r]}")
    assert int(state.nonfinite) == 0
    alpha = state.params["objective"]
    if out is not None:
        out.write_bytes(serialization.to_bytes(alpha))
        print(f"meta-trained objective written to {out}")

    test = mg.make_train(META_TEST, envs.make(HELD_OUT))
    alphas = jax.tree.map(lambda a, b: jnp.stack([a, b]), alpha, alpha0)
    keys = jax.random.split(jax.random.PRNGKey(100 + meta_seed), SEEDS)
    run = jax.vmap(jax.vmap(lambda a, k: test.meta_test(a, None, k, 10)["final_return"],
                            (None, 0)), (0, None))
    final = np.asarray(jax.jit(run)(alphas, keys))
    return final[0], final[1]


@pytest.mark.accelerator
@pytest.mark.parametrize("meta_seed", [0, 1])
def test_meta_trained_objective_beats_its_initialisation_on_a_held_out_env(meta_seed,
                                                                           tmp_path):
    learned, initial = meta_train_then_meta_test(
        meta_seed, tmp_path / f"objective_meta_seed{meta_seed}.msgpack")
    print(f"{HELD_OUT}, meta-seed {meta_seed}: meta-trained {learned}, initial {initial}")
    # The initial objective drives the cart to a bound: the pole falls within a few steps
    # (returns of 2-4; a policy that does nothing holds it ~5 steps). Every agent trained by
    # the meta-trained objective must beat every agent trained by the initial one, and the
    # mean must be several times as high.
    assert np.all(np.isfinite(learned)) and np.all(np.isfinite(initial))
    assert learned.min() > initial.max(), (learned, initial)
    assert learned.mean() >= 3.0 * initial.mean() + 5.0, (learned, initial)
