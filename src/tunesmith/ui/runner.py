"""``python -m tunesmith.ui.runner RCFILE VERB ARGS…``: one UI job — ``tunesmith VERB ARGS…`` run as the CLI runs
it, its exit code left in RCFILE, so a UI started later still knows how the job ended."""
from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    rc_path, argv = sys.argv[1], sys.argv[2:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop: the finally below still records it
    rc = 1
    try:
        from tunesmith.cli import main as cli_main

        rc = cli_main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        tmp = f"{rc_path}.tmp"
        with open(tmp, "w") as f:
            f.write(str(rc))
        os.replace(tmp, rc_path)
    return rc


if __name__ == "__main__":
    sys.exit(main())
