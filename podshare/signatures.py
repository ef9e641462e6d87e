"""What a failure looked like, so that a known divergence is the divergence it
lists and not any failure of the same claim in the same place (a pod that never
became ready, an unrelated errno).

A known-divergences entry says what was seen with `seen:`, one signature or a
list of them (any may match):

    seen: "send: ENOSYS"                 a probe step failed with this errno
    seen: "evidence beta_acquired: true"  an evidence field had this value
    seen: "message: takes the lock"      the claim's message says these words

A failure of a listed claim that matches none is reported as what it is:
"listed for <signature>, but saw <what the failure shows>".
"""
from __future__ import annotations

import json
from typing import Any, Iterable


def _failed_answers(transcript: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t["result"] for t in transcript if isinstance(t.get("result"), dict) and t["result"].get("ok") is False]


def _field(evidence: dict[str, Any], path: str) -> Any:
    value: Any = evidence
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _same(value: Any, text: str) -> bool:
    """An evidence value against a signature's words (true, 0, ENOSYS, 9p...)."""
    try:
        return value == json.loads(text)
    except ValueError:
        return str(value) == text


def matches(signature: str, evidence: dict[str, Any], transcript: Iterable[dict[str, Any]], message: str) -> bool:
    kind, _, rest = signature.partition(":")
    kind, rest = kind.strip(), rest.strip()
    if kind == "message":
        return rest in message
    if kind.startswith("evidence "):
        value = _field(evidence, kind.removeprefix("evidence ").strip())
        return value is not _MISSING and _same(value, rest)
    return any(a.get("step") == kind and a.get("errno") == rest for a in _failed_answers(transcript))


def any_matches(signatures: str | list[str], evidence: dict[str, Any], transcript: Iterable[dict[str, Any]],
                message: str) -> bool:
    listed = [signatures] if isinstance(signatures, str) else list(signatures)
    transcript = list(transcript)
    return any(matches(s, evidence, transcript, message) for s in listed)


def seen(transcript: Iterable[dict[str, Any]], message: str) -> str:
    """What the failure shows, in a signature's words where a probe step failed,
    else the claim's message."""
    failed = [f"{a['step']}: {a['errno']}" for a in _failed_answers(transcript) if a.get("step") and a.get("errno")]
    return ", ".join(dict.fromkeys(failed)) if failed else f"message: {message}"


def valid(signature: Any) -> bool:
    """A signature is words with a kind before a colon and what was seen after it;
    a list of them, each so. Empty or blank words are refused: `message:` would
    be in every message, so it would match any failure."""
    if isinstance(signature, list):
        return bool(signature) and all(valid(s) for s in signature)
    if not isinstance(signature, str) or ":" not in signature:
        return False
    kind, _, rest = signature.partition(":")
    kind, rest = kind.strip(), rest.strip()
    if kind.startswith("evidence ") and not kind.removeprefix("evidence ").strip():
        return False
    return bool(kind) and bool(rest)
