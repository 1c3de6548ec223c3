"""``xchat bench``: delivery measured end to end through the public SDK, next to same-run baselines.

The bench sees the system as an app and an operator do: it starts a private
local three-region mesh with TLS (``xchat.mesh``), talks to it only through
``xchat.client`` and reads the server processes from outside (``/proc``,
JetStream stream info). An import-linter contract keeps it off server code.

Modules, one concept each::

    profiles    how much one run does (smoke, default, full)
    meshes      the mesh under test and what is read from it
    resources   CPU and memory of processes (/proc)
    echo        the gRPC echo server of the baseline
    baselines   raw JetStream R3 and gRPC figures
    receiver    the receiving app, a child process
    pipes       replies from child processes, never blocking a shutdown
    workloads   closed-loop, open-loop and backlog phases through the SDK
    online      N idle devices holding receive streams open
    flames      optional py-spy flame graphs of the cross-region phases
    stats       quantiles, medians, ratios
    runner      one run: order of phases, repeats, medians
    report      ratios to baselines, the issue's targets, the table
"""

from xchat.bench.profiles import PROFILES, Profile, profile
from xchat.bench.report import build, table
from xchat.bench.runner import BenchError, run_sync

__all__ = ["PROFILES", "BenchError", "Profile", "build", "profile", "run_sync", "table"]
