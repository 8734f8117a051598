"""A small actor runtime on trio.

Actors handle messages one at a time from a bounded mailbox; other code talks
to them through an :class:`ActorRef`. Actors run under a one-for-one
:class:`Supervisor` that restarts crashed actors behind the same ref and
mailbox, and escalates when they crash too often.
"""

from ._actor import Actor as Actor
from ._errors import ActorDead as ActorDead
from ._errors import AskTimeout as AskTimeout
from ._errors import MailboxFull as MailboxFull
from ._errors import SupervisorEscalation as SupervisorEscalation
from ._ref import ActorRef as ActorRef
from ._supervisor import Restart as Restart
from ._supervisor import Supervisor as Supervisor
from ._supervisor import open_supervisor as open_supervisor
