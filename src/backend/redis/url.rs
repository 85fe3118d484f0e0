//! Redis URLs, as redis-py reads them, plus the cluster and Sentinel forms:
//!
//! - `redis://[[user]:password@]host[:port][/db]` (or `?db=N`, which wins
//!   over the path, as in redis-py); `unix:///path/to.sock[?db=N]
//!   [&username=u][&password=p]`;
//! - `rediss://...` for TLS, with the query parameters `ssl_ca_certs` (PEM
//!   file of trusted CAs, instead of the system's roots), `ssl_certfile` /
//!   `ssl_keyfile` (client certificate), `ssl_cert_reqs=none` (no
//!   certificate verification) and `ssl_check_hostname=false` (no hostname
//!   verification);
//! - `redis+cluster://[user:pass@]host:port[,host:port...][?opts]` (and
//!   `rediss+cluster://`): a Redis Cluster reached through any of the seed
//!   nodes, database 0 only;
//! - `redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db][?opts]`
//!   (and `rediss+sentinel://`, TLS to the data nodes): the master that the
//!   sentinels name `service`. The credentials are the data nodes'; the
//!   sentinels' own, if they need any, are the query parameters
//!   `sentinel_username` and `sentinel_password`. A sentinel's port defaults
//!   to 26379.
//!
//! `protocol=3` selects RESP3. Other query parameters are ignored.

use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates,
    TlsMode,
};

use super::topology::{SentinelMaster, Topology};
use super::{redact, RedisOptions};
use crate::error::{Error, Result};

/// Waits between two attempts of a cluster request the crate retries
/// (`TRYAGAIN` while a slot migrates, `CLUSTERDOWN` while a failover
/// settles): short, since a cache call would rather miss than wait.
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (5, 50);
/// Attempts a cluster request may make beyond the retries of a broken
/// connection, for what a topology change needs: one `MOVED` and one `ASK`,
/// and waits out a slot whose keys are half moved (`TRYAGAIN` for a script
/// touching a value and its lock; at most about half a second of waits).
/// A timeout is never among them (see `topology::NodeConn`).
const CLUSTER_TOPOLOGY_RETRIES: u32 = 12;

/// The servers `url` names, ready to connect (nothing is connected here),
/// and a description of them without credentials, for messages.
pub(super) fn parse(url: &str, options: &RedisOptions) -> Result<(Topology, String)> {
    let shown = redact(url);
    let bad = |why: &str| Error::BadConfig(format!("invalid redis_url {shown:?}: {why}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(
            "expected redis://, rediss:// or unix:// and a valid URL",
        ));
    };
    match scheme.split_once('+') {
        Some((base @ ("redis" | "rediss"), "cluster")) => cluster(base, rest, options, &bad),
        Some((base @ ("redis" | "rediss"), "sentinel")) => sentinel(base, rest, options, &bad),
        Some(_) => Err(bad(
            "expected redis://, rediss://, unix://, redis+cluster://, rediss+cluster://, \
             redis+sentinel:// or rediss+sentinel://",
        )),
        None => {
            let node = node(url, &bad)?;
            let target = node.target.clone();
            Ok((Topology::Single(node.client(&bad)?), target))
        }
    }
}

/// TLS settings of a `rediss` URL beyond what [`ConnectionInfo`] holds.
struct Tls {
    certs: Option<TlsCertificates>,
    check_hostname: bool,
}

/// One server's connection settings, from a single-node URL.
struct Node {
    info: ConnectionInfo,
    tls: Option<Tls>,
    target: String,
}

impl Node {
    fn client(self, bad: &dyn Fn(&str) -> Error) -> Result<Client> {
        let Some(tls) = self.tls else {
            return Client::open(self.info).map_err(|e| bad(&e.to_string()));
        };
        let client = match tls.certs {
            Some(certs) => {
                Client::build_with_tls(self.info, certs).map_err(|e| bad(&e.to_string()))?
            }
            None => Client::open(self.info).map_err(|e| bad(&e.to_string()))?,
        };
        if tls.check_hostname {
            return Ok(client);
        }
        let info = client.get_connection_info().clone();
        let mut addr = info.addr().clone();
        addr.set_danger_accept_invalid_hostnames(true);
        Client::open(info.set_addr(addr)).map_err(|e| bad(&e.to_string()))
    }
}

