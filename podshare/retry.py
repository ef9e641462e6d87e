"""The one retry policy: every wait in podshare goes through `wait_until`."""
from __future__ import annotations

from typing import Callable, TypeVar

from tenacity import (RetryCallState, RetryError, Retrying, retry_if_exception, retry_if_exception_type,
                      stop_after_delay, wait_exponential)

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a check that should be tried again."""


class GaveUp(Exception):
    """A wait ran out of time; the message says what was awaited and the last state."""


MAX_RETRY_AFTER = 10.0
_backoff = wait_exponential(multiplier=0.05, min=0.05, max=1.0)


def _retryable(exc: BaseException) -> bool:
    """An API error worth another try (KubeError.retryable: 429, 5xx, no answer)."""
    return bool(getattr(exc, "retryable", False))


def _wait(state: RetryCallState) -> float:
    """Exponential backoff, or the server's Retry-After when it asked for longer."""
    exc = state.outcome.exception() if state.outcome else None
    asked = getattr(exc, "retry_after", None) or 0.0
    return max(_backoff(state), min(asked, MAX_RETRY_AFTER))


def wait_until(check: Callable[[], T], *, timeout: float, what: str,
               retry_on: tuple[type[BaseException], ...] = (NotYet,)) -> T:
    """Call `check` until it returns without raising one of `retry_on`.

    A retryable API error (throttling, a 5xx, an unreachable server) is tried
    again too, after its Retry-After if it gave one. Any other exception ends
    the wait at once: that is how terminal states (ErrImagePull,
    Unschedulable...) and refusals (403, 404) fail fast instead of timing out.
    """
    try:
        for attempt in Retrying(stop=stop_after_delay(timeout),
                                retry=retry_if_exception_type(retry_on) | retry_if_exception(_retryable),
                                wait=_wait):
            with attempt:
                return check()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise GaveUp(f"timed out after {timeout:g}s waiting for {what}: {last}") from None
    raise AssertionError("unreachable")
