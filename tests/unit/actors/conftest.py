import sys
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

# Until the project's pytest configuration puts the repository root on
# sys.path (pythonpath = ["."]), make `import actors` work from here.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

# Virtual seconds: under the autojump clock a deadlocked test reaches this at
# once, and fails instead of hanging the whole run.
HANG_AFTER = 10_000


@pytest.fixture
async def watchdog(nursery: trio.Nursery) -> None:
    """Fail the test if it is still running after ``HANG_AFTER`` virtual seconds.

    Request it next to ``autojump_clock`` (pytest-trio only runs trio fixtures
    and picks up clocks that the test function itself requests; it ignores
    ``usefixtures``), which this checks.
    """
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, MockClock) and clock.autojump_threshold == 0, (
        "tests here must request the autojump_clock fixture"
    )

    async def bark() -> None:
        await trio.sleep(HANG_AFTER)
        raise AssertionError(f"still blocked after {HANG_AFTER} virtual seconds: a hang")

    nursery.start_soon(bark)
