"""The chaos suite's app where capacity matters: the echo app with two slots and a queue of two.

A replica admits four requests at once (two running, two waiting); a request that finds it full is
refused at once with 429 and ``Retry-After``, so an overload or a saturated region is easy to make
with a handful of client threads and ``"delay_s"`` in the body.
"""

from __future__ import annotations

from meshnode.apps.echo import Echo


class Narrow(Echo):
    """Echo, two requests at a time, two more waiting."""

    max_concurrency = 2
    max_queue = 2
