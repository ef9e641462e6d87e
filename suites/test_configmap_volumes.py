"""ConfigMap and projected volumes: one ConfigMap mounted into both containers
(as a config reloader and its app share one) is one source of truth. After it
is updated through the API, each container sees the new content, whole: the
kubelet writes a new timestamped directory and swaps the `..data` symlink, so
a reader resolving `..data` once never mixes old and new keys. A subPath mount
of it is a copy that never updates (documented; stated as a claim so that a
change is seen), and an inotify watcher sees the swap, not a write to the file
it watches. Broken in the wild: subPath-mounted ConfigMaps that never update,
reloaders that watch a file and see only IN_DELETE_SELF, sandboxes whose view
of a host directory is cached.

One update serves every claim here: followers in both containers on both
mounts and an inotify watcher start first, then the harness updates the
ConfigMap once (every value's "generation 1" becomes "generation 2")."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pytest

from podshare.evidence import describe, failed_with, stranger_sees

pytestmark = [pytest.mark.volume, pytest.mark.manifest("patterns/configmap-updates.yaml"),
              pytest.mark.volume_kind("configMap")]

OLD, NEW = "generation 1", "generation 2"
MOUNTS = {"configMap": "/config", "projected": "/projected"}
PINNED = "/pinned/settings.conf"  # alpha's subPath mount of the key settings.conf
# A key not mounted by subPath too: that mount keeps the old version's file alive
# (it is the same inode), so a watch on it would never end.
WATCHED_FILE = "/config/feature-flags"
WATCH_GRACE_S = 3.0
START_SLACK_S = 30.0  # what the helpers' start-up before the update may take on a loaded node
CONTENT_EVENTS = {"IN_MODIFY", "IN_CLOSE_WRITE", "IN_DELETE_SELF", "IN_IGNORED"}  # a file written or removed


@dataclass
class SettingsUpdate:
    """What each container saw of the one update."""
    kubelet: dict
    followed: dict[tuple[str, str], dict] = field(default_factory=dict)  # (container, mount) -> follow-keys
    delays_s: dict[tuple[str, str], float | None] = field(default_factory=dict)
    watched: dict = field(default_factory=dict)
    pinned_before: dict = field(default_factory=dict)
    pinned_after: dict = field(default_factory=dict)
    config_after: dict = field(default_factory=dict)  # alpha's /config once the pinned copy is read again
    resource_version: str | None = None
    api_call_s: float = 0.0
    bound_s: float = 0.0  # update_wait_s: how long after the API's answer the update may take


def generations(keys: dict[str, str]) -> dict[str, str | None]:
    """Each key's generation, as its value names it."""
    return {k: (m[0] if (m := re.search(r"generation \d+", v)) else None) for k, v in keys.items()}


def in_words(keys: dict[str, str]) -> str:
    """A snapshot's generations for a message: "settings.conf generation 2, ..."."""
    return ", ".join(f"{k} {g or 'without a generation'}" for k, g in generations(keys).items()) or "no keys"


def events_in_words(events: list[dict]) -> str:
    return ", ".join(f"{e['name'] or 'the file'} {'+'.join(e['mask'])}" for e in events) or "none"


def update_wait_s(kubelet: dict) -> float:
    """How long an update may take to reach a volume: the kubelet re-syncs a pod
    every syncFrequency plus up to half of it in jitter; with it unknown, the
    default (1m). The rest is the machine's slack."""
    return 1.5 * (kubelet.get("sync_frequency_s") or 60.0) + 15.0


@pytest.fixture(scope="module")
def settings_pod(pattern_pods):
    return pattern_pods["Pod/podshare-settings"]


