"""A sweep of bad inputs through the ``metareward`` command's ``main`` (issue 31): each
must end in exactly one stderr line ``metareward COMMAND: error: ...`` naming the value
or file, exit code 2 (1 for a runtime failure: no usable checkpoint), no traceback, and
nothing written or changed in the working directory.

In-process (``cli.main(argv)``), so the sweep costs the validation alone, not a Python
and JAX start-up per case; ``tests/test_cli.py`` runs the console script end to end for
the cases that compile (memory estimates) and ``tests/test_input_errors.py`` checks the
messages of each validator in detail.
"""

import json

import pytest

from metareward import cli
from metareward.runtime import driver

TINY = ["--set", "num_envs=2", "--set", "num_steps=16", "--set", "hidden=16,16"]


def _record(algo, env):
    plan = driver.prepare(algo, env, options=driver.RunOptions(seeds=2))
    return {**plan.record(), "run_id": "abc123", "wandb_id": "abc123"}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A working directory of files the cases point at."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "bad.json").write_text('{"learning_rate": 1e-3,')
    (root / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    (root / "inf.json").write_text('{"learning_rate": Infinity}')
    (root / "list.json").write_text("[1, 2]")
    (root / "x.ini").write_text("[a]\nb=1\n")
    (root / "afile").write_text("not a directory")
    (root / "full").mkdir()
    (root / "full" / "mine.txt").write_text("a user's file")
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("x")
    ppo, epg = _record("ppo", "cartpole"), _record("epg", "pendulum")
    metrics = json.dumps({"seed": 0, "chunk": 0, "update": 1, "env_steps": 32,
                          "return_mean": 10.0}) + "\n"
    runs = {
        "oldrun": (ppo, metrics),
        "runvalid": (ppo, metrics),
        "epgrun": (epg, metrics),
        "runbad": ({k: v for k, v in ppo.items() if k != "run"}, metrics),
        "runjson": ("{not json", metrics),
        "runbin": (b"\xff\xfe", metrics),
        "runbinmetrics": (ppo, b"\xff\xfe\x00\x01"),
        "runjunkmetrics": (ppo, "3\n[1]\n"),
    }
    for name, (config, metrics_text) in runs.items():
        d = root / name
        d.mkdir()
        for file, content in (("config.json", config), ("metrics.jsonl", metrics_text)):
            if isinstance(content, bytes):
                (d / file).write_bytes(content)
            else:
                (d / file).write_text(content if isinstance(content, str)
                                      else json.dumps(content))
    return root


TRAIN = ["train", "ppo", "--env", "cartpole", *TINY]
CASES = [
    # (argv, exit code, text the one line contains)
    (["train", "ppx", "--env", "cartpole"], 2, "unknown algorithm 'ppx'"),
    (["train", "ppo", "--env", "cartpol"], 2, "unknown environment 'cartpol'"),
    ([*TRAIN, "--set", "lr=1e-3"], 2, "unknown config key(s) ['lr']"),
    ([*TRAIN, "--set", "learning_rate=1e400"], 2, "'learning_rate' expects a finite number"),
    ([*TRAIN, "--set", "learning_rate=nan"], 2, "'learning_rate' expects a number, got 'nan'"),
    ([*TRAIN, "--set", "learning_rate=abc"], 2, "'learning_rate' expects a number"),
    ([*TRAIN, "--set", "vf_clip_eps=inf"], 2, "'vf_clip_eps' expects"),
    ([*TRAIN, "--set", "hidden=a,b"], 2, "'hidden' expects a list of ints"),
    ([*TRAIN, "--set", "total_steps=-5"], 2, "total_steps=-5 is invalid"),
    ([*TRAIN, "--set", "anneal_lr=maybe"], 2, "'anneal_lr' expects a bool"),
    ([*TRAIN, "--set", "novalue"], 2, "--set expects KEY=VALUE"),
    ([*TRAIN, "--total-steps", "-100"], 2, "total_steps=-100 is invalid"),
    ([*TRAIN, "--seeds", "0"], 2, "seeds must be an int > 0"),
    ([*TRAIN, "--seed", "-1"], 2, "seed must be an int in [0, 2**32)"),
    ([*TRAIN, "--checkpoint-every", "0"], 2, "checkpoint_every must be an int > 0"),
    ([*TRAIN, "--chunk-updates", "0"], 2, "chunk_updates must be an int > 0"),
    ([*TRAIN, "--eval-episodes", "-1"], 2, "eval_episodes must be an int >= 0"),
    ([*TRAIN, "--devices", "3"], 2, "devices"),
    ([*TRAIN, "--config", "bad.json"], 2, "config file 'bad.json' is malformed"),
    ([*TRAIN, "--config", "bin.json"], 2, "config file 'bin.json' is not UTF-8 text"),
    ([*TRAIN, "--config", "inf.json"], 2, "expects a finite number, got inf"),
    ([*TRAIN, "--config", "nothere.json"], 2, "config file 'nothere.json' does not exist"),
    ([*TRAIN, "--config", "x.ini"], 2, "unknown format '.ini'"),
    ([*TRAIN, "--config", "list.json"], 2, "must hold a mapping of config keys"),
    ([*TRAIN, "--env-arg", "gravity=nan"], 2, "env option gravity='nan' for cartpole"),
    ([*TRAIN, "--env-arg", "gravity=[1,2]"], 2, "env option gravity=[1, 2] for cartpole"),
    ([*TRAIN, "--env-arg", "max_steps_in_episode=-5"], 2, "expects an int > 0"),
    ([*TRAIN, "--env-arg", "bogus=1"], 2, "unknown env parameter(s) ['bogus']"),
    ([*TRAIN, "--env-arg", "novalue"], 2, "--env-arg expects KEY=VALUE"),
    ([*TRAIN, "--out", "afile"], 2, "--out afile is a file"),
    ([*TRAIN, "--out", "afile/sub"], 2, "--out afile/sub is under a file"),
    ([*TRAIN, "--out", "full"], 2, "--out full is not empty (it holds mine.txt)"),
    ([*TRAIN, "--out", "oldrun"], 2, "oldrun is already a run directory"),
    # Too big for the machine: these were OOM-killed without a message, leaving a
    # config.json-only directory, or trained to the end and then asked for 576 GB to
    # evaluate. Refused after compiling (XLA's own estimate), before anything is written.
    ([*TRAIN, "--set", "hidden=100000,100000"], 2, "update(s) of 4 seed(s) "
                                                   "would need about"),
    ([*TRAIN, "--seeds", "3000000"], 2, "of 3000000 seed(s) would need about"),
    ([*TRAIN, "--eval-episodes", "1e9"], 2, "the final evaluation (1000000000 episodes per "
                                            "seed, --eval-episodes) would need about"),
    (["train", "ppo", "--env", "cartpole,pendulum"], 2, "ppo trains on one env"),
    (["train", "epg", "--env", "pendulum"], 2, "epg is a meta-learner"),
    (["meta-train", "ppo", "--env", "pendulum"], 2, "ppo is not a meta-learner"),
    (["meta-train", "epg", "--env", "cartpole"], 2, "has no task distribution"),
    (["meta-train", "epg", "--env", "pendulum", "--set", "buffer_size=16", "--set",
      "steps_per_update=16"], 2, "buffer_size=16 is invalid; allowed: an int >= 29"),
    (["resume", "nowhere"], 2, "nowhere is not a run directory"),
    (["resume", "afile"], 2, "afile is not a run directory"),
    (["resume", "runbad"], 2, "runbad/config.json lacks the key(s) ['run']"),
    (["resume", "runjson"], 2, "runjson/config.json is not valid JSON"),
    (["resume", "runbin"], 2, "runbin/config.json is not UTF-8 text"),
    (["eval", "nowhere"], 2, "nowhere is not a run directory"),
    (["eval", "runbad"], 2, "runbad/config.json lacks the key(s) ['run']"),
    (["eval", "runvalid", "--episodes", "0"], 2, "--episodes must be > 0"),
    (["eval", "runvalid"], 1, "no usable checkpoint in"),
    (["plot", "nowhere"], 2, "nowhere is not a run directory"),
    (["plot", "runvalid", "-o", "x.xyz"], 2, "unknown figure format '.xyz'"),
    (["plot", "runvalid", "-o", "noext"], 2, "has no suffix"),
    (["plot", "runvalid", "-o", "adir"], 2, "'adir' is a directory"),
    (["plot", "runvalid", "-o", "afile/x.png"], 2, "afile is a file"),
    (["plot", "runvalid", "--metric", "bogus"], 2, "no metric 'bogus'"),
    (["plot", "runbinmetrics"], 2, "runbinmetrics/metrics.jsonl is not UTF-8 text"),
    (["plot", "runjunkmetrics"], 2, "no metrics records in runjunkmetrics"),
    (["meta-test", "epg", "--loss", "nowhere"], 2, "nowhere is not a run directory"),
    (["meta-test", "epg", "--loss", "runvalid"], 2, "runvalid was made by `metareward "
                                                    "meta-train ppo`, not epg"),
    (["meta-test", "epg", "--loss", "epgrun", "--out", "afile"], 2, "--out afile is a file"),
    (["meta-test", "epg", "--loss", "epgrun", "--out", "afile/sub"], 2,
     "--out afile/sub is under a file"),
    (["meta-test", "epg", "--loss", "runbad"], 2, "runbad/config.json lacks the key(s)"),
    (["config", "ppo", "--env", "cartpole", "--set", "learning_rate=1e999"], 2,
     "'learning_rate' expects a finite number"),
    (["config", "ppo", "--env", "cartpole", "--set", "learning_rate=inf"], 2,
     "'learning_rate' expects a number, got 'inf'"),
    (["config", "ppx", "--env", "cartpole"], 2, "unknown algorithm 'ppx'"),
]


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("argv,code,text", CASES,
                         ids=[" ".join(c[0]).replace(" ".join(TINY), "TINY") for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(layout, monkeypatch, capsys, argv, code,
                                                  text):
    monkeypatch.chdir(layout)
    before = _tree(layout)
    got = cli.main(argv)
    err = capsys.readouterr().err
    assert got == code, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"metareward {argv[0]}: error: "), err
    assert text in lines[0], err
    assert "Traceback" not in err
    assert _tree(layout) == before
