//! Whole reports: synthetic sequences for the assembly rules, and real reports captured on
//! this host and in the VM matrix (`tests/fixtures/kernel_log/`, see the README there) in every
//! log format.
use super::*;

fn rec(seq: u64, message: &str) -> KmsgRecord {
    KmsgRecord {
        seq,
        ts_usec: seq * 10,
        message: message.into(),
    }
}

const INVOKED: &str =
    "oomt-basic invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
const USAGE: &str = "memory: usage 49152kB, limit 49152kB, failcnt 70";
const USAGE_SWAP: &str = "memory+swap: usage 49152kB, limit 9007199254740988kB, failcnt 0";
const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oomtrace-test-basic-9074,task_memcg=/oomtrace-test-basic-9074,task=oomt-basic,pid=9078,uid=0";
const KILLED: &str = "Memory cgroup out of memory: Killed process 9078 (oomt-basic) total-vm:58560kB, anon-rss:48768kB, file-rss:5264kB, shmem-rss:0kB, UID:0 pgtables:156kB oom_score_adj:0";
const TASKS_6_18: &str = "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name";

#[test]
fn reports_in_order() {
    let records = [
        rec(1, "unrelated"),
        rec(2, INVOKED),
        rec(3, "CPU: 0 UID: 0 PID: 9078 Comm: oomt-basic"),
        rec(4, USAGE),
        rec(5, USAGE_SWAP),
        rec(5, TASKS_6_18),
        rec(5, "[   9078]     0  9078    14640    13524    12192     1332         0   159744        0             0 oomt-basic"),
        rec(6, SUMMARY),
        rec(7, KILLED),
        rec(8, "Tasks in /oomtrace-test-basic-9074 are going to be killed due to memory.oom.group set"),
        rec(9, "Memory cgroup out of memory: Killed process 9079 (sib) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0"),
        // A later global OOM: no memcg usage, and no stale one carried over.
        rec(10, "init invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0"),
        rec(10, "Mem-Info:"),
        rec(10, "131070 pages RAM"),
        rec(10, "Total swap = 0kB"),
        rec(11, "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=big,pid=77,uid=0"),
        rec(12, "Out of memory: Killed process 77 (big) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0"),
    ];
    let reports = collect_reports(&records);
    assert_eq!(reports.len(), 3);

    let r = &reports[0];
    assert_eq!(r.killed.pid, 9078);
    assert_eq!(
        (r.time.as_deref(), r.monotonic_us),
        (Some("0.000070"), Some(70))
    );
    assert_eq!(r.summary.as_ref().map(|s| s.pid), Some(9078));
    assert_eq!(
        r.invoked.as_ref().map(|i| i.comm.as_str()),
        Some("oomt-basic")
    );
    assert_eq!(r.memcg_usage.as_ref().map(|u| u.failcnt), Some(70));
    assert_eq!(r.memsw_usage.as_ref().map(|u| u.usage_kb), Some(49152));
    assert_eq!(r.tasks.len(), 1);
    assert_eq!((r.tasks[0].pid, r.tasks[0].rss_pages), (9078, 13524));
    // The chosen victim's line comes before the group line, and still belongs to the group.
    assert_eq!(r.group_kill.as_deref(), Some("/oomtrace-test-basic-9074"));

    // oom.group sibling: the victim's summary and header.
    let r = &reports[1];
    assert_eq!(r.killed.pid, 9079);
    assert_eq!(r.summary.as_ref().map(|s| s.pid), Some(9078));
    assert_eq!(r.invoked, reports[0].invoked);
    assert_eq!(r.memcg_usage, reports[0].memcg_usage);
    assert_eq!(r.group_kill, reports[0].group_kill);

    let r = &reports[2];
    assert!(r.killed.global);
    assert_eq!(
        r.summary.as_ref().map(|s| s.constraint.as_str()),
        Some("CONSTRAINT_NONE")
    );
    assert_eq!(r.invoked.as_ref().map(|i| i.comm.as_str()), Some("init"));
    assert_eq!(r.memcg_usage, None);
    assert_eq!((r.ram_pages, r.swap_total_kb), (Some(131070), Some(0)));
    assert!(r.tasks.is_empty(), "no table carried over");
    assert_eq!(r.group_kill, None);

    // A kill with no summary in view still yields a report.
    let lone = collect_reports(&records[8..9]);
    assert_eq!((lone.len(), lone[0].summary.as_ref()), (1, None));
}

/// A real report of this host (6.18, cgroup v1): a 64 MiB parent with a `sidecar` child
/// holding 36 MiB and an `app` child (oom_score_adj 500) that grew until killed; captured with
/// `dmesg`, `dmesg -T` and `/dev/kmsg`, the journal forms derived from the same lines.
mod host_6_18_v1 {
    use super::*;

    const FIXTURES: [(&str, &str); 5] = [
        (
            "dmesg",
            include_str!("../../../tests/fixtures/kernel_log/6.18-v1-sidecar.dmesg"),
        ),
        (
            "dmesg-T",
            include_str!("../../../tests/fixtures/kernel_log/6.18-v1-sidecar.dmesg-T"),
        ),
        (
            "journal",
            include_str!("../../../tests/fixtures/kernel_log/6.18-v1-sidecar.journal"),
        ),
        (
            "journal-monotonic",
            include_str!("../../../tests/fixtures/kernel_log/6.18-v1-sidecar.journal-monotonic"),
        ),
        (
            "kmsg",
            include_str!("../../../tests/fixtures/kernel_log/6.18-v1-sidecar.kmsg"),
        ),
    ];

