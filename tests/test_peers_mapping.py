"""``benchmarks/peers.py`` maps each configuration onto every learner field by field
(issue 37): the same work per update on each side, brax's own defaults included."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peer, peers
from metareward import envs
from metareward.algos import ppo


def test_brax_defaults_map_to_brax_train_defaults():
    a = peers.brax_args(peers.BRAX_DEFAULT, 163_840)
    # brax 0.14.2 ppo.train / make_ppo_networks defaults
    assert (a["num_envs"], a["batch_size"], a["num_minibatches"], a["unroll_length"]) == (
        1, 32, 16, 10)
    assert (a["num_epochs"], a["learning_rate"], a["entropy_coef"], a["gamma"],
            a["clip_eps"], a["max_grad_norm"]) == (2, 1e-4, 1e-4, 0.9, 0.3, None)
    assert a["hidden"] == (32,) * 4 and a["value_hidden"] == (256,) * 5
    assert (a["activation"], a["distribution"]) == ("swish", "tanh_normal")


@pytest.mark.parametrize("name", sorted(peers.SETTINGS))
def test_every_setting_is_the_same_work_for_ours_and_brax(name):
    s = peers.SETTINGS[name]
    env = envs.make(s.env)
    cfg = ppo.Config(**peers.ours_config(s.ppo, s.steps_per_seed, env.spec.discrete))
    assert cfg.value_layers == (s.ppo.value_hidden or s.ppo.hidden)
    assert cfg.max_grad_norm == s.ppo.max_grad_norm
    assert cfg.squash == (s.ppo.squash and not env.spec.discrete)
    if "brax" in s.learners:
        a = peers.brax_args(s.ppo, s.steps_per_seed)
        brax_steps = a["batch_size"] * a["num_minibatches"] * a["unroll_length"]
        assert brax_steps == cfg.num_envs * cfg.num_steps  # env steps per update
        assert a["num_envs"] == cfg.num_envs and a["num_epochs"] == cfg.num_epochs


def _command(**changes):
    settings = dict(num_envs=1, unroll_length=10, num_minibatches=16, num_epochs=2,
                    total_steps=5120, seed=0, learning_rate=1e-4, gamma=0.9, gae_lambda=0.95,
                    clip_eps=0.3, entropy_coef=1e-4, vf_coef=0.5, max_grad_norm=None,
                    normalize_obs=False, reward_scale=1.0, hidden=(32,) * 4, num_eval_envs=8,
                    num_evals=3, batch_size=32)
    return peer.peer_command("pendulum", python="python", json_out="out.json",
                             **{**settings, **changes})


def test_peer_command_passes_brax_settings_through():
    cmd = _command(value_hidden=(256,) * 5, activation="swish", distribution="tanh_normal")
    text = " ".join(cmd)
    for part in ("--max-grad-norm none", "--batch-size 32", "--value-hidden 256 256 256 256 256",
                 "--activation swish", "--distribution tanh_normal"):
        assert part in text, part
    assert "--value-hidden" not in " ".join(_command())


@pytest.mark.parametrize("batch_size", [0, 5])
def test_peer_command_refuses_a_batch_that_is_not_whole_unrolls_of_every_env(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        _command(num_envs=3, batch_size=batch_size, num_minibatches=2)
