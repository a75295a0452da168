"""Run by ``test_distributed.py`` under ``accelerate launch``: obliviate commands one after another
in the same processes (each process runs every command, as ``obliviate <argv>`` would), so that an
evaluation runs in processes that have just trained together.

Usage: ``accelerate launch ... tests/dist_job.py '<JSON list of argv lists>'``.
"""

import json
import sys

from obliviate.cli import run

if __name__ == "__main__":
    for argv in json.loads(sys.argv[1]):
        code = run(argv)
        if code:
            sys.exit(code)