@pytest.fixture(scope="module")
def settings_update(settings_pod, pattern_pods, update_configmap, kubelet_sync_settings) -> SettingsUpdate:
    """The one update the claims observe (see the module's docstring)."""
    alpha, beta = settings_pod.container("alpha"), settings_pod.container("beta")
    seen = SettingsUpdate(kubelet=kubelet_sync_settings(settings_pod.node))
    seen.bound_s = wait = update_wait_s(seen.kubelet)
    # The helpers start one after another before the update, so each follows for longer than the
    # bound, which is judged on the delay counted from the API's answer (a follower's own clock
    # starts before the update: on a loaded node its start-up ate into the bound).
    follow = wait + START_SLACK_S
    seen.pinned_before = alpha.run("read", path=PINNED, text=True)
    # Each follower's clock starts at its ready line, so its ready time is taken as that line
    # arrives: taken after the others had started too, the time they took to start counted as
    # the first followers' delay (alpha's: 28 s more than beta's, on gVisor in CI on 2026-12-04).
    followers, ready_at = {}, {}
    for c in (alpha, beta):
        for kind, path in MOUNTS.items():
            followers[(c.name, kind)] = c.start("follow-keys", answer_within=follow + 10, path=path, until=NEW,
                                                timeout=follow).wait_ready()
            ready_at[(c.name, kind)] = time.monotonic()
    watcher = alpha.start("watch-swap", answer_within=follow + 10, path=MOUNTS["configMap"], file=[WATCHED_FILE],
                          quiet=[PINNED], timeout=follow).wait_ready()
    old = pattern_pods["ConfigMap/podshare-settings"].data
    called = time.monotonic()
    updated = update_configmap("podshare-settings", {k: v.replace(OLD, NEW) for k, v in old.items()})
    # Delays count from the API's answer: the update is stored by then (the call's own time is evidence).
    updated_at = time.monotonic()
    seen.api_call_s, seen.resource_version = round(updated_at - called, 3), updated.metadata.resource_version
    for key, follower in followers.items():
        seen.followed[key] = answer = follower.result()
        new = next((s for s in answer.get("snapshots", []) if set(generations(s["keys"]).values()) == {NEW}), None)
        seen.delays_s[key] = round(new["first_seen_s"] - (updated_at - ready_at[key]), 3) if new else None
    seen.watched = watcher.result_within(WATCH_GRACE_S)  # its events come with the swap the followers saw
    seen.pinned_after = alpha.run("read", path=PINNED, text=True)
    seen.config_after = alpha.run("read-keys", path=MOUNTS["configMap"])
    return seen


def mixed(snapshots: list[dict]) -> list[dict]:
    """The snapshots whose keys are of different generations."""
    return [s for s in snapshots if len(set(generations(s["keys"]).values())) > 1]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.volume_kind(k)) for k in MOUNTS])
def test_update_reaches_both_containers_whole(settings_update, stranger, kind, evidence):
    """After the ConfigMap is updated through the API, alpha and beta each see
    the new content in the volume (a configMap volume, or a projected volume
    with the ConfigMap as its source), within the kubelet's sync period; no read
    of every key through one resolution of ..data mixes old and new keys. Each
    container's delay is measured from the API's answer; the kubelet settings
    that bound it are named. The stranger pod has none of the keys."""
    path = MOUNTS[kind]
    answers = {c: settings_update.followed[(c, kind)] for c in ("alpha", "beta")}
    foreign = stranger.run("read-keys", path=path)
    evidence.update(volume=kind, path=path, kubelet=settings_update.kubelet, api_call_s=settings_update.api_call_s,
                    resource_version=settings_update.resource_version, stranger=foreign,
                    delay_s={c: settings_update.delays_s[(c, kind)] for c in answers},
                    **{c: {k: a.get(k) for k in ("ok", "errno", "step", "detail", "reads", "races", "snapshots",
                                                 "waited_s")} for c, a in answers.items()})
    for container, answer in answers.items():
        snapshots = answer.get("snapshots") or []
        assert snapshots, f"{container} could not read the keys of the {kind} volume at {path}: {describe(answer)}"
        assert set(generations(snapshots[0]["keys"]).values()) == {OLD}, (
            f"{container} did not start from the old content in {path}: it read {in_words(snapshots[0]['keys'])}, "
            "so seeing the new one would not show the update arrived")
        assert not mixed(snapshots), (
            f"{container} read old and new keys together through one resolution of ..data in {path}: "
            + "; ".join(in_words(s["keys"]) for s in mixed(snapshots)))
        seen_new = any(s["keys"] and set(generations(s["keys"]).values()) == {NEW} for s in snapshots)
        assert answer["ok"] and seen_new, (
            f"{container} never saw the update in the {kind} volume at {path}: {describe(answer)} after "
            f"{answer.get('waited_s')} s of {answer.get('reads')} reads (kubelet syncFrequency "
            f"{settings_update.kubelet.get('syncFrequency', 'unknown')})")
        delay, bound = settings_update.delays_s[(container, kind)], settings_update.bound_s
        assert delay is not None and delay <= bound, (
            f"{container} saw the update in the {kind} volume at {path} {delay} s after the API's answer, past "
            f"the bound of {bound:g} s (1.5 x the kubelet's syncFrequency "
            f"{settings_update.kubelet.get('syncFrequency', 'unknown')}, its jitter included, + 15 s)")
    assert not foreign.get("ok"), stranger_sees(f"the stranger pod reads the ConfigMap's keys at {path}", foreign)