/// A single-node URL.
fn node(url: &str, bad: &dyn Fn(&str) -> Error) -> Result<Node> {
    let parsed = redis::parse_redis_url(url)
        .ok_or_else(|| bad("expected redis://, rediss:// or unix:// and a valid URL"))?;
    let query: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let unix = parsed.scheme().ends_with("unix");
    let mut info: ConnectionInfo = parsed
        .into_connection_info()
        .map_err(|e| bad(&e.to_string()))?;

    let mut settings = info
        .redis_settings()
        .clone()
        .set_lib_name("cachu", env!("CARGO_PKG_VERSION"));
    // As in redis-py, a `db` query parameter wins over the path.
    if let Some(db) = param("db") {
        let db = db
            .parse::<i64>()
            .map_err(|_| bad("db must be an integer"))?;
        settings = settings.set_db(db);
    }
    if unix {
        // redis-py's names for the credentials of a socket URL.
        if let Some(user) = param("username") {
            settings = settings.set_username(user);
        }
        if let Some(password) = param("password") {
            settings = settings.set_password(password);
        }
    }
    if settings.db() < 0 {
        return Err(bad("db must not be negative"));
    }
    let db = settings.db();
    info = info.set_redis_settings(settings);

    let target = match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{}:{port}/{db}", bracket(host)),
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{}:{port}/{db}", bracket(host))
        }
        ConnectionAddr::Unix(path) => format!("unix://{}?db={db}", path.display()),
        _ => redact(url),
    };

    let ConnectionAddr::TcpTls {
        host,
        port,
        insecure,
        ..
    } = info.addr().clone()
    else {
        return Ok(Node {
            info,
            tls: None,
            target,
        });
    };
    let no_verify = match param("ssl_cert_reqs").map(str::to_ascii_lowercase) {
        None => false,
        Some(r) => match r.as_str() {
            "none" | "cert_none" => true,
            "optional" | "cert_optional" | "required" | "cert_required" => false,
            _ => return Err(bad("ssl_cert_reqs must be none, optional or required")),
        },
    };
    let check_hostname = match param("ssl_check_hostname").map(str::to_ascii_lowercase) {
        None => true,
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("ssl_check_hostname must be true or false")),
        },
    };
    info = info.set_addr(ConnectionAddr::TcpTls {
        host,
        port,
        insecure: insecure || no_verify,
        tls_params: None,
    });
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| bad(&format!("cannot read {what} {path:?}: {e}")))
    };
    let root_cert = param("ssl_ca_certs")
        .map(|p| read("ssl_ca_certs", p))
        .transpose()?;
    let client_tls = match (param("ssl_certfile"), param("ssl_keyfile")) {
        (Some(cert), key) => Some(ClientTlsConfig {
            client_cert: read("ssl_certfile", cert)?,
            // redis-py allows the key inside the certificate file.
            client_key: read("ssl_keyfile", key.unwrap_or(cert))?,
        }),
        (None, Some(_)) => return Err(bad("ssl_keyfile needs ssl_certfile")),
        (None, None) => None,
    };
    // Pick rustls's crypto provider ourselves, so that connecting never
    // depends on which providers other crates enable. An already installed
    // default is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
        client_tls,
        root_cert,
    });
    Ok(Node {
        info,
        tls: Some(Tls {
            certs,
            check_hostname,
        }),
        target,
    })
}

/// The parts of a multi-host URL (after `scheme://`): the user info, the
/// hosts, the path and the query (with its `?`).
struct MultiHost<'a> {
    userinfo: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: &'a str,
    query: &'a str,
}

fn split_hosts<'a>(rest: &'a str, bad: &dyn Fn(&str) -> Error) -> Result<MultiHost<'a>> {
    let rest = rest.split('#').next().unwrap_or("");
    let (before_query, query) = match rest.find('?') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(bad("expected host:port[,host:port...] after ://"));
    }
    Ok(MultiHost {
        userinfo,
        hosts,
        path,
        query,
    })
}

fn with_userinfo(userinfo: Option<&str>) -> String {
    userinfo.map(|u| format!("{u}@")).unwrap_or_default()
}

