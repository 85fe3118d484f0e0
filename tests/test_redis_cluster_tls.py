"""``rediss+cluster://``: a Redis Cluster whose nodes and bus speak TLS only,
with certificates made for the test by ``openssl``. (The Sentinel form,
``rediss+sentinel://``, is in ``test_redis_sentinel_tls.py``.)"""

import cachu
import pytest
from cachu.decorator import clear_backends
from redis_server import tls_material
from redis_topology import Cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    tls = tls_material(str(tmp_path_factory.mktemp("tls")))
    c = Cluster(tls=tls).start()
    yield c
    c.close()


def test_calls_cache_on_a_tls_cluster(tls_cluster, pkg):
    cachu.configure(redis_url=tls_cluster.url, package=pkg, fail_open=False)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(d):
        runs.append(1)
        return d

    try:
        for i in range(30):
            assert f({"i": i}) == {"i": i}
            assert f({"i": i}) == {"i": i}
        assert len(runs) == 30
        inst = cachu.get_backend("redis", pkg, ttl=300)
        assert inst.count() == 30
        assert inst.clear() == 30
        client = cachu.get_redis_client(package=pkg)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        clear_backends(pkg)


def test_an_untrusted_certificate_is_an_outage(tls_cluster, pkg):
    url = tls_cluster.url.replace(tls_cluster.tls["ca"], tls_cluster.tls["other_ca"])
    cachu.configure(redis_url=url, package=pkg, fail_open=False, redis_socket_timeout=2.0)

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        return x

    try:
        with pytest.raises(cachu.BackendUnavailableError):
            f(1)
        cachu.configure(package=pkg, fail_open=True)
        assert f(1) == 1
    finally:
        clear_backends(pkg)
