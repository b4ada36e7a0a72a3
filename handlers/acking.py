"""Answer Slack the moment a listener acks; the rest of its work goes on as a background task.

The app runs Bolt with `process_before_response=True`, where Bolt answers Slack only when the listener returns.
`acks_first` makes every listener return as soon as it has acked (or ended): the ack goes out at once, with no
10 ms polling for it, while the work after it (a readiness check, a card update) runs on as a task the runtime
holds and drains at shutdown. A failure after the ack reaches the same error handler as one before it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from handlers.blocks.answers import notice_message
from handlers.errors import handle_error

log = logging.getLogger(__name__)

Listener = Callable[..., Coroutine[Any, Any, Any]]

#: How long Slack waits for an ack (Bolt's own `ack_timeout`).
ACK_SECONDS = 3.0
#: What the wrapper itself needs from Bolt, beside what the listener asks for.
_OWN_ARGS = ("ack", "body", "respond", "context")
_RESPOND_ARGS = ("text", "blocks", "response_type", "attachments")
#: The answer to a slash command still working when Slack stops waiting (never "no longer supported").
STILL_WORKING = ":hourglass_flowing_sand: Still working on it: the answer will appear here in a moment."


class _SignallingAck:
    """Bolt's `ack`, which also resolves `acked` when called (whether the call succeeds or raises). Once the
    wrapper has answered Slack for a listener too slow to ack, the listener's own ack goes to the response_url."""

    def __init__(self, ack: Any, acked: asyncio.Future[None]) -> None:
        self._ack, self._acked = ack, acked
        self.late: Any = None  # `respond`, once Slack has had its answer

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.late is not None:
            if kwargs.get("text") or kwargs.get("blocks"):
                await self.late(**{k: v for k, v in kwargs.items() if k in _RESPOND_ARGS})
            return None
        try:
            return await self._ack(*args, **kwargs)
        finally:
            _resolve(self._acked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ack, name)


def acks_first(listener: Listener) -> Listener:
    """`listener`, returning to Bolt once it has acked. A listener that takes no `ack` (events) is acked first."""
    names = inspect.getfullargspec(listener).args
    acks_itself = "ack" in names

    async def run(**kwargs: Any) -> None:
        ack = kwargs["ack"]
        call = {name: kwargs[name] for name in names}
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()
        signalling = _SignallingAck(ack, acked)
        if acks_itself:
            call["ack"] = signalling
        else:
            await ack()
            acked.set_result(None)
        task: asyncio.Task[Any] = loop.create_task(listener(**call))
        task.add_done_callback(lambda _: _resolve(acked))
        deadline = loop.call_later(ACK_SECONDS, _resolve, acked)  # Slack gives up after 3 s: so does Bolt
        await acked
        deadline.cancel()
        if ack.response is None and task.done():  # ended or failed without acking: Bolt's error handler answers
            task.result()
            return
        if ack.response is None:
            log.warning("%s did not ack within %.0f s; it goes on in the background", run.__name__, ACK_SECONDS)
            # Slack stops waiting now: tell the user it is still working (unanswered, Bolt would say the command
            # is unsupported), and let the listener's answer follow through the response_url.
            signalling.late = kwargs["respond"]
            if kwargs["body"].get("command"):
                await ack(**notice_message(STILL_WORKING).to_ack())
            else:
                await ack()
        # The rest goes on in the background; a failure after the ack is told through the response_url.
        body, respond = kwargs["body"], kwargs["respond"]
        kwargs["context"]["background"].keep(task, functools.partial(_after_ack, body=body, respond=respond))

    # Bolt injects by the names of the listener's parameters (inspect.getfullargspec, which honours __signature__).
    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                  for name in dict.fromkeys([*names, *_OWN_ARGS])]
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = getattr(listener, "__name__", "listener")
    return run


def _resolve(acked: asyncio.Future[None]) -> None:
    if not acked.done():
        acked.set_result(None)


async def _after_ack(error: BaseException, *, body: dict[str, Any], respond: Any) -> None:
    """A listener failed after its ack: as Bolt would, log it and tell the user through the response_url."""
    await handle_error(error if isinstance(error, Exception) else RuntimeError(repr(error)), body, None, respond)
