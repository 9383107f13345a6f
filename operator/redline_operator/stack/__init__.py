"""The native stack: OpenTelemetry Collector, Prometheus, Alertmanager and a local pager.

Built from official Go modules into ``.cache/bin`` (``redline stack build``) and run as
detached child processes on loopback (``redline stack up|down|status``). The demo and
the tests drive it through :class:`Stack`.

Example::

    from redline_operator.stack import Stack

    stack = Stack()
    stack.up()
    print(stack.query("up"))
    stack.down()
"""

from redline_operator.stack.build import BuildError, BuildResult
from redline_operator.stack.lifecycle import ComponentStatus, Stack, StackError, find_root
from redline_operator.stack.ports import Ports

__all__ = [
    "Stack",
    "StackError",
    "ComponentStatus",
    "Ports",
    "BuildError",
    "BuildResult",
    "find_root",
]