    fn last(text: &str) -> OomReport {
        parse_log(text).pop().expect("a report")
    }

    #[test]
    fn the_app_kill_in_full() {
        let r = last(FIXTURES[0].1);
        assert_eq!(r.time.as_deref(), Some("7949.174988"));
        assert_eq!(r.monotonic_us, Some(7_949_174_988));
        assert_eq!(
            r.invoked,
            Some(InvokedOomKiller {
                comm: "oomt-app".into(),
                gfp_mask: 0xcc0,
                order: 0,
                oom_score_adj: 500,
            })
        );
        let unlimited = 9_007_199_254_740_988;
        let counter = |usage_kb, limit_kb, failcnt| {
            Some(MemcgUsage {
                usage_kb,
                limit_kb,
                failcnt,
            })
        };
        assert_eq!(r.memcg_usage, counter(65536, 65536, 74));
        assert_eq!(r.memsw_usage, counter(65536, unlimited, 0));
        assert_eq!(r.kmem_usage, counter(392, unlimited, 0));
        assert_eq!(r.swap_usage, None);
        let (path, stat) = r.memory_stat.as_ref().expect("memory.stat");
        assert_eq!(path, "/oomtrace-fixture-18874");
        assert_eq!(stat.len(), 42);
        assert_eq!(stat["total_rss"], 66_707_456);
        assert_eq!(stat["hierarchical_memory_limit"], 64 << 20);
        assert_eq!(stat["total_inactive_anon"], 66_695_168);
        assert_eq!(
            (stat["rss"], stat["cache"], stat["total_pgfault"]),
            (0, 0, 16650)
        );
        assert_eq!((r.ram_pages, r.swap_total_kb), (None, None));
        assert_eq!(
            r.tasks,
            [
                TaskRow {
                    pid: 18879,
                    uid: Some(0),
                    tgid: Some(18879),
                    total_vm_pages: Some(17242),
                    rss_pages: 12307,
                    rss_anon_pages: Some(9600),
                    rss_file_pages: Some(2707),
                    rss_shmem_pages: Some(0),
                    pgtables_bytes: 180_224,
                    swapents: 0,
                    oom_score_adj: 0,
                    name: "oomt-sidecar".into(),
                },
                TaskRow {
                    pid: 18884,
                    uid: Some(0),
                    tgid: Some(18884),
                    total_vm_pages: Some(14425),
                    rss_pages: 9320,
                    rss_anon_pages: Some(6656),
                    rss_file_pages: Some(2664),
                    rss_shmem_pages: Some(0),
                    pgtables_bytes: 143_360,
                    swapents: 0,
                    oom_score_adj: 500,
                    name: "oomt-app".into(),
                },
            ]
        );
        assert_eq!(
            r.summary,
            Some(OomKillSummary {
                constraint: "CONSTRAINT_MEMCG".into(),
                oom_memcg: Some("/oomtrace-fixture-18874".into()),
                task_memcg: Some("/oomtrace-fixture-18874/app".into()),
                task: "oomt-app".into(),
                pid: 18884,
                uid: Some(0),
            })
        );
        assert_eq!(
            r.killed,
            KilledProcess {
                pid: 18884,
                comm: "oomt-app".into(),
                total_vm_kb: 57700,
                anon_rss_kb: 26624,
                file_rss_kb: 10656,
                shmem_rss_kb: 0,
                uid: 0,
                pgtables_kb: 140,
                oom_score_adj: 500,
                global: false,
            }
        );
        assert_eq!(r.group_kill, None);
    }

    #[test]
    fn a_kill_whose_head_is_cut_off() {
        // The fixture starts at the previous kill's summary: no header, no table.
        let reports = parse_log(FIXTURES[0].1);
        assert_eq!(reports.len(), 2);
        let r = &reports[0];
        assert_eq!(r.killed.pid, 18545);
        assert_eq!(r.summary.as_ref().map(|s| s.pid), Some(18545));
        assert_eq!((r.invoked.as_ref(), r.memory_stat.as_ref()), (None, None));
        assert!(r.tasks.is_empty());
        assert_eq!(r.time.as_deref(), Some("7928.861085"));
    }

    #[test]
    fn every_format_gives_the_same_report() {
        let want = last(FIXTURES[0].1);
        let times = [
            ("dmesg", Some("7949.174988"), Some(7_949_174_988)),
            ("dmesg-T", Some("Thu Nov 26 09:22:57 2026"), None),
            ("journal", Some("Nov 26 09:22:57"), None),
            (
                "journal-monotonic",
                Some("7949.174988"),
                Some(7_949_174_988),
            ),
            ("kmsg", Some("7949.174988"), Some(7_949_174_988)),
        ];
        for ((name, text), (tname, time, mono)) in FIXTURES.iter().zip(times) {
            assert_eq!(*name, tname);
            let got = last(text);
            assert_eq!(
                (got.time.as_deref(), got.monotonic_us),
                (time, mono),
                "{name}"
            );
            let same = OomReport {
                time: want.time.clone(),
                monotonic_us: want.monotonic_us,
                ..got
            };
            assert_eq!(same, want, "{name}");
        }
    }
}
