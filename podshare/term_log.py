"""The pod's term log while it terminates: each agent started with PODSHARE_TERM_LOG
notes its SIGTERM and its exit, one JSON line each on the pod's boot clock, in a
shared volume (probes/agent.py). A claim about deletion reads it from the
container that stops last, until the events it waits for are in or that
container's channel ends."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .errors import KubeError

Event = tuple[str, str]  # (container, "sigterm" | "exit")


def events(text: str) -> dict[Event, int]:
    """(container, event) -> boottime_ns, each agent's last incarnation's."""
    found = {}
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        found[(e["container"], e["event"])] = e["boottime_ns"]
    return found


@dataclass
class TermLogRead:
    """What the reads came to: the last answer that read the log, the events in it,
    how the reader's channel ended (None while it answered) and how many reads answered."""
    last: dict | None = None
    ended: str | None = None
    reads: int = 0
    events: dict[Event, int] = field(default_factory=dict)

    def events_ms(self) -> dict[str, float]:
        """The events in their order, on the boot clock in ms: the evidence."""
        return {f"{c} {e}": round(t / 1e6, 1) for (c, e), t in sorted(self.events.items(), key=lambda i: i[1])}


def read_while_terminating(reader, path: str, awaited: set[Event], within: float,
                           settle: float = 0.0) -> TermLogRead:
    """Read the term log from `reader` (a channel opened before the deletion: no new
    exec into a terminating pod) every 0.2 s until it holds every awaited event, the
    reader stops, or `within` seconds pass; `settle` seconds after the awaited events,
    one more read, for a note that lands with them."""
    seen = TermLogRead()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            answer = reader.run("read", path=path, text=True)
        except KubeError as exc:  # the reader has stopped: what was read last is the record
            seen.ended = str(exc)
            break
        seen.reads += 1
        if answer.get("ok"):
            seen.last = answer
            if awaited <= set(events(answer["text"])):
                if settle:
                    time.sleep(settle)
                    try:
                        again = reader.run("read", path=path, text=True)
                        seen.last = again if again.get("ok") else seen.last
                    except KubeError as exc:
                        seen.ended = str(exc)
                break
        time.sleep(0.2)
    if seen.last and seen.last.get("ok"):
        seen.events = events(seen.last["text"])
    return seen
