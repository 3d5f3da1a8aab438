"""Seeds sharded over devices (metareward.runtime.sharding, issue 10): with 4 forced host
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, in a subprocess: XLA
reads it once), a driver run over 4 seeds on 4 and 2 devices gives the results of the
unsharded run; the train state really is spread over the devices; resuming a sharded run
from an earlier checkpoint ends in the same state; bad device counts fail before
compiling."""

import json
import textwrap

import numpy as np
import pytest
from host_devices import run_with_host_devices

from metareward.algos.config import ConfigError
from metareward.runtime import driver, sharding

SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    import jax, numpy as np
    from metareward.runtime import driver

    out = sys.argv[1]
    firsts = lambda tree: [np.asarray(x).ravel()[:64].tolist() for x in jax.tree.leaves(tree)]
    over = {"total_steps": 2048, "num_envs": 4, "num_steps": 64}
    res = {"devices": len(jax.devices())}
    from metareward.runtime import sharding
    res["auto"] = {s: sharding.seed_mesh(None, s).size for s in (4, 6, 8)}
    for devices in (1, 2, 4):
        opts = driver.RunOptions(seeds=4, devices=devices, chunk_updates=2, eval_episodes=2,
                                 checkpoint_every=1)
        plan = driver.prepare("ppo", "cartpole", overrides=over, options=opts)
        r = driver.start(plan, f"{out}/run{devices}", stream=io.StringIO(), progress=False)
        leaf = jax.tree.leaves(r.state.params)[0]
        res[devices] = {
            "params": firsts(r.state.params),
            "eval": r.eval_returns.tolist(),
            "metrics": open(f"{out}/run{devices}/metrics.jsonl").read(),
            "leaf_devices": len(leaf.sharding.device_set),
            "shard_seeds": leaf.addressable_shards[0].data.shape[0],
        }
    # Resume the 4-device run from its second-to-last checkpoint: same end state.
    import pathlib, shutil
    shutil.copytree(f"{out}/run4", f"{out}/run4r")
    ck = pathlib.Path(f"{out}/run4r/checkpoints")
    shutil.rmtree(max((p for p in ck.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)))
    r = driver.resume(f"{out}/run4r", stream=io.StringIO(), progress=False)
    res["resumed"] = {
        "params": firsts(r.state.params),
        "leaf_devices": len(jax.tree.leaves(r.state.params)[0].sharding.device_set),
        "shard_seeds": jax.tree.leaves(r.state.params)[0].addressable_shards[0].data.shape[0],
        "update": r.update,
    }
    json.dump(res, open(f"{out}/res.json", "w"))
    """
)


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def sharded_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("shard")
    return run_with_host_devices(SCRIPT, out, 4, timeout=300)


@pytest.mark.xdist_group("sharded_runs")  # one worker makes the runs
def test_sharded_runs_equal_the_unsharded_run(sharded_runs):
    import numpy as np

    assert sharded_runs["devices"] == 4
    # devices=None: all 4, or the most that divide the seeds.
    assert sharded_runs["auto"] == {"4": 4, "6": 3, "8": 4}
    base = sharded_runs["1"]
    assert base["leaf_devices"] == 1
    for d in ("2", "4"):
        run = sharded_runs[d]
        # The state is split over the devices, 4 / d seeds on each (not replicated).
        assert run["leaf_devices"] == int(d) and run["shard_seeds"] == 4 // int(d)
        for a, b in zip(base["params"], run["params"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(base["eval"], run["eval"], rtol=1e-5)
        ra = [json.loads(x) for x in base["metrics"].splitlines()]
        rb = [json.loads(x) for x in run["metrics"].splitlines()]
        assert len(ra) == len(rb) > 0
        for x, y in zip(ra, rb, strict=True):
            assert x.keys() == y.keys()
            for k in x.keys() - {"wall_time", "steps_per_sec"}:
                if x[k] is None:
                    assert y[k] is None, k
                else:
                    np.testing.assert_allclose(x[k], y[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.xdist_group("sharded_runs")
def test_a_resumed_sharded_run_ends_where_the_uninterrupted_one_did(sharded_runs):
    import numpy as np

    res = sharded_runs["resumed"]
    assert res["leaf_devices"] == 4 and res["shard_seeds"] == 1 and res["update"] == 8
    for a, b in zip(sharded_runs["4"]["params"], res["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_too_few_xla_threads_for_cpu_devices_fail_clearly():
    """Forced CPU devices share XLA's thread pool (NPROC, else the usable cores); fewer
    threads than devices deadlock on collectives, so it is an error, not a hang."""
    with pytest.raises(ConfigError, match=r"devices=4 CPU devices would share 2 XLA "
                       r"thread\(s\) \(usable cores\).*Set NPROC=8"):
        sharding.check_cpu_threads(4, environ={}, cores=2)
    with pytest.raises(ConfigError, match=r"share 3 XLA thread\(s\) \(NPROC\)"):
        sharding.check_cpu_threads(4, environ={"NPROC": "3"}, cores=64)
    sharding.check_cpu_threads(4, environ={"NPROC": "8"}, cores=1)
    sharding.check_cpu_threads(4, environ={}, cores=4)


def test_bad_device_counts_fail_before_compiling():
    with pytest.raises(ConfigError, match=r"devices=2 cannot be split over seeds=3.*no "
                       r"population axis.*--devices one of \[1\]"):
        sharding.seed_mesh(2, 3)
    # A population the member devices do not divide (EPG pop_size 6 on 4 devices, 1 seed).
    with pytest.raises(ConfigError, match=r"remaining factor 4 must divide the pop_size "
                       r"\(6\).*--devices one of \[1, 2, 3\]"):
        sharding.make_mesh(4, 1, (6,), "pop_size")
    assert sharding.split_devices(4, 2, (6,)) == (2, 2)
    assert sharding.split_devices(8, 2, (8, 8)) == (2, 4)
    assert sharding.split_devices(4, 1, (8, 6)) is None  # 4 divides one group, not both
    with pytest.raises(ConfigError, match="devices=64, but this process sees"):
        sharding.seed_mesh(64, 64)
    with pytest.raises(ConfigError, match="devices must be an int > 0"):
        driver.RunOptions(devices=0)
    with pytest.raises(ConfigError, match="devices=8, but this process sees"):
        driver.prepare("ppo", "cartpole", options=driver.RunOptions(seeds=8, devices=8))
    assert sharding.seed_mesh(None, 3) is None  # one CPU device here: no mesh
    assert sharding.seed_mesh(1, 3) is None


COLLECTIVES = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from metareward import axes

    out = sys.argv[1]
    full = {"a": np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 7,
            "b": np.arange(4, dtype=np.float32) - 1.5,
            "c": np.arange(8, dtype=np.int32).reshape(4, 2) * 3}
    mesh = Mesh(np.asarray(jax.devices()[:2]).reshape(1, 2), ("seeds", "members"))

    def body(t):  # t: this device's block of 2 rows
        return (axes.sum_members(t), axes.mean_members(t), axes.gather_members(t),
                axes.member_shards())

    spec = {"a": P("members"), "b": P("members"), "c": P("members")}
    fn = jax.jit(jax.shard_map(lambda t: body(t)[:3], mesh=mesh, in_specs=(spec,),
                               out_specs=(P(), P(), P()), check_vma=False))
    s, m, g = fn(full)
    res = {k: {"sum": np.asarray(s[k]).tolist(), "mean": np.asarray(m[k]).tolist(),
               "gather": np.asarray(g[k]).tolist(),
               "dtypes": [str(s[k].dtype), str(g[k].dtype)]} for k in full}
    res["shards"] = jax.shard_map(lambda t: jnp.int32(body(t)[3]), mesh=mesh,
                                  in_specs=(spec,), out_specs=P(), check_vma=False)(full).item()
    hlo = fn.lower(full).as_text()  # what we emit, before XLA combines collectives
    res["all_reduce"] = hlo.count("stablehlo.all_reduce")
    res["all_gather"] = hlo.count("stablehlo.all_gather")
    json.dump(res, open(f"{out}/res.json", "w"))
    """
)


