//! A real Redis Cluster for tests: three `redis-server` primaries on free loopback ports, each
//! with its own cluster bus port and config file in a temporary directory, joined by
//! `redis-cli --cluster create` and waited on until every node says `cluster_state:ok`. Dropping
//! the [`RedisCluster`] kills its servers and removes the directory.
//!
//! The servers keep nothing on disk but their cluster config (`--save '' --appendonly no`), so a
//! node restarted by [`RedisCluster::restart`] comes back owning its slots, empty. They run with
//! `cluster-require-full-coverage no`, so that the others keep serving their slots while one is
//! down (with the default, a cluster without replicas refuses every key once a primary is
//! marked failed).
//!
//! `redis-server` and `redis-cli` are taken from `ATTUNE_TEST_REDIS_SERVER` and
//! `ATTUNE_TEST_REDIS_CLI`, or the `PATH`; a missing one fails the test, as a missing service
//! does (see `.ci/run`, which installs them). The shared Redis on port 6379 is never used.
//!
//! This file is self-contained (std and the `redis` crate), so that other test crates can
//! include it with `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// How many primaries a test cluster has.
pub const NODES: usize = 3;

/// How long a node may take to answer, or the cluster to agree, before the start is retried.
const START_WAIT: Duration = Duration::from_secs(30);

struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

/// See the module docs.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

fn server_bin() -> String {
    std::env::var("ATTUNE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn cli_bin() -> String {
    std::env::var("ATTUNE_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// Ports nothing listens on now (all distinct: the listeners are held until all are picked).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// `redis-cli -p port args…`: its output, or why it failed.
fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cli_bin())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("redis-cli must be installed for the Redis Cluster tests ({e})")
        });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && !text.starts_with("ERR") && !text.starts_with("Could not connect") {
        Ok(text)
    } else {
        Err(format!(
            "{text}{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

impl RedisCluster {
    /// Starts a cluster; panics (failing the test) if three tries do not make one.
    pub fn start() -> RedisCluster {
        let mut why = String::new();
        for _ in 0..3 {
            match RedisCluster::try_start() {
                Ok(cluster) => return cluster,
                // Most likely a port taken between picking and binding it: try others.
                Err(e) => why = e,
            }
        }
        panic!("could not start a Redis Cluster: {why}");
    }

    fn try_start() -> Result<RedisCluster, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "attune-redis-cluster-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ports = free_ports(2 * NODES);
        let mut cluster = RedisCluster {
            dir,
            nodes: (0..NODES)
                .map(|i| Node {
                    port: ports[i],
                    bus_port: ports[NODES + i],
                    child: None,
                })
                .collect(),
        };
        // On an error below, dropping `cluster` kills what was started.
        for i in 0..NODES {
            cluster.spawn(i)?;
        }
        for i in 0..NODES {
            cluster.wait_answers(i)?;
        }
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        cli(cluster.nodes[0].port, &create).map_err(|e| format!("cluster create: {e}"))?;
        for i in 0..NODES {
            cluster.wait_ok(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let port = node.port.to_string();
        let child = Command::new(server_bin())
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &node.bus_port.to_string()])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "5000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--logfile", &format!("redis-{port}.log")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed for the Redis Cluster tests ({e})")
            });
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Waits for node `i` to answer `PING`; fails if it exits (its port was taken) or never does.
    fn wait_answers(&mut self, i: usize) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if cli(self.nodes[i].port, &["PING"]).is_ok_and(|pong| pong.trim() == "PONG") {
                return Ok(());
            }
            let exited = self.nodes[i]
                .child
                .as_mut()
                .map(|c| c.try_wait().ok().flatten().is_some())
                .unwrap_or(true);
            if exited || start.elapsed() > START_WAIT {
                let log = std::fs::read_to_string(
                    self.dir.join(format!("redis-{}.log", self.nodes[i].port)),
                )
                .unwrap_or_default();
                return Err(format!(
                    "redis-server on port {} did not start: {log}",
                    self.nodes[i].port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for node `i` to say `cluster_state:ok`.
    fn wait_ok(&self, i: usize) -> Result<(), String> {
        let start = Instant::now();
        loop {
            match cli(self.nodes[i].port, &["CLUSTER", "INFO"]) {
                Ok(info) if info.contains("cluster_state:ok") => return Ok(()),
                other if start.elapsed() > START_WAIT => {
                    return Err(format!(
                        "node on port {} is not ok: {other:?}",
                        self.nodes[i].port
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/", nodes.join(","))
    }

    /// The client ports of the nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// A plain (non-cluster) URL of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/0", self.nodes[i].port)
    }

    /// Kills node `i` (SIGKILL: no goodbye to its clients or peers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes node `i` (SIGSTOP): its connections stay open and nothing answers, as from a
    /// node that hangs or a network that drops packets.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a paused node `i` go on (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().expect("the node runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts node `i` again on its ports and config, and waits until it is back in the
    /// cluster with its slots.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i).and_then(|()| self.wait_answers(i)).unwrap();
        self.wait_ok(i).unwrap();
    }

    /// The keys matching `pattern` held by node `i`.
    pub async fn keys(&self, i: usize, pattern: &str) -> Vec<String> {
        let mut conn = self.node(i).await;
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// A plain connection to node `i`, for looking at what it holds.
    pub async fn node(&self, i: usize) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.node_url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Deletes every key under `prefix`, node by node (one key per `DEL`: a node refuses a
    /// `DEL` of keys in different slots).
    pub async fn cleanup(&self, prefix: &str) {
        for i in 0..NODES {
            if self.nodes[i].child.is_none() {
                continue;
            }
            let mut conn = self.node(i).await;
            for key in self.keys(i, &format!("{prefix}*")).await {
                let _: () = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One cluster shared by the tests running at the same time (each under its own key prefix):
/// started by the first, killed when the last one running drops its handle.
pub fn shared() -> Arc<RedisCluster> {
    static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(RedisCluster::start());
    *slot = Arc::downgrade(&cluster);
    cluster
}
