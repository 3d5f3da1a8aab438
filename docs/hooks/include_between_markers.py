"""MkDocs hook: include the lines of a file between two marker comments, dedented.

A page line of the form

    <!-- include-between-markers: tests/test_own_env_template.py -->

becomes a fenced Python block holding the lines strictly between
``# --- template start ---`` and ``# --- template end ---`` of that file (path relative
to the repository root), dedented. A missing file or marker fails the build, so the page
can never show a stale or empty template. ``tests/test_own_env_template.py`` checks that
the same lines are a runnable script.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from mkdocs.exceptions import PluginError

DIRECTIVE = re.compile(r"^<!-- include-between-markers: (\S+) -->$", re.MULTILINE)
START, END = "# --- template start ---", "# --- template end ---"


def _block(root: Path, rel: str, page: str) -> str:
    path = root / rel
    if not path.is_file():
        raise PluginError(f"{page}: include-between-markers: no file {rel}")
    lines = path.read_text(encoding="utf-8").splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() in (START, END)]
    if len(marks) != 2 or lines[marks[0]].strip() != START:
        raise PluginError(f"{page}: {rel} needs exactly one {START!r} line followed by "
                          f"one {END!r} line")
    body = textwrap.dedent("\n".join(lines[marks[0] + 1:marks[1]])).strip("\n")
    return f"```python\n{body}\n```"


def on_page_markdown(markdown, page, config, files):
    root = Path(config["config_file_path"]).parent
    return DIRECTIVE.sub(lambda m: _block(root, m.group(1), page.file.src_path), markdown)
