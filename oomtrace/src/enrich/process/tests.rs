//! The cache over fixture procfs trees: what each source yields, pid reuse, the parent
//! fallback, sweeping and an unreadable procfs.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use super::*;

/// A fake procfs under the temp dir, removed on drop.
struct FakeProc(PathBuf);

/// One fixture process.
struct P<'a> {
    pid: u32,
    ppid: u32,
    start: u64,
    args: &'a [&'a str],
    env: &'a [&'a str],
    nspid: &'a str,
    exe: Option<&'a str>,
}

impl Default for P<'_> {
    fn default() -> Self {
        Self {
            pid: 0,
            ppid: 1,
            start: 100,
            args: &[],
            env: &[],
            nspid: "",
            exe: None,
        }
    }
}

impl FakeProc {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-fakeproc-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("self")).expect("fixture root");
        std::fs::write(dir.join("uptime"), "1.0 1.0\n").expect("non-pid file");
        Self(dir)
    }

    fn add(&self, p: P<'_>) {
        let dir = self.0.join(p.pid.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pid dir");
        // Fields 3..=22 of stat: state, ppid, 17 zeros, starttime.
        let stat = format!(
            "{} (fixture) S {} {} 0 0 0\n",
            p.pid,
            p.ppid,
            "0 ".repeat(17) + &p.start.to_string()
        );
        std::fs::write(dir.join("stat"), stat).expect("stat");
        let mut cmdline = Vec::new();
        for a in p.args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        std::fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
        let environ: Vec<u8> = p
            .env
            .iter()
            .flat_map(|e| [e.as_bytes(), b"\0"].concat())
            .collect();
        std::fs::write(dir.join("environ"), environ).expect("environ");
        let status = if p.nspid.is_empty() {
            format!("Name:\tfixture\nNSpid:\t{}\n", p.pid)
        } else {
            format!("Name:\tfixture\nNSpid:\t{}\n", p.nspid)
        };
        std::fs::write(dir.join("status"), status).expect("status");
        if let Some(exe) = p.exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).expect("exe link");
        }
    }

    fn remove(&self, pid: u32) {
        std::fs::remove_dir_all(self.0.join(pid.to_string())).expect("remove pid dir");
    }

    /// A zombie: stat still there, an empty command line, no exe.
    fn zombify(&self, pid: u32) {
        let dir = self.0.join(pid.to_string());
        std::fs::write(dir.join("cmdline"), "").expect("cmdline");
        let _ = std::fs::remove_file(dir.join("exe"));
    }

    fn cache(&self) -> ProcessCache {
        ProcessCache::new(self.0.clone(), Redactor::default())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NODE_ARGS: &[&str] = &[
    "/usr/bin/node",
    "--max-old-space-size=4096",
    "--password",
    "hunter2",
    "server.js",
];

fn node(pid: u32) -> P<'static> {
    P {
        pid,
        ppid: 10,
        start: 500,
        args: NODE_ARGS,
        env: &[
            "PATH=/usr/bin",
            "SECRET_X=never-kept",
            "NODE_OPTIONS=--max-semi-space-size=64 --api-token=abc",
            "GOGC=50",
        ],
        nspid: "",
        exe: Some("/usr/bin/node"),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn seed_reads_every_process_with_redaction_and_the_allowlist() {
    let fake = FakeProc::new("seed");
    fake.add(node(100));
    // A container's init, its exe unreadable (another user's, no CAP_SYS_PTRACE).
    fake.add(P {
        pid: 200,
        args: &["/pause"],
        nspid: "200\t1",
        ..P::default()
    });
    // A kernel thread: no command line.
    fake.add(P {
        pid: 2,
        ppid: 0,
        ..P::default()
    });
    let mut cache = fake.cache();
    assert_eq!(cache.seed(), 2);
    assert_eq!(
        cache.len(),
        3,
        "the kernel thread is remembered as having no identity"
    );
    let id = cache.identity_at_kill(100).expect("seeded");
    assert_eq!(
        id,
        ProcessIdentity {
            executable: Some("/usr/bin/node".into()),
            args: strings(&[
                "/usr/bin/node",
                "--max-old-space-size=4096",
                "--password",
                "***",
                "server.js"
            ]),
            command_line_bytes: NODE_ARGS.iter().map(|a| a.len() as u64 + 1).sum(),
            truncated: false,
            env: BTreeMap::from([
                ("GOGC".to_string(), "50".to_string()),
                (
                    "NODE_OPTIONS".to_string(),
                    "--max-semi-space-size=64 --api-token=***".to_string()
                ),
            ]),
            env_read: true,
            container_init: Some(false),
            source: IdentitySource::Seed,
        }
    );
    assert_eq!(
        id.command_line(),
        "/usr/bin/node --max-old-space-size=4096 --password *** server.js"
    );
    let pause = cache.identity_at_kill(200).expect("seeded");
    assert_eq!(pause.container_init, Some(true));
    assert_eq!(pause.executable, None);
    assert_eq!(pause.env, BTreeMap::new());
    assert!(pause.env_read, "an empty environ is read, not unknown");
    assert_eq!(cache.misses(), 0);
}

#[test]
fn long_command_lines_are_cut_and_their_length_kept() {
    let fake = FakeProc::new("long");
    let many: Vec<String> = (0..300).map(|i| format!("--arg{i:04}=x")).collect();
    let mut args = vec!["/bin/app"];
    args.extend(many.iter().map(String::as_str));
    fake.add(P {
        pid: 100,
        args: &args,
        ..P::default()
    });
    let mut cache = fake.cache();
    cache.on_exec(100);
    let id = cache.identity_at_kill(100).expect("read at exec");
    assert_eq!(id.source, IdentitySource::Exec);
    assert!(id.truncated);
    let full: u64 = args.iter().map(|a| a.len() as u64 + 1).sum();
    assert_eq!(id.command_line_bytes, full);
    let joined = id.command_line();
    assert_eq!(joined.len(), COMMAND_LINE_MAX);
    assert!(args.join(" ").starts_with(&joined));
}

#[test]
fn exec_replaces_the_previous_program_and_a_gone_one_leaves_nothing() {
    let fake = FakeProc::new("exec");
    fake.add(P {
        pid: 100,
        args: &["sh", "-c", "exec node server.js"],
        ..P::default()
    });
    let mut cache = fake.cache();
    cache.seed();
    fake.add(node(100));
    cache.on_exec(100);
    let id = cache.identity_at_kill(100).expect("exec read");
    assert_eq!(id.source, IdentitySource::Exec);
    assert_eq!(id.args[0], "/usr/bin/node");

    // An exec whose process is gone before it could be read: the old image is dropped.
    fake.add(P {
        pid: 300,
        args: &["sh"],
        ..P::default()
    });
    cache.seed();
    fake.remove(300);
    cache.on_exec(300);
    assert_eq!(cache.identity_at_kill(300), None);
    assert_eq!(cache.misses(), 1);
}

#[test]
fn a_reaped_victim_keeps_its_identity_and_a_reused_pid_does_not_inherit_it() {
    let fake = FakeProc::new("reuse");
    fake.add(P {
        pid: 10,
        ppid: 1,
        start: 50,
        args: &["/usr/bin/gunicorn", "app:wsgi"],
        ..P::default()
    });
    fake.add(node(100));
    let mut cache = fake.cache();
    cache.seed();
    // Reaped before its kill record was read: the cache still knows it, before and after a
    // sweep found it gone.
    fake.remove(100);
    let id = cache.identity_at_kill(100).expect("remembered");
    assert_eq!(id.args[0], "/usr/bin/node");
    // A pid is reused only long after its process went (pid_max wraps), so only after a sweep.
    cache.sweep();
    let id = cache.identity_at_kill(100).expect("remembered");
    assert_eq!(id.args[0], "/usr/bin/node");

    // Pid 100 now belongs to a child forked by 10 later (start 900), a zombie by the time its
    // kill is read: the old entry is not it; its parent's identity is.
    fake.add(P {
        pid: 100,
        ppid: 10,
        start: 900,
        args: &["/usr/bin/gunicorn", "app:wsgi"],
        ..P::default()
    });
    fake.zombify(100);
    let id = cache.identity_at_kill(100).expect("the parent's");
    assert_eq!(id.source, IdentitySource::Parent);
    assert_eq!(id.args, strings(&["/usr/bin/gunicorn", "app:wsgi"]));
    assert_eq!(id.container_init, Some(false));

    // A child forked as the init of a new PID namespace is one, whatever its parent was.
    fake.add(P {
        pid: 101,
        ppid: 10,
        start: 901,
        args: &["x"],
        nspid: "101\t1",
        ..P::default()
    });
    fake.zombify(101);
    let id = cache.identity_at_kill(101).expect("the parent's");
    assert_eq!(id.source, IdentitySource::Parent);
    assert_eq!(id.container_init, Some(true));
}

#[test]
fn kill_reads_uncached_processes_without_keeping_them() {
    let fake = FakeProc::new("kill");
    let mut cache = fake.cache();
    fake.add(node(100));
    let id = cache.identity_at_kill(100).expect("read now");
    assert_eq!(id.source, IdentitySource::Kill);
    assert_eq!(cache.len(), 0, "not cached");
}

#[test]
fn parent_fallback_needs_a_known_older_parent_other_than_init() {
    let fake = FakeProc::new("parent");
    fake.add(P {
        pid: 10,
        start: 50,
        args: &["/usr/sbin/php-fpm", "--nodaemonize"],
        ..P::default()
    });
    let mut cache = fake.cache();
    // Forked after the seed; a zombie when its kill is read; its parent read then.
    fake.add(P {
        pid: 11,
        ppid: 10,
        start: 60,
        args: &["x"],
        ..P::default()
    });
    fake.zombify(11);
    let id = cache.identity_at_kill(11).expect("the parent's, read now");
    assert_eq!(id.source, IdentitySource::Parent);
    assert_eq!(id.args, strings(&["/usr/sbin/php-fpm", "--nodaemonize"]));

    // Orphans adopted by init get nothing.
    fake.add(P {
        pid: 12,
        ppid: 1,
        start: 60,
        args: &["x"],
        ..P::default()
    });
    fake.zombify(12);
    fake.add(P {
        pid: 1,
        ppid: 0,
        start: 1,
        args: &["/sbin/init"],
        ..P::default()
    });
    assert_eq!(cache.identity_at_kill(12), None);
    // A "parent" younger than its child is a reused pid.
    fake.add(P {
        pid: 13,
        ppid: 10,
        start: 40,
        args: &["x"],
        ..P::default()
    });
    fake.zombify(13);
    assert_eq!(cache.identity_at_kill(13), None);
    // Reaped: no stat, no parent to ask.
    assert_eq!(cache.identity_at_kill(14), None);
    assert_eq!(cache.misses(), 3);
}

#[test]
fn sweep_keeps_the_dead_for_a_grace_period_and_scans_new_processes() {
    let fake = FakeProc::new("sweep");
    fake.add(node(100));
    let mut cache = fake.cache();
    cache.seed();
    fake.remove(100);
    cache.sweep();
    assert_eq!(
        cache.identity_at_kill(100).map(|i| i.source),
        Some(IdentitySource::Seed),
        "within the grace period"
    );
    let mut cache = cache.with_grace(Duration::ZERO);
    cache.sweep();
    assert_eq!(cache.len(), 0);

    // A child forked since (no exec seen) is read by the next sweep.
    fake.add(P {
        pid: 101,
        ppid: 100,
        start: 700,
        args: NODE_ARGS,
        ..P::default()
    });
    cache.sweep();
    fake.zombify(101);
    let id = cache.identity_at_kill(101).expect("scanned");
    assert_eq!(id.source, IdentitySource::Scan);
    assert_eq!(id.args[3], "***");

    // Its pid taken by another process: dropped at the sweep that sees it.
    fake.add(P {
        pid: 101,
        start: 800,
        args: &["other"],
        ..P::default()
    });
    cache.sweep();
    cache.sweep();
    assert_eq!(
        cache.identity_at_kill(101).map(|i| i.args),
        Some(strings(&["other"]))
    );
}

#[test]
fn an_unreadable_procfs_gives_no_identity_and_no_error() {
    let mut cache = ProcessCache::new(
        PathBuf::from("/nonexistent/oomtrace-proc"),
        Redactor::default(),
    );
    assert_eq!(cache.seed(), 0);
    cache.on_exec(1);
    cache.sweep();
    assert_eq!(cache.identity_at_kill(1), None);
    assert_eq!(cache.misses(), 1);

    // environ unreadable (here a directory): the rest is read, env unknown.
    let fake = FakeProc::new("noenv");
    fake.add(node(100));
    let environ = fake.path().join("100/environ");
    std::fs::remove_file(&environ).expect("rm");
    std::fs::create_dir(&environ).expect("dir");
    let id = fake.cache().identity_at_kill(100).expect("read");
    assert!(!id.env_read);
    assert!(id.env.is_empty());
    assert_eq!(id.args.len(), NODE_ARGS.len());
}
