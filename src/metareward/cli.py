"""The ``metareward`` command.

    metareward list
    metareward config ppo --env pendulum                 # the resolved config
    metareward train ppo --env cartpole --seeds 4
    metareward train a2c --env cartpole --set total_steps=2e5 --set ent_coef=0
    metareward resume runs/ppo-cartpole-20261122-101500
    metareward eval runs/ppo-cartpole-20261122-101500 --episodes 64
    metareward plot runs/ppo-cartpole-* runs/a2c-cartpole-* -o cartpole.png
    metareward meta-train epg --env pendulum --set num_epochs=50
    metareward meta-test epg --loss runs/epg-pendulum-20261122-101500 --compare-init

Exit codes: 0 done; 1 the run stopped on a non-finite value or another runtime error (an
I/O error names its file; no usable checkpoint); 2 bad input, nothing written (a bad value
or path, a run directory locked by another process, a checkpoint that does not fit the
current code or belongs to another run, a run too big for the machine's memory); 128+N
stopped by signal N (after writing a checkpoint, once a run has started; 130 for Ctrl-C,
143 for SIGTERM).

argparse rather than tyro: the command is the same for every algorithm and the config
keys differ per algorithm, so they are given as ``--set key=value`` (the same keys as in
a config file) and validated against the algorithm's ``Config`` dataclass, whose fields,
types and ranges the error messages list. No dependency, and algorithms registered later
(:mod:`metareward.algos.registry`) need no CLI code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from metareward import configure_xla, interrupts

# The command trains: metareward's XLA:CPU settings, before anything starts jax's backend
# (metareward._xla; a library import of metareward leaves XLA_FLAGS alone). A bad
# METAREWARD_XLA_SEQUENTIAL_SCHEDULER is reported by main() in one line.
try:
    configure_xla()
    _XLA_SETTING_ERROR: str | None = None
except ValueError as _error:
    _XLA_SETTING_ERROR = str(_error)

EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 1


class _BadInput(Exception):
    pass


def _int(text: str) -> int:
    """An int that may be written 1e6 or 1_000_000."""
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not v.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(v)


def _train_args(t: argparse.ArgumentParser, seeds: int, eval_episodes: int) -> None:
    t.add_argument("algo", help="see `metareward list`")
    t.add_argument("--env", "--envs", dest="env", required=True,
                   help="see `metareward list`; a comma-separated list for a learner over "
                        "several envs (metagenrl)")
    t.add_argument("--seeds", type=_int, default=seeds,
                   help=f"seeds trained at once (default {seeds})")
    t.add_argument("--seed", type=_int, default=0, help="base PRNG seed (default 0)")
    t.add_argument("--devices", type=_int, default=None,
                   help="local devices to shard the run over: the seeds take "
                        "gcd(devices, seeds), an EPG/MetaGenRL population the rest, which "
                        "must divide it (default: all, or the most that split so)")
    t.add_argument("--total-steps", type=_int, help="env steps per seed (config total_steps)")
    t.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key (repeatable); `metareward config` lists the keys",
    )
    t.add_argument("--config", metavar="FILE", help="config file (.json/.toml/.yaml)")
    t.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="env option, e.g. backend=generalized or episode_length=500")
    t.add_argument("--out", metavar="DIR",
                   help="the run directory (default runs/ALGO-ENV-TIMESTAMP)")
    t.add_argument("--wandb", choices=["off", "offline", "online"], default="off")
    t.add_argument("--chunk-updates", type=_int,
                   help="updates per jitted chunk = per metrics record (default: ~100 chunks)")
    t.add_argument("--checkpoint-every", type=_int, default=10, metavar="N",
                   help="checkpoint every N chunks (default 10; always at the end)")
    t.add_argument("--eval-episodes", type=_int, default=eval_episodes,
                   help=f"episodes per seed evaluated at the end (default {eval_episodes}; "
                        "0: skip)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _distributed_args(t)


def _distributed_args(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group(
        "several processes/hosts (jax.distributed; every process runs the same command "
        "with its own --process-id; process 0 writes the run directory)")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="process 0's address, reachable from every process, or 'auto' "
                        "(SLURM/Open MPI detection); env METAREWARD_COORDINATOR")
    g.add_argument("--num-processes", type=_int, metavar="N",
                   help="processes in the run; env METAREWARD_NUM_PROCESSES")
    g.add_argument("--process-id", type=_int, metavar="I",
                   help="this process, 0..N-1; env METAREWARD_PROCESS_ID")
    g.add_argument("--init-timeout", type=_int, metavar="S",
                   help="seconds to wait for the coordinator and the other processes "
                        "(default 300); env METAREWARD_INIT_TIMEOUT")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metareward",
        description="Train, resume, evaluate and plot metareward runs.",
        epilog="Exit codes: 0 ok, 1 non-finite/runtime error, 2 bad input, 128+N signal N.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="algorithms and environments")

    c = sub.add_parser("config", help="print the resolved config of ALGO on ENV")
    c.add_argument("algo")
    c.add_argument("--env", required=True)
    c.add_argument("--config", metavar="FILE")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    t = sub.add_parser("train", help="train ALGO on ENV, many seeds in one program")
    _train_args(t, seeds=4, eval_episodes=32)
    mt = sub.add_parser(
        "meta-train",
        help="meta-train a meta-learner (e.g. epg) on ENV's task distribution; one update "
             "is one outer iteration (an ES epoch), the return is the population's")
    _train_args(mt, seeds=1, eval_episodes=8)

    ms = sub.add_parser(
        "meta-test",
        help="train fresh agents with the frozen learned loss/objective of a meta-training "
             "run on held-out tasks; writes curves (JSON, PNG) and a table")
    ms.add_argument("algo", help="the run's algorithm (e.g. epg)")
    ms.add_argument("--loss", "--objective", dest="source", required=True, metavar="RUN_DIR",
                    help="a meta-train run directory (its newest good checkpoint)")
    ms.add_argument("--env", help="env to test on (default: the run's)")
    ms.add_argument("--tasks", type=_int, default=None,
                    help="held-out tasks (default 4; 1 for an env without a task "
                         "distribution, e.g. metagenrl's test env)")
    ms.add_argument("--agents", type=_int, default=2,
                    help="fresh agents per task and meta-seed (default 2)")
    ms.add_argument("--seed", type=_int, default=1,
                    help="picks the held-out tasks and agents (default 1)")
    ms.add_argument("--eval-episodes", type=_int, default=10,
                    help="episodes of each trained agent for its final return (default 10)")
    ms.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for the test, e.g. inner_updates=256")
    ms.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="option for metareward.envs.make (e.g. task_ranges=...)")
    ms.add_argument("--compare-init", action="store_true",
                    help="also train the agents with each meta-seed's initial loss")
    ms.add_argument("--out", metavar="DIR", help="default: RUN_DIR/meta-test-ENV")

    r = sub.add_parser("resume", help="continue a run from its newest good checkpoint")
    r.add_argument("run_dir")
    r.add_argument("--no-progress", action="store_true")
    _distributed_args(r)

    e = sub.add_parser("eval", help="evaluate the newest checkpoint of a run")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=_int, default=32, help="per seed (default 32)")
    e.add_argument("--deterministic", action="store_true", help="act with the mode")

    pl = sub.add_parser("plot", help="learning curves of runs on one figure")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("-o", "--output", metavar="FILE",
                    help="default: RUN_DIR/curve.png for one run, ./curves.png for several")
    pl.add_argument("--metric", default="return_mean", help="a metrics.jsonl field")
    for compiles in (t, mt, ms, r, e):
        compiles.add_argument(
            "--no-compile-cache", action="store_true",
            help="do not use JAX's persistent compilation cache (default: on, in "
                 "$METAREWARD_COMPILE_CACHE or ~/.cache/metareward/jax-compile-cache; "
                 "METAREWARD_COMPILE_CACHE=off turns it off too)")
    return p


#: Where the command keeps compiled programs unless ``$METAREWARD_COMPILE_CACHE`` says.
COMPILE_CACHE_ENV = "METAREWARD_COMPILE_CACHE"


def compile_cache_dir(disabled: bool = False) -> str | None:
    """The directory of JAX's persistent compilation cache for this command: ``None``
    (no cache) with ``--no-compile-cache`` or ``METAREWARD_COMPILE_CACHE=off``, else
    ``$METAREWARD_COMPILE_CACHE`` or ``$XDG_CACHE_HOME/metareward/jax-compile-cache``
    (``~/.cache/...``). A second run of the same program loads it instead of compiling it
    (seconds on a CPU); the key covers the program, the jax version and the XLA flags.

    Args:
        disabled: ``--no-compile-cache``.

    Returns:
        The directory, or ``None``.
    """
    value = os.environ.get(COMPILE_CACHE_ENV, "")
    if disabled or value.lower() == "off":
        return None
    if value:
        return os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "metareward", "jax-compile-cache")


def _use_compile_cache(args: argparse.Namespace) -> None:
    """Points JAX's persistent compilation cache at :func:`compile_cache_dir`, unless the
    user configured one already (``JAX_COMPILATION_CACHE_DIR``)."""
    import jax

    if not hasattr(args, "no_compile_cache"):  # a command that compiles nothing
        return
    path = compile_cache_dir(args.no_compile_cache)
    if path is not None and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", path)


def _literal_kwargs(items: list[str]) -> dict:
    from metareward.runtime.configs import parse_assignments, parse_literal

    return {k: parse_literal(v) for k, v in parse_assignments(items, "--env-arg").items()}


def cmd_list() -> None:
    from metareward import envs
    from metareward.algos import algorithm_names, get_algorithm

    print("algorithms:")
    for name in algorithm_names():
        spec = get_algorithm(name)
        presets = f" [tuned: {', '.join(sorted(spec.presets))}]" if spec.presets else ""
        print(f"  {name:26} {spec.description}{presets}")
    print("environments:")
    for name in envs.names():
        print(f"  {name:26} {envs.describe(name)}")


def cmd_config(args: argparse.Namespace) -> None:
    import json

    from metareward import envs
    from metareward.algos import get_algorithm
    from metareward.runtime import configs

    with _input_errors():
        spec = get_algorithm(args.algo)
        envs.describe(args.env)
        config = configs.resolve_config(
            spec.default_config(args.env), args.config, configs.parse_assignments(args.set)
        )
    print(json.dumps(configs.config_to_dict(config), indent=2))


def cmd_train(args: argparse.Namespace) -> int:
    from metareward.runtime import configs, driver
    from metareward.runtime.rundir import RunDir

    with _input_errors():  # everything is validated before anything is written
        from metareward.algos import get_algorithm

        meta = get_algorithm(args.algo).meta
        if meta and args.command == "train":
            raise _BadInput(f"{args.algo} is a meta-learner: use `metareward meta-train "
                            f"{args.algo} --env {args.env}`")
        if not meta and args.command == "meta-train":
            raise _BadInput(f"{args.algo} is not a meta-learner: use `metareward train "
                            f"{args.algo} --env {args.env}`")
        options = driver.RunOptions(
            seeds=args.seeds,
            seed=args.seed,
            devices=args.devices,
            chunk_updates=args.chunk_updates,
            checkpoint_every=args.checkpoint_every,
            wandb=args.wandb,
            eval_episodes=args.eval_episodes,
        )
        overrides = configs.parse_assignments(args.set)
        if args.total_steps is not None:
            overrides["total_steps"] = args.total_steps
        if args.out is not None:  # a new or empty, writable directory
            error = _on_main(lambda: _input_error(RunDir(args.out).check_new))
            if error is not None:
                raise _BadInput(error)
        plan = driver.prepare(
            args.algo,
            args.env,
            config_file=args.config,
            overrides=overrides,
            env_kwargs=_literal_kwargs(args.env_arg),
            options=options,
        )
    result = driver.start(plan, args.out, progress=not args.no_progress)
    _finished(result)
    return 0


def _finished(result) -> None:
    ret = "-" if result.final_return is None else f"{result.final_return:.1f}"
    print(
        f"done: {result.update} updates, {result.env_steps:,} env steps per seed in "
        f"{result.wall_time:.1f} s (+{result.compile_time:.1f} s compile); "
        f"return in the last chunk {ret} (mean over seeds)"
    )
    from metareward import distributed

    if not distributed.is_main():
        print(f"run directory (written by process 0): {result.run_dir}")
        return
    print(f"run directory: {result.run_dir}")
    print(f"plot: {Path(result.run_dir) / 'curve.png'}")


def cmd_resume(args: argparse.Namespace) -> int:
    from metareward.runtime import driver

    error = _on_main(lambda: _input_error(lambda: (_require_run(args.run_dir),
                                                   driver.plan_from_run(args.run_dir))))
    if error is not None:
        raise _BadInput(error)
    result = driver.resume(args.run_dir, progress=not args.no_progress)
    _finished(result)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from metareward.runtime import driver
    from metareward.runtime.rundir import RunDir

    _require_run(args.run_dir)
    if args.episodes <= 0:
        raise _BadInput(f"--episodes must be > 0, got {args.episodes}")
    with _input_errors():
        driver.plan_from_run(args.run_dir, any_devices=True)
    plan, update, state, meta = driver.load(args.run_dir)
    returns = driver.evaluate(plan, state, args.episodes, deterministic=args.deterministic)
    rec = driver.write_eval(
        RunDir(args.run_dir), update, int(meta.get("env_steps", 0)), returns, args.deterministic
    )
    print(
        f"{plan.algo.name} on {plan.env_name}, checkpoint of update {update} "
        f"({rec['env_steps']:,} env steps), {args.episodes} episodes per seed"
        f"{' (deterministic)' if args.deterministic else ''}:"
    )
    print(f"  return {rec['mean']:.2f} +- {rec['std']:.2f} over {len(rec['per_seed'])} seeds")
    print("  per seed: " + ", ".join(f"{x:.1f}" for x in rec["per_seed"]))
    print(f"written to {RunDir(args.run_dir).eval_json}")
    return 0


def cmd_meta_test(args: argparse.Namespace) -> int:
    from metareward.runtime import configs, meta_test
    from metareward.runtime.paths import check_writable_dir
    from metareward.runtime.rundir import RunDir

    _require_run(args.source)
    with _input_errors():
        from metareward.algos import get_algorithm

        spec = get_algorithm(args.algo)
        recorded = RunDir(args.source).load_config()["algo"]
        if recorded != args.algo:
            raise _BadInput(f"{args.source} was made by `metareward meta-train {recorded}`, "
                            f"not {args.algo}")
        if spec.learned is None:
            raise _BadInput(f"{args.algo} is not a meta-learner: nothing to meta-test")
        overrides = configs.parse_assignments(args.set)
        if args.out is not None:  # checked before the 30 s or more of training
            try:
                check_writable_dir(args.out)
            except ValueError as e:
                raise _BadInput(f"--out {e}") from None
        print(f"meta-test {args.algo} from {args.source}: {args.tasks or 'default'} "
              f"held-out task(s) x {args.agents} agents per meta-seed (compiling...)",
              flush=True)
        result = meta_test.run(
            args.source, args.env, tasks=args.tasks, agents=args.agents, seed=args.seed,
            eval_episodes=args.eval_episodes, overrides=overrides,
            env_kwargs=_literal_kwargs(args.env_arg), compare_init=args.compare_init,
            out=args.out)
    print(result.table())
    print(f"written to {result.out}: meta_test.json, meta_test.png, meta_test.md")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from metareward.runtime.plot import plot_runs
    from metareward.runtime.rundir import RunDir

    for d in args.run_dirs:
        if not (Path(d) / "metrics.jsonl").is_file():
            raise _BadInput(f"{d} is not a run directory with metrics (no metrics.jsonl)")
    out = args.output or (
        Path(args.run_dirs[0]) / "curve.png" if len(args.run_dirs) == 1 else Path("curves.png")
    )
    # plot_runs checks the output, the metrics files and the metric before it draws
    with _input_errors():
        if not any(RunDir(d).read_metrics() for d in args.run_dirs):  # not UTF-8: raises
            raise _BadInput(f"no metrics records in {', '.join(args.run_dirs)} (no chunk "
                            "finished yet?): nothing to plot")
        written = plot_runs(args.run_dirs, out, metric=args.metric)
    print(f"plot: {written}")
    return 0


@contextlib.contextmanager
def _input_errors():
    """Errors raised while validating input become exit code 2."""
    try:
        yield
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        raise _BadInput(str(e)) from None


def _input_error(check) -> str | None:
    """The message of the bad-input error ``check()`` raises, else ``None``."""
    try:
        with _input_errors():
            check()
    except _BadInput as e:
        return str(e)
    return None


def _on_main(fn):
    """``fn()`` evaluated by process 0 (which owns the run directory), the same value on
    every process of a multi-process run, so all of them take the same branch."""
    from metareward import distributed

    return distributed.agree(fn() if distributed.is_main() else None)


def _connect(args: argparse.Namespace) -> None:
    """``jax.distributed`` for a multi-process run (flags over env vars); nothing for
    one process. Malformed values are bad input (exit 2); an unreachable coordinator a
    runtime error (exit 1)."""
    from metareward import distributed

    config = distributed.DistributedConfig.from_env(
        coordinator=args.coordinator, num_processes=args.num_processes,
        process_id=args.process_id, timeout=args.init_timeout)
    distributed.initialize(config)


def _require_run(run_dir: str) -> None:
    if not (Path(run_dir) / "config.json").is_file():
        raise _BadInput(f"{run_dir} is not a run directory (no config.json)")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the exit code.

    Every failure ends in one line ``metareward COMMAND: error: ...`` on stderr: exit 2
    for bad input (nothing written), 1 for a runtime failure (an I/O error names its
    file), 128+N after signal N (130 for Ctrl-C, also while importing or compiling).

    Args:
        argv: The arguments after ``metareward`` (``None``: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    args = _parser().parse_args(argv)
    if _XLA_SETTING_ERROR is not None:
        print(f"metareward {args.command}: error: {_XLA_SETTING_ERROR}", file=sys.stderr)
        return _exit(argv, EXIT_BAD_INPUT)
    try:
        _import_the_library()
        if threading.current_thread() is threading.main_thread():
            interrupts.install()
        interrupts.check()  # held while the library imported JAX
        return _main(args, argv)
    except KeyboardInterrupt:
        print(f"\nmetareward {args.command}: interrupted", file=sys.stderr)
        return _exit(argv, 128 + signal.SIGINT)


def _import_the_library() -> None:
    """Imports JAX, the learners and the runtime before Ctrl-C may raise: the console
    script's handler only records a Ctrl-C until then (:mod:`metareward.interrupts`), as a
    ``KeyboardInterrupt`` raised inside one of JAX's garbage-collection callbacks during
    these imports would be printed as "Exception ignored" with a traceback, not reported
    in one line. (``import metareward`` itself imports none of them.)"""
    import importlib

    for module in ("metareward.algos", "metareward.runtime"):
        importlib.import_module(module)


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    warnings.formatwarning = _format_warning
    # orbax logs the errors of its background threads with whole tracebacks; the failure
    # is raised again in this thread and reported in one line.
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    sys.unraisablehook = _quiet_closed_loops(sys.unraisablehook)

    from metareward.distributed import DistributedError
    from metareward.errors import ConfigError

    try:  # before JAX starts: importing the envs (gymnax) already starts its backend
        if hasattr(args, "coordinator"):  # train, meta-train, resume
            _connect(args)
    except ConfigError as e:
        print(f"metareward {args.command}: error: {e}", file=sys.stderr)
        return _exit(argv, EXIT_BAD_INPUT)
    except DistributedError as e:
        print(f"metareward {args.command}: error: {e}", file=sys.stderr)
        return _exit(argv, EXIT_RUNTIME)

    from metareward.runtime.checkpoint import (
        ForeignCheckpointError,
        IncompatibleCheckpointError,
        NoCheckpointError,
    )
    from metareward.runtime.driver import NonFiniteError, RunInterrupted
    from metareward.runtime.lock import RunLockedError

    interrupts.check()  # a Ctrl-C during the imports that JAX swallowed
    _use_compile_cache(args)

    commands = {
        "list": cmd_list,
        "config": cmd_config,
        "train": cmd_train,
        "meta-train": cmd_train,
        "meta-test": cmd_meta_test,
        "resume": cmd_resume,
        "eval": cmd_eval,
        "plot": cmd_plot,
    }
    try:
        code = commands[args.command](*([] if args.command == "list" else [args])) or 0
    except (_BadInput, ConfigError, RunLockedError, IncompatibleCheckpointError,
            ForeignCheckpointError) as e:
        print(f"metareward {args.command}: error: {e}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except NoCheckpointError as e:
        print(f"metareward {args.command}: error: {e}", file=sys.stderr)
        code = EXIT_RUNTIME
    except NonFiniteError as e:
        print(f"metareward {args.command}: stopped: {e}", file=sys.stderr)
        code = EXIT_RUNTIME
    except RunInterrupted as e:
        print(f"metareward {args.command}: {e}", file=sys.stderr)
        code = 128 + e.signum
        if e.during_eval:  # the evaluation's thread cannot be stopped: leave without it
            _leave_now(argv, code)
    except BrokenPipeError:  # e.g. `metareward list | head`: the reader left, fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except OSError as e:  # disk full, permissions...: the message names the file
        print(f"metareward {args.command}: error: {_os_error(e)}", file=sys.stderr)
        code = EXIT_RUNTIME
        # orbax's writer threads, left failing, print tracebacks while the interpreter
        # shuts down; every file of the run is closed by now.
        _leave_now(argv, code)
    return _exit(argv, code)


def _os_error(e: OSError) -> str:
    """One line for an I/O error, naming the file where Python knows it."""
    text = e.strerror or str(e)
    if e.filename is not None:
        return f"{text}: {e.filename}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _quiet_closed_loops(hook):
    """``sys.unraisablehook`` without two kinds of report, every other one still shown:

    * the "Event loop is closed" errors that tensorstore's writer threads report, one
      traceback per file, once a checkpoint write failed (the failure itself is reported
      in one line);
    * a Ctrl-C that landed in one of JAX's garbage-collection callbacks (printed as
      "Exception ignored ... KeyboardInterrupt" with a traceback): :mod:`metareward.interrupts`
      recorded it, and it is raised again at the next safe point, so the command still
      stops with its one line.
    """

    if getattr(hook, "_metareward_quiet", False):  # main() called again in one process
        return hook

    def quiet(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        if isinstance(value, KeyboardInterrupt) and interrupts.seen():
            return
        hook(unraisable)

    quiet._metareward_quiet = True
    return quiet


def _leave_now(argv: list[str] | None, code: int) -> None:
    """Ends the console script at once with ``code``, without waiting for background
    threads (a called ``main(argv)`` returns normally instead)."""
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _exit(argv: list[str] | None, code: int) -> int:
    if argv is None:  # the console script
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()


__all__ = ["COMPILE_CACHE_ENV", "EXIT_BAD_INPUT", "EXIT_RUNTIME", "compile_cache_dir", "main"]
