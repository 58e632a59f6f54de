//! A throwaway PostgreSQL cluster (by default of the version `bin()` names) with `pg_upkeep` in
//! `shared_preload_libraries`, for tests that need several sessions,
//! background workers or crashes. The extension must be installed into the
//! server first (`cargo pgrx install`; `scripts/test.sh` does it).
//!
//! Each cluster lives in its own directory under `/tmp/pg_upkeep-clusters/`, runs as
//! the `postgres` user when the tests run as root (initdb refuses root), and
//! listens only on a unix socket in that directory.
//!
//! A test that needs another extension (pg_cron, pg_partman, pgstattuple) says so in
//! its name: scripts/test.sh skips it, and says so, on a server that does
//! not ship that extension.

use postgres::{Client, NoTls};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The bin directory of the PostgreSQL under test: `UPKEEP_PG_BIN`
/// (scripts/test.sh sets it per version), or that of the `pg_config` on PATH.
pub fn bin() -> String {
    std::env::var("UPKEEP_PG_BIN").unwrap_or_else(|_| {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .unwrap_or_else(|e| panic!("set UPKEEP_PG_BIN, or put a pg_config on PATH: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The bin directory of the server this cluster runs on.
    pub bin: String,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// Runs a program of the server in `bin`, as `postgres` when we are root,
/// in `dir` (which that user can write). Servers start with
/// RUST_BACKTRACE=full, as a developer's shell may have it, so that the
/// tests see it if a Rust backtrace ever reaches a client.
fn run_as_server_user(bin: &str, dir: &std::path::Path, program: &str, args: &[&str]) -> Output {
    // A program of the server, or a plain command (cp) when bin is empty.
    let path = if bin.is_empty() { program.to_string() } else { format!("{bin}/{program}") };
    let mut cmd = if is_root() {
        let mut c = Command::new("sudo");
        c.args(["-u", "postgres", "env", "RUST_BACKTRACE=full", &path]);
        c
    } else {
        let mut c = Command::new(&path);
        c.env("RUST_BACKTRACE", "full");
        c
    };
    let out = cmd.current_dir(dir).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one cluster, reachable by the server user.
fn new_dir(name: &str) -> PathBuf {
    // Outside the work tree: the postgres user may not be able to enter a clone.
    let root = std::env::var_os("UPKEEP_CLUSTER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pg_upkeep-clusters"));
    std::fs::create_dir_all(&root).unwrap();
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = root.join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
        assert!(ok.success());
        let _ = Command::new("chmod").args(["o+rx"]).arg(&root).status();
    }
    dir
}

impl Cluster {
    /// Starts a fresh cluster with the library preloaded and the extension
    /// created in database `postgres`. `settings` are extra postgresql.conf lines.
    pub fn start(name: &str, settings: &[&str]) -> Cluster {
        Cluster::start_on(&bin(), name, settings)
    }

    /// `start` on the server in another bin directory.
    pub fn start_on(bin: &str, name: &str, settings: &[&str]) -> Cluster {
        let cluster = Cluster::init(bin, name, &[]);
        cluster.configure_and_start(settings);
        cluster.connect("postgres").batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
        cluster
    }

    /// initdb of a new cluster, not started.
    fn init(bin: &str, name: &str, options: &[&str]) -> Cluster {
        let cluster = Cluster::without_data(bin, name);
        let data = cluster.data();
        let mut args = vec!["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync"];
        args.extend_from_slice(options);
        run_as_server_user(bin, &cluster.dir, "initdb", &args);
        cluster
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A directory and a port for a cluster whose data directory is still to be made.
    fn without_data(bin: &str, name: &str) -> Cluster {
        let dir = new_dir(name);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // Ports only matter for the lock file name: we listen on the socket.
        let port = 20_000 + (std::process::id() % 20_000) as u16 + n as u16;
        Cluster { dir, port, bin: bin.to_string() }
    }

    /// Starts a streaming standby of `primary` (pg_basebackup -R).
    pub fn standby_of(primary: &Cluster, name: &str, settings: &[&str]) -> Cluster {
        let standby = Cluster::without_data(&primary.bin, name);
        let data = standby.data();
        let port = primary.port.to_string();
        run_as_server_user(
            &primary.bin,
            &standby.dir,
            "pg_basebackup",
            &[
                "-h",
                primary.dir.to_str().unwrap(),
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        standby.configure_and_start(settings);
        standby
    }

    /// Appends our settings to postgresql.conf (later lines win) and starts.
    fn configure_and_start(&self, settings: &[&str]) {
        let (dir, port, data) = (&self.dir, self.port, self.data());
        let mut conf = format!(
            "\nshared_preload_libraries = 'pg_upkeep'\nport = {port}\nlisten_addresses = ''\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             log_min_messages = warning\n",
            dir.display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        self.pg_ctl_start();
    }

    fn pg_ctl_start(&self) {
        self.pg_ctl_start_with("");
    }

    /// Starts the server with extra command-line options for postgres.
    fn pg_ctl_start_with(&self, options: &str) {
        let data = self.data();
        let log = self.dir.join("server.log");
        let mut args = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        self.pg_ctl(&args);
    }

    /// A clean restart with extra command-line options for postgres (such
    /// as `-b`, the binary-upgrade mode pg_upgrade starts servers in).
    pub fn restart_with(&self, options: &str) {
        self.stop();
        self.pg_ctl_start_with(options);
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        run_as_server_user(&self.bin, &self.dir, "pg_ctl", args)
    }

    /// A clean shutdown (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        let data = self.data();
        self.pg_ctl(&["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    /// A copy of this stopped cluster's data directory, as a cluster of its
    /// own (not started).
    pub fn copy_stopped(&self, name: &str) -> Cluster {
        let copy = Cluster::without_data(&self.bin, name);
        let (from, to) = (self.data(), copy.data());
        run_as_server_user("", &copy.dir, "cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
        copy
    }

    /// pg_upgrade of this stopped cluster to the server in `bin` (`mode`:
    /// "--copy" or "--link"); starts the new cluster with `settings` and
    /// returns it. The new cluster is made as initdb makes it, except that
    /// data checksums follow the old cluster (18's initdb turns them on by
    /// default; pg_upgrade needs both alike).
    pub fn upgrade_to(&self, bin: &str, name: &str, mode: &str, settings: &[&str]) -> Cluster {
        let checksums = self.has_checksums();
        let new = Cluster::init(bin, name, if checksums { &["--data-checksums"] } else { &[] });
        let (old_data, new_data) = (self.data(), new.data());
        if !checksums && new.has_checksums() {
            run_as_server_user(bin, &new.dir, "pg_checksums", &["--disable", "-D", new_data.to_str().unwrap()]);
        }
        let port = self.port.to_string();
        let new_port = new.port.to_string();
        let socket = new.dir.to_str().unwrap();
        run_as_server_user(
            bin,
            &new.dir,
            "pg_upgrade",
            &[
                "-b",
                &self.bin,
                "-B",
                bin,
                "-d",
                old_data.to_str().unwrap(),
                "-D",
                new_data.to_str().unwrap(),
                "-p",
                &port,
                "-P",
                &new_port,
                "-s",
                socket,
                "-U",
                "postgres",
                mode,
            ],
        );
        new.configure_and_start(settings);
        new
    }

    /// Whether the (stopped) cluster has data checksums, as pg_controldata says.
    fn has_checksums(&self) -> bool {
        let data = self.data();
        let out = run_as_server_user(&self.bin, &self.dir, "pg_controldata", &[data.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("Data page checksum version:") && !l.trim_end().ends_with(" 0"))
    }

    /// Runs a client program of the server (pg_dump, pg_restore, ...)
    /// against this cluster, as the server user; returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-h", self.dir.to_str().unwrap(), "-p", &port, "-U", "postgres"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run_as_server_user(&self.bin, &self.dir, program, &all).stdout).into_owned()
    }

    pub fn connect(&self, db: &str) -> Client {
        Client::connect(
            &format!(
                "host={} port={} user=postgres dbname={db} application_name=upkeep-tests",
                self.dir.display(),
                self.port
            ),
            NoTls,
        )
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.dir.display()))
    }

    /// A connection as another role.
    pub fn connect_as(&self, user: &str, db: &str) -> Client {
        Client::connect(&format!("host={} port={} user={user} dbname={db}", self.dir.display(), self.port), NoTls)
            .unwrap_or_else(|e| panic!("cannot connect as {user}: {e}"))
    }

    /// A connection, or None while the server is not accepting them.
    pub fn try_connect(&self, db: &str) -> Option<Client> {
        Client::connect(&format!("host={} port={} user=postgres dbname={db}", self.dir.display(), self.port), NoTls)
            .ok()
            .filter(|c| !c.is_closed())
    }

    /// Polls `sql` (one boolean) until it is true, for at most `limit`.
    pub fn wait_until(&self, db: &str, sql: &str, limit: std::time::Duration) -> bool {
        // A fresh connection each time: the server may restart meanwhile.
        wait_for(limit, || {
            self.try_connect(db).and_then(|mut c| c.query_one(sql, &[]).ok()).map(|r| r.get::<_, bool>(0)) == Some(true)
        })
    }

    /// Kills a server process with SIGKILL and waits until the postmaster
    /// has reset every backend (crash restart) and accepts connections again.
    pub fn kill_9(&self, pid: i32) {
        const RESTART: &str = "all server processes terminated; reinitializing";
        let before = self.log().matches(RESTART).count();
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
        let limit = std::time::Duration::from_secs(60);
        assert!(wait_for(limit, || self.log().matches(RESTART).count() > before), "no crash restart");
        assert!(wait_for(limit, || self.try_connect("postgres").is_some()), "the server did not come back");
    }

    /// `pg_ctl stop -m immediate` (no shutdown checkpoint: the next start
    /// recovers from WAL, as after a power cut), then starts it again.
    pub fn stop_immediate_and_start(&self) {
        let data = self.data();
        self.pg_ctl(&["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        self.pg_ctl_start();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(|| {
                self.pg_ctl(&["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            });
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The message and hint of a failed statement, which must carry no Rust
/// internals.
pub fn error_of(result: Result<impl Sized, postgres::Error>) -> (String, Option<String>) {
    match result {
        Ok(_) => panic!("the statement succeeded but should have failed"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
            if let Some(leak) = rust_internals(db) {
                panic!("the error shows Rust internals: {leak}");
            }
            (db.message().to_string(), db.hint().map(str::to_string))
        }
    }
}

/// The part of an error a user sees (message, detail, hint, context) that
/// comes from Rust's insides: a backtrace, a source path, a panic.
pub fn rust_internals(db: &postgres::error::DbError) -> Option<String> {
    const SIGNS: [&str; 6] = [".rs:", "rustc", "panicked", "backtrace", "pgrx", "unwrap()"];
    [Some(db.message()), db.detail(), db.hint(), db.where_()]
        .into_iter()
        .flatten()
        .find(|text| SIGNS.iter().any(|s| text.contains(s)))
        .map(|text| format!("{}: {text}", db.message()))
}

/// Polls `what` every 100 ms until it is true, for at most `limit`.
pub fn wait_for(limit: std::time::Duration, mut what: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if what() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// Waits (up to 60 s) until `jobs` jobs of `kind` have been run by a run
/// that started after this call (the server's clock is read first, so a
/// run under way does not count). Its statements name pg_catalog's
/// operators, so a session with a hostile search_path may call it.
pub fn ran_again(c: &mut Client, kind: &str, jobs: i64) -> bool {
    let since: String = c.query_one("SELECT pg_catalog.clock_timestamp()::text", &[]).unwrap().get(0);
    let sql = "SELECT pg_catalog.count(*) FROM upkeep.jobs \
                WHERE kind OPERATOR(pg_catalog.=) $1 AND last_run OPERATOR(pg_catalog.>) $2::text::timestamptz";
    wait_for(std::time::Duration::from_secs(60), || {
        c.query_one(sql, &[&kind, &since]).unwrap().get::<_, i64>(0) == jobs
    })
}

/// One sample of a Prometheus text exposition: name, labels, value.
pub type Sample = (String, std::collections::BTreeMap<String, String>, f64);

/// The `upkeep_` samples of a text exposition (label values as pg_upkeep's
/// tests name things: no escaped quotes in them).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with("upkeep_"))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The first column of every row of a query, as text.
pub fn texts(c: &mut Client, sql: &str) -> Vec<String> {
    c.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

/// The one bigint a query returns.
pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Runs each (call, text) of `cases`: it must fail with an ERROR whose
/// message contains the text, with a HINT and no Rust internals, and leave
/// `snapshot` (what a bad call could have changed) as it was. Reports every
/// case that does not (up to the first that changed something). Returns
/// that snapshot.
pub fn assert_refused<S: AsRef<str>>(
    c: &mut Client,
    cases: &[(S, S)],
    snapshot: impl Fn(&mut Client) -> String,
) -> String {
    let before = snapshot(c);
    let mut wrong = Vec::new();
    for (sql, needle) in cases {
        let (sql, needle) = (sql.as_ref(), needle.as_ref());
        match c.batch_execute(sql) {
            Ok(()) => wrong.push(format!("{sql}: succeeded but should have been refused")),
            Err(e) => match e.as_db_error() {
                None => wrong.push(format!("{sql}: not a server error: {e}")),
                Some(db) => {
                    if let Some(leak) = rust_internals(db) {
                        wrong.push(format!("{sql}: shows Rust internals: {leak}"));
                    } else if !db.message().contains(needle) {
                        wrong.push(format!("{sql}: message {:?} does not contain {needle:?}", db.message()));
                    } else if db.hint().is_none_or(str::is_empty) {
                        wrong.push(format!("{sql}: no HINT with {:?}", db.message()));
                    }
                }
            },
        }
        if snapshot(c) != before {
            wrong.push(format!("{sql}: changed something"));
            break;
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    before
}

/// A fingerprint of every row of every pg_upkeep table, followed by the
/// text rows of each query in `more`: what a refused call must leave as
/// it was.
pub fn fingerprint(c: &mut Client, more: &[&str]) -> String {
    // One query per table (no query_to_xml: not every server is built with libxml).
    let tables: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'upkeep'::regnamespace AND c.relkind = 'r'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut parts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "SELECT '{t}:' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM upkeep.\"{}\" x",
                t.replace('"', "\"\"")
            )
        })
        .collect();
    parts.extend(more.iter().map(|m| m.to_string()));
    let sql = format!("SELECT string_agg(t, '/' ORDER BY t) FROM ({}) s(t)", parts.join(" UNION ALL "));
    let f: String = c.query_one(&sql, &[]).unwrap().get(0);
    assert!(!f.split('/').any(|t| t.ends_with(':')), "a table's fingerprint is empty: {f}");
    f
}