/// `redis+cluster://` and `rediss+cluster://`.
fn cluster(
    base: &str,
    rest: &str,
    options: &RedisOptions,
    bad: &dyn Fn(&str) -> Error,
) -> Result<(Topology, String)> {
    let parts = split_hosts(rest, bad)?;
    if !matches!(parts.path, "" | "/" | "/0") {
        return Err(bad("a cluster has database 0 only (no /db path)"));
    }
    let auth = with_userinfo(parts.userinfo);
    let mut seeds = Vec::with_capacity(parts.hosts.len());
    let mut tls = None;
    for host in &parts.hosts {
        let node = node(&format!("{base}://{auth}{host}/0{}", parts.query), bad)?;
        if node.info.redis_settings().db() != 0 {
            return Err(bad("a cluster has database 0 only"));
        }
        if let ConnectionAddr::Unix(_) = node.info.addr() {
            return Err(bad("cluster nodes are host:port"));
        }
        tls = node.tls;
        seeds.push(node.info);
    }
    let target = format!(
        "{base}+cluster://{}",
        seeds
            .iter()
            .map(|i| match i.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => format!("{}:{p}", bracket(h)),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    let retries = options.retry_count.saturating_add(CLUSTER_TOPOLOGY_RETRIES);
    let mut builder = ClusterClientBuilder::new(seeds)
        .retries(retries)
        .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
        .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1);
    if !options.socket_timeout.is_zero() {
        builder = builder
            .connection_timeout(options.socket_timeout)
            .response_timeout(options.socket_timeout);
    }
    if let Some(tls) = tls {
        if let Some(certs) = tls.certs {
            builder = builder.certs(certs);
        }
        if !tls.check_hostname {
            builder = builder.danger_accept_invalid_hostnames(true);
        }
    }
    let client = builder.build().map_err(|e| bad(&e.to_string()))?;
    Ok((Topology::Cluster(Box::new(client)), target))
}

/// For a cluster URL (checked by [`parse`] already), a client for each seed
/// node, with the cluster's credentials and TLS settings: the near cache's
/// tracking connects to every master from these (see `near`). Empty for
/// any other URL.
pub(super) fn cluster_seeds(url: &str) -> Result<Vec<Client>> {
    let shown = redact(url);
    let bad = |why: &str| Error::BadConfig(format!("invalid redis_url {shown:?}: {why}"));
    let Some((base @ ("redis" | "rediss"), rest)) = url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((scheme.strip_suffix("+cluster")?, rest)))
    else {
        return Ok(Vec::new());
    };
    let parts = split_hosts(rest, &bad)?;
    let auth = with_userinfo(parts.userinfo);
    parts
        .hosts
        .iter()
        .map(|host| node(&format!("{base}://{auth}{host}/0{}", parts.query), &bad)?.client(&bad))
        .collect()
}

