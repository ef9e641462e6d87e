"""The one retry policy: every wait in podshare goes through `wait_until`."""
from __future__ import annotations

from typing import Callable, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a check that should be tried again."""


class GaveUp(Exception):
    """A wait ran out of time; the message says what was awaited and the last state."""


def wait_until(check: Callable[[], T], *, timeout: float, what: str,
               retry_on: tuple[type[BaseException], ...] = (NotYet,)) -> T:
    """Call `check` until it returns without raising one of `retry_on`.

    Any other exception ends the wait at once: that is how terminal states
    (ErrImagePull, Unschedulable...) fail fast instead of timing out.
    """
    try:
        for attempt in Retrying(stop=stop_after_delay(timeout), retry=retry_if_exception_type(retry_on),
                                wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0)):
            with attempt:
                return check()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise GaveUp(f"timed out after {timeout:g}s waiting for {what}: {last}") from None
    raise AssertionError("unreachable")
