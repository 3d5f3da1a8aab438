"""The example notebooks (``examples/NN_*.py``, jupytext percent files) run top to bottom
at smoke scale (``METAREWARD_SMOKE=1``: tiny budgets) without error and write their
figure ``<notebook name>.png`` to ``METAREWARD_FIGURES``. Notebooks check their own
numbers with ``assert`` (e.g. notebook 2 against the closed-form hypergradient), so a
wrong result fails here too. Every ``examples/[0-9]*.py`` is collected, so a new notebook
is covered without editing this file. The subprocess compiles with XLA:CPU's cheapest
settings (``tests/fast_compile.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fast_compile import fast_compile_env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("[0-9]*.py"))
#: Over ~60 s at smoke scale on a 2-core CPU (compiling the meta-learners dominates):
#: deselected by default, run with ``pytest -m slow tests/test_notebooks.py``.
SLOW = {"03_tare_chain", "04_epg_pendulum", "05_metagenrl", "06_mix_and_match"}


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize(
    "notebook",
    [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else [])
     for p in NOTEBOOKS],
)
def test_notebook_runs_at_smoke_scale(notebook: Path, tmp_path: Path):
    figures = tmp_path / "figures"
    env = fast_compile_env(METAREWARD_SMOKE="1", METAREWARD_FIGURES=str(figures))
    env.pop("MPLBACKEND", None)  # the notebook itself must cope without a display
    proc = subprocess.run([sys.executable, str(notebook)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, (
        f"{notebook.name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-5000:]}")
    figure = figures / f"{notebook.stem}.png"
    assert figure.is_file() and figure.stat().st_size > 1000, (
        f"{notebook.name} wrote no figure {figure.name}; found "
        f"{sorted(p.name for p in figures.glob('*'))}")
