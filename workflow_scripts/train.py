"""Training CLI for the shell rules: `python` or `accelerate launch` runs this file."""

import _workflow  # noqa: F401 - puts the package on sys.path

from scdpo.train import main

main()