def test_member_collectives_on_two_devices_match_numpy(tmp_path):
    """``axes.sum_members``/``mean_members``/``gather_members`` over 2 member devices on
    a tree of mixed shapes and dtypes: the sums, means and gathered arrays numpy gives,
    dtypes kept, and one collective per dtype (the leaves are packed, not one collective
    per leaf)."""
    res = run_with_host_devices(COLLECTIVES, tmp_path, 2, timeout=120)
    full = {"a": np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 7,
            "b": np.arange(4, dtype=np.float32) - 1.5,
            "c": np.arange(8, dtype=np.int32).reshape(4, 2) * 3}
    assert res["shards"] == 2
    for k, x in full.items():
        blocks = x[:2] + x[2:]  # device 0 holds rows 0-1, device 1 rows 2-3
        np.testing.assert_allclose(res[k]["sum"], blocks, rtol=1e-6)
        np.testing.assert_allclose(res[k]["mean"], blocks / 2, rtol=1e-6)
        np.testing.assert_array_equal(res[k]["gather"], x)
        assert res[k]["dtypes"] == [str(x.dtype)] * 2
    # 2 dtypes: one all-reduce each for the sum and the mean, one all-gather each (not
    # one per leaf: 6 and 3).
    assert res["all_reduce"] == 4 and res["all_gather"] == 2, res
