//! The reader over a fixture `/proc` and cgroup tree, against numbers worked out by hand from
//! `oom_badness()`.
use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::*;
use crate::{
    cgroup::{CgroupRef, CgroupVersion},
    enrich::event::{Oom, OomMemcg, TaskInfo, Victim},
};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const KILL_NS: u64 = 7_000_000_000;

fn fixed_now() -> u64 {
    KILL_NS + 3_456_789
}

/// A fixture directory (a `/proc` and a cgroup v2 tree), removed on drop.
struct Fixture(PathBuf);

impl Fixture {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-domain-reader-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        Self(dir)
    }

    fn file(&self, rel: &str, text: &str) -> &Self {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, text).expect("write");
        self
    }

    /// A process: (anon, file, shmem, swap, pte) in kB.
    fn process(&self, pid: u32, comm: &str, kb: [u64; 5], adj: i32, cgroup: &str) -> &Self {
        let [anon, file, shmem, swap, pte] = kb;
        self.file(
            &format!("proc/{pid}/status"),
            &format!(
                "Name:\t{comm}\nTgid:\t{pid}\nRssAnon:\t{anon} kB\nRssFile:\t{file} kB\n\
                 RssShmem:\t{shmem} kB\nVmPTE:\t{pte} kB\nVmSwap:\t{swap} kB\n"
            ),
        )
        .file(&format!("proc/{pid}/oom_score_adj"), &format!("{adj}\n"))
        .file(&format!("proc/{pid}/cgroup"), &format!("0::{cgroup}\n"))
    }

    fn reader(&self) -> DomainReader {
        let h = MemoryHierarchy {
            root: self.0.join("cg"),
            version: CgroupVersion::V2,
        };
        DomainReader::new(h, PAGE)
            .with_proc_root(self.0.join("proc"))
            .with_clock(fixed_now)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn task(pid: u32, comm: &str, cgroup: &str) -> TaskInfo {
    TaskInfo {
        pid: Some(pid),
        tgid: Some(pid),
        comm: Some(comm.into()),
        cgroup: Some(CgroupRef {
            id: 1,
            path: Some(cgroup.into()),
        }),
    }
}

/// A kill record's event: the victim with (anon, file, shmem, pgtables) in kB.
fn event(
    incident: &str,
    victim: (u32, &str, &str),
    kb: [u64; 4],
    adj: i32,
    memcg: Option<(&str, u64)>,
) -> OomKillEvent {
    let [anon, file, shmem, pgtables] = kb;
    OomKillEvent {
        time_unix_ns: 0,
        ktime_ns: KILL_NS,
        host: "h".into(),
        incident: incident.into(),
        action: None,
        victim: Victim {
            task: task(victim.0, victim.1, victim.2),
            uid: Some(0),
            oom_score_adj: Some(adj),
            total_vm_bytes: None,
            anon_rss_bytes: Some(anon << 10),
            file_rss_bytes: Some(file << 10),
            shmem_rss_bytes: Some(shmem << 10),
            pgtables_bytes: Some(pgtables << 10),
            points: None,
            sigkill_pending: Some(true),
        },
        trigger: task(victim.0, victim.1, victim.2),
        oom: Oom {
            constraint: Some(if memcg.is_some() { "memcg" } else { "none" }),
            constraint_source: "inferred",
            gfp_mask: None,
            order: None,
            totalpages: None,
            memcg: memcg.map(|(path, limit)| OomMemcg {
                cgroup: CgroupRef {
                    id: 2,
                    path: Some(path.into()),
                },
                usage_bytes: limit,
                limit_bytes: limit,
            }),
        },
        hooks: Vec::new(),
        events_lost: 0,
        seq: 1,
        scope: None,
        names: None,
    }
}

/// (pid, points, victim) of each top task.
fn ranking(d: &OomDomain) -> Vec<(u32, Option<i64>, bool)> {
    d.tasks
        .as_ref()
        .expect("tasks")
        .top
        .iter()
        .map(|t| (t.pid, t.points, t.victim))
        .collect()
}

/// A 64 MiB pod: an app container (the victim 11, a helper 12), a sidecar holding most of the
/// budget (21) with a nested cgroup (22, a process without mm), and an unkillable agent (23).
fn pod(f: &Fixture) {
    f.file("cg/pod/cgroup.procs", "")
        .file("cg/pod/memory.max", "67108864\n")
        .file("cg/pod/memory.oom.group", "0\n")
        .file("cg/pod/app/cgroup.procs", "11\n12\n")
        .file("cg/pod/app/memory.current", "2097152\n")
        .file("cg/pod/app/memory.max", "max\n")
        .file("cg/pod/sidecar/cgroup.procs", "21\n23\n")
        .file("cg/pod/sidecar/memory.current", "44040192\n")
        .file("cg/pod/sidecar/memory.max", "50331648\n")
        .file("cg/pod/sidecar/inner/cgroup.procs", "22\n")
        .file("cg/pod/sidecar/inner/memory.current", "0\n")
        .file("cg/pod/sidecar/inner/memory.max", "max\n")
        .file("proc/meminfo", "MemTotal: 4194304 kB\nSwapTotal: 0 kB\n")
        // The victim as /proc shows it after the kill: already partly freed.
        .process(11, "app", [1024, 512, 0, 0, 40], 0, "/pod/app")
        .process(12, "app-helper", [2048, 1024, 0, 0, 24], 0, "/pod/app")
        .process(
            21,
            "sidecar",
            [40960, 2048, 0, 0, 120],
            -500,
            "/pod/sidecar",
        )
        .file("proc/22/status", "Name:\tkworker\nTgid:\t22\n")
        .file("proc/22/oom_score_adj", "0\n")
        .process(23, "agent", [1024, 0, 0, 0, 8], -1000, "/pod/sidecar");
}

#[test]
fn a_pod_limit_with_a_sidecar_holding_the_budget() {
    let f = Fixture::new();
    pod(&f);
    let mut r = f.reader();
    let ev = event(
        "i1",
        (11, "app", "/pod/app"),
        [20480, 2048, 0, 80],
        500,
        Some(("/pod", 64 * MIB)),
    );
    let d = r.read(&ev);
    // totalpages = 16384 (the limit, no swap): adj * 16. The victim from its record:
    // (20480 + 2048) / 4 + 80 / 4 + 500 * 16 = 5632 + 20 + 8000.
    // sidecar: (40960 + 2048) / 4 + 120 / 4 - 500 * 16 = 10752 + 30 - 8000.
    // helper: (2048 + 1024) / 4 + 24 / 4 = 768 + 6. agent: adj -1000, never chosen.
    assert_eq!(
        ranking(&d),
        [
            (11, Some(13652), true),
            (21, Some(2782), false),
            (12, Some(774), false),
            (23, None, false),
        ]
    );
    let tasks = d.tasks.as_ref().expect("tasks");
    assert_eq!(
        (tasks.source, tasks.count, tasks.age_ms),
        ("proc", 3, 3.456)
    );
    assert_eq!(
        tasks.top[1],
        DomainTask {
            pid: 21,
            comm: "sidecar".into(),
            cgroup_path: Some("/pod/sidecar".into()),
            anon_rss_bytes: 40960 << 10,
            file_rss_bytes: 2048 << 10,
            shmem_rss_bytes: 0,
            swap_bytes: 0,
            pgtables_bytes: 120 << 10,
            oom_score_adj: -500,
            points: Some(2782),
            victim: false,
            names: None,
        }
    );
    assert_eq!(
        (tasks.top[0].anon_rss_bytes, tasks.top[0].oom_score_adj),
        (20480 << 10, 500),
        "the record's numbers, not /proc's"
    );
    let children = d.children.as_ref().expect("children");
    assert_eq!((children.source, children.age_ms), ("cgroup_files", 3.456));
    let got: Vec<_> = children
        .top
        .iter()
        .map(|c| (c.path.as_str(), c.usage_bytes, c.limit_bytes, c.share))
        .collect();
    assert_eq!(
        got,
        [
            ("/pod/sidecar", 42 * MIB, Some(48 * MIB), 0.6563),
            ("/pod/app", 2 * MIB, None, 0.0313),
        ]
    );
    assert_eq!(d.group_kill, Some(false));
    assert_eq!(d.overcommit, None);
}

#[test]
fn victims_of_one_incident_share_a_reading() {
    let f = Fixture::new();
    pod(&f);
    let mut r = f.reader();
    let memcg = Some(("/pod", 64 * MIB));
    let first = event(
        "i1",
        (11, "app", "/pod/app"),
        [20480, 2048, 0, 80],
        500,
        memcg,
    );
    r.read(&first);
    // The sidecar is gone by the second victim's record: the reading is the incident's.
    std::fs::remove_dir_all(f.0.join("proc/21")).expect("remove");
    let second = event(
        "i1",
        (12, "app-helper", "/pod/app"),
        [3072, 1024, 0, 24],
        0,
        memcg,
    );
    let d = r.read(&second);
    assert_eq!(
        ranking(&d),
        [
            (11, Some(13652), false),
            (21, Some(2782), false),
            (12, Some(1030), true),
            (23, None, false),
        ]
    );
    // A new incident reads again.
    let third = event(
        "i2",
        (12, "app-helper", "/pod/app"),
        [3072, 1024, 0, 24],
        0,
        memcg,
    );
    let d = r.read(&third);
    assert_eq!(
        ranking(&d),
        [
            (12, Some(1030), true),
            (11, Some(394), false),
            (23, None, false)
        ]
    );
}

#[test]
fn a_victim_outside_the_top_is_added_after_it() {
    let f = Fixture::new();
    f.file("cg/big/memory.max", "1073741824\n")
        .file("proc/meminfo", "MemTotal: 4194304 kB\nSwapTotal: 0 kB\n");
    let pids: Vec<String> = (100..112).map(|p| p.to_string()).collect();
    f.file("cg/big/cgroup.procs", &(pids.join("\n") + "\n"));
    for pid in 100..112u32 {
        f.process(
            pid,
            "w",
            [4096 * u64::from(pid - 99), 0, 0, 0, 4],
            0,
            "/big",
        );
    }
    let mut r = f.reader();
    // The victim (100, the smallest) as an already-exiting task the kernel marked.
    let ev = event(
        "i",
        (100, "w", "/big"),
        [4096, 0, 0, 4],
        0,
        Some(("/big", 1 << 30)),
    );
    let d = r.read(&ev);
    let tasks = d.tasks.as_ref().expect("tasks");
    assert_eq!((tasks.count, tasks.top.len()), (12, TOP_TASKS + 1));
    assert_eq!(tasks.top[0].pid, 111);
    assert_eq!((tasks.top[10].pid, tasks.top[10].victim), (100, true));
    assert_eq!(d.children, None, "the victim is in the OOM memcg itself");
}

#[test]
fn a_global_oom_reads_every_process_and_the_limits() {
    let f = Fixture::new();
    f.file("cg/a/memory.max", "1073741824\n")
        .file("cg/a/inner/memory.max", "536870912\n")
        .file("cg/b/memory.max", "2147483648\n")
        .file("cg/c/memory.max", "max\n")
        .file(
            "proc/meminfo",
            "MemTotal: 2097152 kB\nSwapTotal: 1048576 kB\n",
        )
        .process(1, "init", [999_999, 0, 0, 0, 4], 0, "/")
        .process(300, "db", [1_048_576, 4096, 0, 2048, 2048], 0, "/b")
        .process(400, "web", [524_288, 0, 8192, 0, 1024], 0, "/a/inner");
    let mut r = f.reader();
    let mut ev = event("g", (300, "db", "/b"), [1_048_576, 4096, 0, 2048], 0, None);
    ev.victim.points = Some(264_000);
    let d = r.read(&ev);
    // totalpages = (2 GiB + 1 GiB) / 4 KiB; adj 0. web: (524288 + 8192) / 4 + 1024 / 4.
    assert_eq!(
        ranking(&d),
        [(300, Some(264_000), true), (400, Some(133_376), false)]
    );
    let tasks = d.tasks.as_ref().expect("tasks");
    assert_eq!(
        tasks.top[0].swap_bytes,
        2048 << 10,
        "/proc's swap for the victim"
    );
    assert_eq!(tasks.top[1].cgroup_path.as_deref(), Some("/a/inner"));
    assert_eq!(
        d.overcommit,
        Some(Overcommit {
            mem_total_bytes: 2 << 30,
            swap_total_bytes: 1 << 30,
            limits_sum_bytes: 3 << 30,
            limited_cgroups: 2,
        })
    );
    assert_eq!((d.children, d.group_kill), (None, None));
}

#[test]
fn nothing_readable_is_absent_not_an_error() {
    let f = Fixture::new();
    let mut r = f.reader();
    let ev = event(
        "x",
        (5, "a", "/gone/a"),
        [1, 1, 1, 1],
        0,
        Some(("/gone", MIB)),
    );
    let d = r.read(&ev);
    assert_eq!(
        d,
        OomDomain {
            tasks: None,
            children: None,
            group_kill: None,
            overcommit: None,
        }
    );
    assert!(Path::new(&f.0).exists());
}
