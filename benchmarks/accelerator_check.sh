#!/usr/bin/env bash
# The accelerator check (see benchmarks/accelerator_check.py); arguments pass through.
exec "${PYTHON:-python3}" "$(dirname "$0")/accelerator_check.py" "$@"
