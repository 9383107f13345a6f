"""redline's operator side: everything that never runs inside an agent app.

The ``redline`` command (:mod:`redline_operator.cli`), the simulator (:mod:`.sim`), the
native stack (:mod:`.stack`), the concurrency sweep (:mod:`.sweep`), the rule and
dashboard generators (:mod:`.alerts`, :mod:`.dashboards`), ``redline top`` and the demo.
It depends on the app-side ``redline`` package (for the metric catalogue in
:mod:`redline.semconv` and the typed config in :mod:`redline.config`), never the other way.
"""