/// `redis+sentinel://` and `rediss+sentinel://`.
fn sentinel(
    base: &str,
    rest: &str,
    options: &RedisOptions,
    bad: &dyn Fn(&str) -> Error,
) -> Result<(Topology, String)> {
    let parts = split_hosts(rest, bad)?;
    let mut path = parts.path.trim_start_matches('/').split('/');
    let service = path.next().unwrap_or("").to_owned();
    if service.is_empty() {
        return Err(bad("expected /service_name after the sentinels"));
    }
    let db = path.next().filter(|d| !d.is_empty()).unwrap_or("0");
    if path.next().is_some_and(|p| !p.is_empty()) {
        return Err(bad("expected /service_name[/db] after the sentinels"));
    }
    // The data nodes' settings, read as a single-node URL would be.
    let auth = with_userinfo(parts.userinfo);
    let data = node(
        &format!("{base}://{auth}sentinel-master/{db}{}", parts.query),
        bad,
    )?;
    let settings = data.info.redis_settings().clone();

    let mut sentinels = Vec::with_capacity(parts.hosts.len());
    let mut shown = Vec::with_capacity(parts.hosts.len());
    for host in &parts.hosts {
        let url = if host.ends_with(']') || !host.contains(':') {
            format!("redis://{host}:26379")
        } else {
            format!("redis://{host}")
        };
        let info = node(&url, bad)?.info;
        shown.push(match info.addr() {
            ConnectionAddr::Tcp(h, p) => format!("{}:{p}", bracket(h)),
            other => other.to_string(),
        });
        sentinels.push(info.addr().clone());
    }
    let sentinel_param = |name: &str| {
        let query = parts.query.trim_start_matches('?');
        url_query_value(query, name)
    };

    let sentinel_user = sentinel_param("sentinel_username");
    let sentinel_password = sentinel_param("sentinel_password");
    let tls = match data.tls {
        None => None,
        Some(tls) => {
            let insecure = matches!(
                data.info.addr(),
                ConnectionAddr::TcpTls { insecure: true, .. }
            );
            if !tls.check_hostname && !insecure {
                return Err(bad(
                    "ssl_check_hostname=false is not supported with Sentinel (use ssl_cert_reqs=none)",
                ));
            }
            let mode = if insecure {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            };
            Some((mode, tls.certs))
        }
    };
    let db = settings.db();
    let target = format!("{base}+sentinel://{}/{service}/{db}", shown.join(","));
    let settings_for_make = settings.clone();
    let make = move || {
        let settings = &settings_for_make;
        let mut builder =
            SentinelClientBuilder::new(sentinels.clone(), &service, SentinelServerType::Master)?
                .set_client_to_redis_db(settings.db())
                .set_client_to_redis_protocol(settings.protocol());
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(user) = &sentinel_user {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = &sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some((mode, certs)) = &tls {
            builder = builder.set_client_to_redis_tls_mode(*mode);
            if let Some(certs) = certs {
                builder = builder.set_client_to_redis_certificates(certs.clone());
            }
        }
        builder.build()
    };
    // Asking the sentinels takes a few round trips: a sentinel's answer,
    // then the master's to check its role.
    let lookup_timeout = (!options.socket_timeout.is_zero()).then(|| options.socket_timeout * 2);
    let master =
        SentinelMaster::new(Box::new(make), lookup_timeout).map_err(|e| bad(&e.to_string()))?;
    Ok((Topology::Sentinel(master), target))
}

/// The last value of `name` in a query string, percent-decoded.
fn url_query_value(query: &str, name: &str) -> Option<String> {
    let parsed = redis::parse_redis_url(&format!("redis://h/?{query}"))?;
    parsed
        .query_pairs()
        .filter(|(k, _)| k == name)
        .last()
        .map(|(_, v)| v.into_owned())
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> String {
        parse(url, &RedisOptions::default()).unwrap().1
    }

    fn error(url: &str) -> String {
        match parse(url, &RedisOptions::default()) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_rejected(urls: &[&str]) {
        for url in urls {
            assert!(error(url).contains("invalid redis_url"), "{url}");
        }
    }

    /// The error of the malformed `url` shows none of `secrets`.
    fn assert_hides(url: &str, secrets: &[&str]) -> String {
        let e = error(url);
        for secret in secrets {
            assert!(!e.contains(secret), "{e}");
        }
        e
    }

    #[test]
    fn cluster_urls() {
        assert_eq!(
            target("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
        );
        assert_eq!(
            target("redis+cluster://u:pw@h1:7000,h2:7001/?protocol=3"),
            "redis+cluster://h1:7000,h2:7001"
        );
        assert_eq!(
            target("rediss+cluster://h1:7000?ssl_cert_reqs=none"),
            "rediss+cluster://h1:7000"
        );
        assert_eq!(
            target("redis+cluster://[::1]:7000"),
            "redis+cluster://[::1]:7000"
        );
        assert_rejected(&[
            "redis+cluster://",
            "redis+cluster://h:1,,h:2",
            "redis+cluster://h:1/2",
            "redis+cluster://h:99999",
            "redis+cluster://h:1?db=3",
            "rediss+cluster://h:1?ssl_cert_reqs=maybe",
            "redis+clusterx://h:1",
            "http+cluster://h:1",
        ]);
        let e = assert_hides("redis+cluster://user:hunter2@h:1,h:x", &["hunter2"]);
        assert!(e.contains("user:***"), "{e}");
    }

    #[test]
    fn sentinel_urls() {
        assert_eq!(
            target("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"),
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
        );
        assert_eq!(
            target("redis+sentinel://:pw@s1,s2:5000/svc/3?sentinel_password=x"),
            "redis+sentinel://s1:26379,s2:5000/svc/3"
        );
        assert_eq!(
            target("rediss+sentinel://s1/svc?ssl_cert_reqs=none"),
            "rediss+sentinel://s1:26379/svc/0"
        );
        assert_rejected(&[
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:26379/svc/x",
            "redis+sentinel://s1:26379/svc/1/2",
            "redis+sentinel://s1:26379,/svc",
            "redis+sentinel://s1:99999/svc",
        ]);
        assert_hides(
            "redis+sentinel://u:hunter2@s1/svc/x?sentinel_password=hunter3",
            &["hunter2", "hunter3"],
        );
    }
}
