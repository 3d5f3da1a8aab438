"""``python -m metareward`` is the ``metareward`` command (see :mod:`metareward.cli`)."""

from metareward.cli import main

if __name__ == "__main__":
    main()
