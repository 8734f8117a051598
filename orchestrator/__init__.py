"""trio-orchestrator: jobs on PostgreSQL whose lifecycle is always correct.

Each job is an actor whose mailbox orders its lifecycle; every write is
guarded by the expected prior state and the lease token; timestamps are
stamped monotonic per job. See DESIGN.md for the guarantees.
"""

from ._errors import DatabaseUnavailable as DatabaseUnavailable
from ._errors import InvalidInput as InvalidInput
from ._errors import InvalidJobId as InvalidJobId
from ._errors import JobNotFound as JobNotFound
from ._errors import MigrationError as MigrationError
from ._errors import NotAuthorized as NotAuthorized
from ._errors import OrchestratorError as OrchestratorError
from ._errors import StoreError as StoreError
from ._errors import UnknownJobKind as UnknownJobKind
from ._explain import Explanation as Explanation
from ._explain import Reason as ExplainReason
from ._jobs import JobContext as JobContext
from ._retention import PruneResult as PruneResult
from ._retention import Retention as Retention
from ._lifecycle import JobState as JobState
from ._models import CancelOutcome as CancelOutcome
from ._models import JobRecord as JobRecord
from ._models import Owner as Owner
from ._models import Principal as Principal
from ._orchestrator import NotRunning as NotRunning
from ._periodic import Schedule as Schedule
from ._schedule_listing import ScheduleInfo as ScheduleInfo
from ._orchestrator import Orchestrator as Orchestrator

__version__ = "0.1.0"