def test_subpath_copy_keeps_the_old_content(settings_update, evidence):
    """A subPath mount of a ConfigMap key is a copy made when the container
    started: once the update has reached the same container's full mount, the
    subPath file still holds the old content (Kubernetes documents that such a
    mount receives no updates; a change here is a change of that behaviour)."""
    before, after, full = settings_update.pinned_before, settings_update.pinned_after, settings_update.config_after
    evidence.update(subpath=PINNED, before=before, after=after, full_mount_after=full,
                    kubelet=settings_update.kubelet)
    assert before.get("ok"), f"alpha could not read its subPath copy {PINNED}: {describe(before)}"
    assert OLD in before["text"], f"alpha's subPath copy {PINNED} held {before['text']!r} before the update"
    assert full.get("ok") and set(generations(full["keys"]).values()) == {NEW}, (
        "the update had not reached alpha's full mount of the ConfigMap, so the subPath copy's content says "
        f"nothing: {describe(full) if not full.get('ok') else in_words(full['keys'])}")
    assert after.get("ok"), f"alpha could not read its subPath copy {PINNED} after the update: {describe(after)}"
    assert OLD in after["text"], (
        f"the subPath copy {PINNED} was updated ({after['text'].strip()!r}): subPath mounts of a ConfigMap "
        "are documented never to update")


def test_inotify_on_the_mount_sees_the_data_swap(settings_update, evidence):
    """An inotify watcher in alpha on the ConfigMap's mount sees the update as
    the kubelet makes it: an event naming ..data on the directory (the swap),
    and, on a key's file it watches through its symlink, the watch ended
    (IN_DELETE_SELF, IN_IGNORED: the old version removed, never written). A
    watch on the subPath copy, which the update does not touch, sees its file
    neither written nor removed (IN_ATTRIB only: the old version's link count
    and the kubelet's fsGroup walk)."""
    watched = settings_update.watched
    events = watched.get("events") or {}
    directory, file_events, quiet = (events.get(p, []) for p in (MOUNTS["configMap"], WATCHED_FILE, PINNED))
    evidence.update(watcher=watched, directory_events=directory, file_events=file_events, subpath_events=quiet,
                    file_masks=sorted({m for e in file_events for m in e["mask"]}),
                    data_masks=sorted({m for e in directory if e["name"] == "..data" for m in e["mask"]}))
    assert watched.get("ok") or failed_with(watched, "ETIMEDOUT"), (
        f"alpha could not watch {MOUNTS['configMap']} with inotify: {describe(watched)}")
    assert any(e["name"] == "..data" for e in directory), (
        f"alpha's inotify on {MOUNTS['configMap']} saw no event naming ..data for the update: "
        f"{describe(watched)}; the directory's events: {events_in_words(directory)}")
    assert any("IN_IGNORED" in e["mask"] for e in file_events), (
        f"alpha's watch on {WATCHED_FILE} did not end when the update removed the old version: its events "
        f"were {events_in_words(file_events)}")
    touched = [e for e in quiet if CONTENT_EVENTS & set(e["mask"])]
    assert not touched, (f"a watch on the subPath copy {PINNED}, which the update does not touch, saw it written "
                         f"or removed: {events_in_words(touched)}")
