use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `attune` process, killed when dropped. Its stderr is collected.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    pub log: Arc<Mutex<String>>,
}

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("attune-it-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("attune-test:{name}:{}:{nanos}:", std::process::id())
}

pub fn attune() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attune"));
    // Start from a clean slate: no inherited ATTUNE__ settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("ATTUNE__") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "info");
    c
}

impl Server {
    /// Starts `attune <args> --listen <free port>` and waits until /healthz answers.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let addr = free_addr();
        let mut cmd = attune();
        cmd.args(args)
            .arg("--listen")
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let server = Server { addr, child, log };
        // Generous: a debug build indexing the 44k-item fashion catalog takes about half a minute.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _)) = try_http(addr, "GET", "/healthz", None) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up: {}",
                server.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http(self.addr, method, path, body)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit {status}: {}",
                    self.log.lock().unwrap()
                );
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if body.is_some() {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str(&format!(
        "content-length: {}\r\n\r\n{payload}",
        payload.len()
    ));
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
    };
    Ok((status, value))
}

pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_http(addr, method, path, body).unwrap()
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real data (`shared/data`), beside the repository.
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

/// A data directory with the first `lines` lines of each named file of the real data.
pub fn slice(name: &str, files: &[(&str, usize)]) -> PathBuf {
    let dir = temp_dir(name);
    for (file, lines) in files {
        let text = std::fs::read_to_string(Path::new(DATA).join(file)).unwrap();
        let head: String = text
            .lines()
            .take(*lines)
            .map(|l| format!("{l}\n"))
            .collect();
        let out = dir.join(file);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(out, head).unwrap();
    }
    dir
}

pub fn run(args: &[&str]) -> Output {
    attune().args(args).output().unwrap()
}

#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A redis-server of the test's own on a free port, keeping nothing on disk.
pub struct OwnRedis {
    pub port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    pub fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A nats-server (JetStream on) of the test's own on a free port, storing in a directory that
/// outlives a restart.
pub struct OwnNats {
    pub port: u16,
    store: PathBuf,
    child: Option<std::process::Child>,
}

impl OwnNats {
    pub fn start(port: u16, store: &Path) -> OwnNats {
        let mut nats = OwnNats {
            port,
            store: store.to_owned(),
            child: None,
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and storage.
    pub fn restart(&mut self) {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Kills it (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL server of the test's own (initdb as the `postgres` user, trust auth) on a free
/// port, its data in a temporary directory; stopped (immediately, as a crash) and started again
/// on the same data.
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    running: bool,
}

impl OwnPostgres {
    pub fn start(port: u16) -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries (/usr/lib/postgresql/<version>/bin)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = temp_dir("own-postgres");
        let owned = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(owned.success());
        let init = Command::new("su")
            .args(["postgres", "-c"])
            .arg(format!(
                "{} -D {}/data -A trust -U postgres",
                bin.join("initdb").display(),
                dir.display()
            ))
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut pg = OwnPostgres {
            port,
            dir,
            bin,
            running: false,
        };
        pg.restart();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &str) -> Output {
        Command::new("su")
            .args(["postgres", "-c"])
            .arg(format!(
                "{} -D {}/data {args}",
                self.bin.join("pg_ctl").display(),
                self.dir.display()
            ))
            .output()
            .unwrap()
    }

    /// Starts it (again) on the same port and data, and waits until it answers.
    pub fn restart(&mut self) {
        let out = self.pg_ctl(&format!(
            "-w -l {}/log -o '-p {} -k {} -c listen_addresses=127.0.0.1' start",
            self.dir.display(),
            self.port,
            self.dir.display()
        ));
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    /// Stops it at once (`immediate`: no checkpoint, as a crash).
    pub fn stop(&mut self) {
        if self.running {
            self.pg_ctl("-m immediate -w stop");
            self.running = false;
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PostgreSQL the tests use (`ATTUNE_TEST_POSTGRES_URL`, default the local `test` database).
pub fn pg_url() -> String {
    std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A table name no other test (or run) uses.
pub fn unique_table(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("it_{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Drops the tables Attune made under these names (a catalog's sequence, a profile table's
/// interactions) and their migration records.
pub fn drop_tables(url: &str, tables: &[&str]) {
    let mut sql = String::new();
    for t in tables {
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {t}_interactions; \
             DROP SEQUENCE IF EXISTS {t}_seq; DELETE FROM attune_migrations WHERE name LIKE '{t}:%';"
        ));
    }
    let _ = Command::new("psql").args([url, "-q", "-c", &sql]).output();
}
