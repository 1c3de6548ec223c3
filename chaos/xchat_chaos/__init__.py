"""xchat chaos drills: kill, freeze or cut off a region under load and prove nothing acked was lost.

Public surface::

    run_drill, DrillSettings, DrillResult     run one scenario on a started back end
    SCENARIOS                                 the scenario registry
    Backend, LocalBackend, KindBackend        where faults are injected
    History, Event, Fault, check, Verdict     the recorded history and its independent checker
    WorkloadSettings                          users, rate
"""

from xchat_chaos.backend import Backend, BackendError
from xchat_chaos.checker import Verdict, check
from xchat_chaos.drill import DrillResult, DrillSettings, run_drill
from xchat_chaos.history import Event, Fault, History
from xchat_chaos.kind import KindBackend
from xchat_chaos.local import LocalBackend
from xchat_chaos.scenarios import SCENARIOS
from xchat_chaos.workload import WorkloadSettings

__all__ = [
    "SCENARIOS",
    "Backend",
    "BackendError",
    "DrillResult",
    "DrillSettings",
    "Event",
    "Fault",
    "History",
    "KindBackend",
    "LocalBackend",
    "Verdict",
    "WorkloadSettings",
    "check",
    "run_drill",
]
