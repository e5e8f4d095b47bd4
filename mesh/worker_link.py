"""The three messages that hand a peer's link to a worker (``node/serving/worker_links.py``).

On a link that has carried nothing yet, the dialing node asks for the worker of one deployment's
replica (``ask_for_worker``: a ``Hello`` naming it). The serving node either hands the link to that
worker, whose first frame on it says so (``worker_bound``), or answers why not (a ``Failure`` with
the id ``BIND_ID``, kind ``declined``) and keeps serving the link itself. Only then does the
dialing node send calls on it.
"""

from __future__ import annotations

from .envelope import Envelope, Failure, Hello

__all__ = ["BIND_ID", "ask_for_worker", "asked_for", "declined", "is_bound", "worker_bound"]

BIND_ID = "bind"  # the request id of the three messages


def ask_for_worker(deployment: str) -> Hello:
    """The dialing node's first frame: this link is for the worker of `deployment`."""
    return Hello(BIND_ID, {"replica": deployment})


def asked_for(message: Envelope) -> str | None:
    """The deployment whose worker a link's first frame asks for; None when it asks for none."""
    match message:
        case Hello(_, {"replica": str(deployment)}):
            return deployment
    return None


def worker_bound() -> Hello:
    """The worker's first frame on a link handed to it."""
    return Hello(BIND_ID, {"bound": True})


def is_bound(message: Envelope) -> bool:
    """Whether `message` is the worker's word that the link is its own now."""
    return isinstance(message, Hello) and message.info.get("bound") is True


def declined(reason: str) -> Failure:
    """The serving node's answer when it keeps the link: why."""
    return Failure(BIND_ID, "declined", reason, False)
