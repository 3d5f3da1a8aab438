"""Populations split over devices (issue 10): EPG's members and MetaGenRL's agents on
the mesh's "members" axis, joined by explicit collectives (``metareward.axes``), with 4
forced host devices in a subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=4``;
XLA reads it once).

* ``es_grad`` under ``shard_map`` over 2 and 4 member devices equals the unsplit estimate;
* one EPG update and two MetaGenRL population steps (one with an objective update),
  through the driver's own chunk program, on 2 and 4 devices equal the one-device
  program from the same state (float tolerance: the split changes summation order; over
  whole runs RL's chaotic dynamics amplify that, so runs are compared update by update);
* the split programs communicate with all-reduce; MetaGenRL's agent state is really split;
* full driver runs on 4 devices finish with finite metrics.

Slow: about fifteen compilations of the EPG and MetaGenRL programs (~12 minutes on one
busy core; its own timeout is 30 minutes)."""

import textwrap

import numpy as np
import pytest
from host_devices import run_with_host_devices

# The fixture's subprocess can outlast the suite's 900 s per-test timeout on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.xdist_group("sharding_populations")]  # one worker runs `runs`

SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from metareward.meta import es_grad
    from metareward.runtime import driver

    out = sys.argv[1]
    res = {"devices": len(jax.devices())}
    flat = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel()
                                        for x in jax.tree.leaves(tree)]).tolist()

    # 1. es_grad: per-member args and aux, antithetic, centred ranks.
    def fit(theta, a):
        v = -jnp.sum((theta["w"] - a) ** 2)
        return v, {"twice": 2.0 * v}

    params = {"w": jnp.arange(5.0) / 5.0}
    args = jnp.linspace(-1.0, 1.0, 8)[:, None] * jnp.ones((8, 5))
    est = lambda p, a: es_grad(fit, p, jax.random.PRNGKey(3), pop_size=8, sigma=0.1,
                               args=a, has_aux=True)
    res["es1"] = flat(jax.jit(est)(params, args))
    for d in (2, 4):
        mesh = Mesh(np.asarray(jax.devices()[:d]).reshape(1, d), ("seeds", "members"))
        f = jax.shard_map(est, mesh=mesh, in_specs=(P(), P()), out_specs=P(),
                          check_vma=False)
        res[f"es{d}"] = flat(jax.jit(f)(params, args))

    # 2. The driver's chunk program from one state, on 1, 2, 4 devices.
    def start(algo, env, over, pre):  # the unsplit state the compared programs start from
        one = driver.prepare(algo, env, overrides=over,
                             options=driver.RunOptions(seeds=1, devices=1))
        state = jax.jit(jax.vmap(one.learner.init))(one.keys())
        if pre:
            state = driver.programs(one, pre).chunk(state, np.int32(pre))[0]
        return jax.device_get(state)

    def steps(algo, env, over, devices, state, n):
        plan = driver.prepare(algo, env, overrides=over,
                              options=driver.RunOptions(seeds=1, devices=devices))
        progs = driver.programs(plan, n)
        text = progs.chunk.lower(progs.spec, np.int32(n)).as_text()
        state, metrics, ok = progs.chunk(progs.place(state), np.int32(n))
        mesh = progs.mesh
        agents = state.params.get("agents")
        return {
            "mesh": None if mesh is None else list(mesh.devices.shape),
            "params": flat(state.params),
            "metrics": {k: np.asarray(v, np.float64).ravel().tolist()
                        for k, v in metrics.items()},
            "ok": bool(np.all(ok)),
            "all_reduce": "stablehlo.all_reduce" in text,
            "agent_shard": (None if agents is None else
                            list(jax.tree.leaves(agents)[0].addressable_shards[0].data.shape[:2])),
        }

    # alpha = 0 from the start: the fitness depends on the loss. (With alpha = 1 it does
    # not, antithetic pairs tie, and the ES direction is float rounding, which Adam's
    # normalised step blows up to a full step either way: no test of anything.)
    epg = {"pop_size": 4, "steps_per_update": 16, "inner_updates": 6, "buffer_size": 64,
           "eval_episodes": 2, "anneal_epochs": 0}
    mg = {"num_agents": 8, "total_steps": 400, "learning_starts": 100, "buffer_size": 64,
          "batch_size": 8, "window": 5, "hidden": [16, 16], "anneal_steps": 50}
    mg_envs = "pendulum,mountaincar-continuous"
    epg0, mg0 = start("epg", "pendulum", epg, 0), start("metagenrl", mg_envs, mg, 100)
    for d in (1, 2, 4):
        res[f"epg{d}"] = steps("epg", "pendulum", epg, d, epg0, 1)
        res[f"mg{d}"] = steps("metagenrl", mg_envs, mg, d, mg0, 2)

    # 3. Whole runs on 4 devices.
    for name, algo, env, over in (("epg", "epg", "pendulum", {**epg, "num_epochs": 3}),
                                  ("mg", "metagenrl", mg_envs,
                                   {**mg, "total_steps": 160})):
        opts = driver.RunOptions(seeds=1, devices=4, chunk_updates=40, eval_episodes=1)
        plan = driver.prepare(algo, env, overrides=over, options=opts)
        r = driver.start(plan, f"{out}/{name}", stream=io.StringIO(), progress=False)
        recs = [json.loads(x) for x in open(f"{out}/{name}/metrics.jsonl")]
        res[f"run_{name}"] = {"status": r.status, "update": r.update,
                              "eval": r.eval_returns.tolist(), "records": len(recs),
                              "last": recs[-1]}
    json.dump(res, open(f"{out}/res.json", "w"))
    """
)


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pop_shard")
    return run_with_host_devices(SCRIPT, out, 4, timeout=1500)


def test_es_grad_split_over_member_devices_equals_unsplit(runs):
    assert runs["devices"] == 4
    for d in (2, 4):
        np.testing.assert_allclose(runs[f"es{d}"], runs["es1"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["epg", "mg"])
def test_population_steps_split_over_devices_equal_one_device(runs, name):
    base = runs[f"{name}1"]
    assert base["mesh"] is None and base["ok"]
    for d in (2, 4):
        run = runs[f"{name}{d}"]
        assert run["mesh"] == [1, d] and run["ok"]
        assert run["all_reduce"]  # the ES gradient / objective-gradient sum cross devices
        if name == "mg":  # 8 agents, 4 per env: each device holds 4 / d of each env's
            assert run["agent_shard"] == [1, 4 // d]
        np.testing.assert_allclose(run["params"], base["params"], rtol=1e-4, atol=1e-5)
        assert run["metrics"].keys() == base["metrics"].keys()
        for k in base["metrics"]:
            np.testing.assert_allclose(run["metrics"][k], base["metrics"][k], rtol=1e-4,
                                       atol=1e-4, err_msg=k)


@pytest.mark.parametrize("name", ["epg", "mg"])
def test_whole_runs_on_four_devices_finish(runs, name):
    r = runs[f"run_{name}"]
    assert r["status"] == "finished" and r["records"] > 0
    assert np.isfinite(r["eval"]).all()
    assert r["update"] == (3 if name == "epg" else 160)
