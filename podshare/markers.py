"""The claim markers (-m selects by them; a check's categories are its
claim markers) and the markers the suites use to say how a claim runs."""

MARKERS = {
    "identity": "hostname and namespace identity of the pod's containers",
    "network": "localhost and the shared port space",
    "ipc": "System V semaphores, shared memory and message queues",
    "posix": "POSIX shared memory, semaphores, message queues and /dev/shm",
    "volume": "emptyDir volumes shared between containers",
    "lifecycle": "container restart, restart of all containers and pod recreation",
    "memory": "who pays for shared memory (the writer), what a writer meets at its memory limit (the OOM "
              "killer, not ENOSPC), how big a Memory emptyDir is",
    "pattern": "multi-container patterns: reverse proxy, log watcher, data loader, native sidecar",
    "perf": "how fast the shared mechanisms are between two containers (figures, no threshold)",
    "userns": "user namespaces (hostUsers: false): one per pod, its id maps, emptyDir ownership",
}
OTHER_MARKERS = {
    "manifest": "manifest(path): the pattern manifest a module's claims use; its pods start with the probe pod",
    "user_namespaced": "a claim about pods with hostUsers: false, collected only for them (--user-namespaces on, both)",
    "volume_per_module": "the module's claims share one pass per volume kind (its own module-scoped volume fixture)",
    "pvc_only": "a volume claim about PersistentVolumeClaims only (run once per --storage-class, not on emptyDirs)",
    "volume_kind": "volume_kind(kind): the volume kind of a claim that is not run once per kind (image, "
                   "configMap, projected, a subPath of an emptyDir), for results.json's `volume`",
    "needs": "needs(feature): what the claim needs of its node (podshare.node_features); not applicable where it lacks it",
}
