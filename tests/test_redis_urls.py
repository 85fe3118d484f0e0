"""The cluster and Sentinel forms of ``redis_url`` at ``configure``: good
ones are accepted without connecting, malformed ones are a ValueError that
names the problem and never shows the password."""

import cachu
import pytest

GOOD = [
    "redis+cluster://127.0.0.1:7000",
    "redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002",
    "redis+cluster://h1:7000,h2:7001/?protocol=3",
    "rediss+cluster://h1:7000?ssl_cert_reqs=none",
    "rediss+cluster://h1:7000?ssl_check_hostname=false",
    "redis+sentinel://s1:26379,s2:26380/mymaster",
    "redis+sentinel://:pw@s1,s2/mymaster/2",
    "redis+sentinel://s1/mymaster?sentinel_password=spw",
    "rediss+sentinel://s1:26379/mymaster/0?ssl_cert_reqs=none",
]

BAD = [
    ("redis+cluster://", "host"),
    ("redis+cluster://h:1,,h:2", "host"),
    ("redis+cluster://h:1/3", "database 0"),
    ("redis+cluster://h:99999", "invalid redis_url"),
    ("redis+cluster://h:1?db=2", "database 0"),
    ("rediss+cluster://h:1?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs"),
    ("redis+sentinel://s1:26379", "service_name"),
    ("redis+sentinel://s1:26379/", "service_name"),
    ("redis+sentinel://s1:26379/svc/x", "database number"),
    ("redis+sentinel://s1:26379/svc/1/2", "service_name"),
    ("redis+clusters://h:1", "scheme"),
    ("http+cluster://h:1", "scheme"),
]


@pytest.mark.parametrize("url", GOOD)
def test_good_urls_are_accepted_without_connecting(url, pkg):
    cachu.configure(backend="redis", redis_url=url, package=pkg)
    assert cachu.get_config(pkg).redis_url == url


@pytest.mark.parametrize(("url", "why"), BAD)
def test_malformed_urls_are_a_value_error_at_configure(url, why, pkg):
    with pytest.raises(ValueError, match="redis_url") as e:
        cachu.configure(backend="redis", redis_url=url, package=pkg)
    assert why in str(e.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://user:hunter2@h:1,h:x",
        "redis+cluster://user:hunter2@h:1/5",
        "redis+sentinel://user:hunter2@s1/svc/x",
        "redis+sentinel://s1/svc/x?sentinel_password=hunter2",
        "rediss+sentinel://:hunter2@s1/svc?ssl_cert_reqs=maybe",
        "redis://user:hunter2@h:99999/0",
        "redis://user:hunter2@h/abc",
    ],
)
def test_no_password_in_the_message(url, pkg):
    with pytest.raises(ValueError) as e:
        cachu.configure(backend="redis", redis_url=url, package=pkg)
    assert "hunter2" not in str(e.value)
    assert "***" in str(e.value)
