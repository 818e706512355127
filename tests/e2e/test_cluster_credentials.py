"""A cluster's API-server credentials are fetched once, however many runs miss the cache at once.

Before, every concurrent miss made its own listClusterUserCredential POST (5 clusters, a burst of
runs: 8-9 POSTs): ARM write-bucket budget spent on nothing.
"""

from __future__ import annotations

import threading

from tests.conftest import CLUSTER_ID, NAMESPACE


def test_concurrent_misses_fetch_the_credentials_once(arm, kube, engine, binding):
    arm.log.clear()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            assert engine.kube.namespace_exists(binding.cluster, NAMESPACE)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    posts = arm.log.matching("POST", "listClusterUserCredential")
    assert len(posts) == 1, [r.path for r in posts]
    assert CLUSTER_ID.split("/")[-1] in posts[0].path
