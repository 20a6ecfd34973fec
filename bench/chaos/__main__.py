"""``python -m bench.chaos``: the chaos run (see bench/chaos/harness.py)."""

from __future__ import annotations

import sys

from bench.chaos.harness import main

sys.exit(main())
