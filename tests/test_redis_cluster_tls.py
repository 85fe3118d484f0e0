"""``rediss+cluster://``: a Redis Cluster whose nodes and bus speak TLS only,
with certificates made for the test by ``openssl``. (The Sentinel TLS form,
``rediss+sentinel://``, is covered by URL parsing only.)"""

import cachu
import pytest
from cachu.decorator import clear_backends
from redis_server import make_ca, openssl_binary, redis_supports_tls
from redis_topology import Cluster, make_node_cert


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    if openssl_binary() is None:
        pytest.skip("openssl CLI not found: cannot make test certificates")
    ok, why = redis_supports_tls()
    if not ok:
        pytest.skip(why)
    d = str(tmp_path_factory.mktemp("tls"))
    ca = make_ca(d, "ca")
    cert = make_node_cert(d, ca)
    other = make_ca(d, "other-ca")
    c = Cluster(tls={"cert": cert["cert"], "key": cert["key"], "ca": ca["cert"]}).start()
    c.other_ca = other["cert"]
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
    url = tls_cluster.url.replace(tls_cluster.tls["ca"], tls_cluster.other_ca)
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
