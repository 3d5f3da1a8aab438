"""EPG's learning claim against its controls (Evolved Policy Gradients, section 4.1 and
Figure 5: an evolved loss trains fresh agents on held-out tasks, without rewards, better
than PPO at the same number of samples).

Task family: random-goal point masses (``envs.pointmass``, the goal in the observation, as
the target is in random Reacher's), the ``pointmass`` preset (32 members, 32 updates of
64 steps per lifetime) meta-trained for 100 ES epochs, alpha annealed over the first 25,
two meta-seeds in one vmapped program. Each evolved loss, with alpha = 0 and no reward
input, trains fresh agents on 8 held-out goals x 2 agent seeds. Controls on the same
goals and agent seeds:

* a **zero loss** (no gradient, so no update: the fresh random policy, no learning);
* **PPO at equal samples** (2048 steps in batches of 64, ``ppo.preset("pointmass")``
  otherwise), which sees the rewards the evolved loss does not.

Measured (2026-12-02, CPU, jax 0.10.2; ``pytest -m slow tests/test_epg_learning.py -s``
prints the PRNGKey(0) column; the PRNGKey(1) column and the initial losses came from a
throwaway script with this test's settings and meta-key 1; final returns, mean of 10
episodes, averaged over goals and agents; less negative is better):

=========================  =============  =============
meta-seeds                 PRNGKey(0)     PRNGKey(1)
=========================  =============  =============
evolved loss               -37.0 / -38.0  -40.9 / -36.6
loss at initialisation     -46.3 / -42.7  -56.8 / -47.9
zero loss                  -46.8          -46.8
PPO, equal samples         -44.4          -44.4
goals won vs zero (of 8)   8 / 8          8 / 8
=========================  =============  =============

With 200 epochs (outer learning rate decayed over 200) the evolved losses reach -35.5 /
-36.3; the 2000-epoch experiment (``experiments/results/cpu/pointmass``) -33.7. PPO
reaches -6 with 25x the samples, so the evolved loss beats PPO at its budget, not PPO.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs
from metareward.algos import epg, onpolicy, ppo
from metareward.rl.rollout import evaluate_episodes

EPOCHS = 100
CONFIG = dataclasses.replace(epg.preset("pointmass"), num_epochs=EPOCHS, anneal_epochs=25,
                             outer_decay_epochs=EPOCHS)
GOALS, AGENTS, EVAL = 8, 2, 10


def _ppo_at_equal_samples(env, tasks, agent_keys):
    """Final returns ``[goals, agents]`` of PPO with EPG's budget and batch."""
    cfg = dataclasses.replace(ppo.preset("pointmass"), num_envs=1,
                              num_steps=CONFIG.steps_per_update, num_minibatches=2,
                              total_steps=CONFIG.inner_updates * CONFIG.steps_per_update)
    tr = ppo.make_train(cfg, env)
    venv = onpolicy.batched_env(cfg, env)  # as the learner steps it

    def run(task, key):
        k_init, k_env, k_eval = jax.random.split(key, 3)
        s = tr.init(k_init).replace(env_state=venv.reset(k_env, task=task))
        s = jax.lax.scan(lambda s, _: tr.update(s), s, None, length=tr.num_updates)[0]
        act = lambda obs, k: tr.act(s, obs, k)
        return evaluate_episodes(env, act, k_eval, EVAL, int(env.spec.episode_length),
                                 task=task).mean()

    return np.asarray(jax.jit(jax.vmap(jax.vmap(run, (None, 0)), (0, None)))(tasks, agent_keys))


@pytest.mark.slow
@pytest.mark.learning
def test_evolved_loss_beats_a_zero_loss_and_ppo_at_equal_samples_on_held_out_goals():
    env = envs.make("pointmass", randomize=True)
    tr = epg.make_train(CONFIG, env)
    states0 = jax.vmap(tr.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    meta_train = jax.vmap(
        lambda s: jax.lax.scan(lambda s, _: tr.update(s), s, None, length=EPOCHS)[0])
    states = jax.jit(meta_train)(states0)
    assert int(np.max(states.nonfinite)) == 0  # no skipped outer step

    tasks = jax.vmap(env.tasks.sample)(jax.random.split(jax.random.PRNGKey(12345), GOALS))
    agent_keys = jax.random.split(jax.random.PRNGKey(7), AGENTS)

    @jax.jit
    def meta_test(phi):  # [goals, agents] final returns; rewards never reach the loss
        per_goal = lambda t: jax.vmap(
            lambda k: tr.meta_test(phi, t, k, EVAL)["final_return"])(agent_keys)
        return jax.vmap(per_goal)(tasks)

    evolved_all = states.params["loss"]  # [meta-seeds, ...]
    zero = np.asarray(meta_test(jax.tree.map(lambda x: jnp.zeros_like(x[0]), evolved_all)))
    ppo_final = _ppo_at_equal_samples(env, tasks, agent_keys)
    evolved = [np.asarray(meta_test(jax.tree.map(lambda x, i=i: x[i], evolved_all)))
               for i in range(2)]
    means = [float(e.mean()) for e in evolved]
    print(f"evolved {means}, zero {zero.mean():.1f}, PPO at equal samples "
          f"{ppo_final.mean():.1f}")
    for e in evolved:
        assert np.all(np.isfinite(e))
        # No learning is the floor: the evolved loss must train (measured +8.8 and +9.8).
        assert e.mean() > zero.mean() + 5.0, (e, zero)
        assert (e.mean(1) > zero.mean(1)).sum() >= 6, (e.mean(1), zero.mean(1))
        # Figure 5's claim at this budget: better than PPO with the same samples
        # (measured +6.7 and +5.7 against PPO's defaults, reward normalisation and the
        # clipped value loss, 2026-12-04: evolved -37.0 / -38.0, PPO -43.7; +9.2 and +8.2
        # with the value loss unclipped, +6.4 and +7.4 with neither, and +3.5 and +7.8
        # with the other meta-key).
        assert e.mean() > ppo_final.mean(), (e, ppo_final)
    assert np.mean(means) > ppo_final.mean() + 3.0, (means, ppo_final)
