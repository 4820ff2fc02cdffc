"""Sandboxed, stateful execution of model-written Python (see docs/sandbox.md).

`SandboxPool` keeps pre-started bubblewrap workers that fork a fresh child per solution;
`run_blocks` is the simple form for scripts and checks.
"""

from ._launch import SandboxConfig, SandboxError, find_bwrap
from ._pool import SandboxPool, run_blocks

__all__ = ["SandboxConfig", "SandboxError", "SandboxPool", "find_bwrap", "run_blocks"]
