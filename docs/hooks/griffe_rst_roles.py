"""Griffe extension for the docs build: Sphinx roles in docstrings rendered as code.

The docstrings in ``src/`` use Google-style sections (``Args:``, ``Returns:``) but refer
to other objects with Sphinx roles (``:func:`lookahead```, ``:class:`~metareward.envs.
spec.EnvSpec```), which Markdown would show verbatim. This turns each role into inline
code of its target (the last component for ``~`` targets). It changes the rendering
only: no docstring check is switched off, and ``src/`` is not touched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const|term):`([^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrites ``:role:`target``` to ```target``` in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":`" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
