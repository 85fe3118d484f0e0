"""Fixtures for the Redis Cluster and Sentinel tests (loaded by conftest).

``cluster`` and ``sentinels`` are started once per session (each takes a few
seconds) and must be left healthy: a test that kills, stops or reshards
nodes makes its own with ``own_cluster()`` / ``own_sentinels()``.
"""

import pytest
from redis_topology import Cluster, Sentinels


@pytest.fixture(scope="session")
def cluster_session():
    c = Cluster().start()
    yield c
    c.close()


@pytest.fixture
def cluster(cluster_session):
    """The session's 3-master + 3-replica cluster, flushed."""
    cluster_session.flush()
    yield cluster_session
    from cachu.decorator import clear_backends

    clear_backends()


@pytest.fixture(scope="session")
def sentinels_session():
    s = Sentinels().start()
    yield s
    s.close()


@pytest.fixture
def sentinels(sentinels_session):
    """The session's master + replica + 3 sentinels, flushed."""
    c = sentinels_session.current_master().client()
    c.flushall()
    c.close()
    yield sentinels_session
    from cachu.decorator import clear_backends

    clear_backends()


@pytest.fixture
def own_cluster():
    """A cluster of the test's own (it may kill nodes): ``own_cluster()``,
    or ``own_cluster(node_timeout_ms=...)`` (see ``Cluster``)."""
    from cachu.decorator import clear_backends

    made = []

    def make(**options):
        c = Cluster(**options).start()
        made.append(c)
        return c

    yield make
    clear_backends()
    for c in made:
        c.close()


@pytest.fixture
def own_sentinels():
    """A Sentinel set of the test's own: ``own_sentinels()``, or
    ``own_sentinels(tls=...)`` (see ``Sentinels``)."""
    from cachu.decorator import clear_backends

    made = []

    def make(**options):
        s = Sentinels(**options).start()
        made.append(s)
        return s

    yield make
    clear_backends()
    for s in made:
        s.close()
