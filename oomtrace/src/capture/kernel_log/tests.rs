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

/// The whole kernel log (busybox `dmesg`: every line of a multi-line record gets the prefix) of
/// the VM matrix's guests, cgroup v2, after the steps `shapes` (the `memory.oom.group` test
/// only), `global-oom` and `domain` (`cargo xtask vm-test --step global-oom --step shapes --step
/// domain --step dmesg -- oom_group a_sidecar a_protected`). 6.1 prints `memory.stat` as one
/// record (cut at 1024 bytes: 29 lines), 6.12 a record per line (60); 6.12's task table has
/// the per-type RSS columns.
mod vm_v2 {
    use super::*;

    const DMESG_6_1: &str = include_str!("../../../tests/fixtures/kernel_log/6.1-v2-vm.dmesg");
    const DMESG_6_12: &str = include_str!("../../../tests/fixtures/kernel_log/6.12-v2-vm.dmesg");

    /// The `Killed process` line: (pid, comm, anon, file, shmem, pgtables kB, adj).
    fn killed(r: &OomReport) -> (u32, &str, u64, u64, u64, u64, i32) {
        let k = &r.killed;
        let kb = (k.anon_rss_kb, k.file_rss_kb, k.shmem_rss_kb, k.pgtables_kb);
        (
            k.pid,
            k.comm.as_str(),
            kb.0,
            kb.1,
            kb.2,
            kb.3,
            k.oom_score_adj,
        )
    }

    /// The task table: (pid, rss, rss_anon, rss_shmem, pgtables bytes, adj, name).
    type Row<'a> = (u32, u64, Option<u64>, Option<u64>, u64, i32, &'a str);

    fn rows(r: &OomReport) -> Vec<Row<'_>> {
        r.tasks
            .iter()
            .map(|t| {
                let name = t.name.as_str();
                (
                    t.pid,
                    t.rss_pages,
                    t.rss_anon_pages,
                    t.rss_shmem_pages,
                    t.pgtables_bytes,
                    t.oom_score_adj,
                    name,
                )
            })
            .collect()
    }

    fn usage(r: &OomReport) -> Option<(u64, u64, u64)> {
        r.memcg_usage
            .as_ref()
            .map(|u| (u.usage_kb, u.limit_kb, u.failcnt))
    }

    /// (path, lines, anon, slab) of the `memory.stat` dump.
    fn stat(r: &OomReport) -> Option<(&str, usize, u64, u64)> {
        r.memory_stat
            .as_ref()
            .map(|(p, s)| (p.as_str(), s.len(), s["anon"], s["slab"]))
    }

    fn memcgs(r: &OomReport) -> (Option<&str>, Option<&str>) {
        let s = r.summary.as_ref().expect("summary");
        (s.oom_memcg.as_deref(), s.task_memcg.as_deref())
    }

    #[test]
    fn kernel_6_1() {
        let reports = parse_log(DMESG_6_1);
        assert_eq!(reports.len(), 8);
        // memory.oom.group: the chosen victim, its three siblings, and the victim again (the
        // group walk meets it once more while it still has its mm).
        let group = "/oomtrace-test-group-99";
        let pids: Vec<u32> = reports[..5].iter().map(|r| r.killed.pid).collect();
        assert_eq!(pids, [105, 102, 103, 104, 105]);
        for r in &reports[..5] {
            assert_eq!(r.group_kill.as_deref(), Some(group));
            assert_eq!(r.summary.as_ref().map(|s| s.pid), Some(105));
            assert_eq!(usage(r), Some((65536, 65536, 30)));
            assert_eq!(stat(r), Some((group, 29, 66_453_504, 68_096)));
        }
        let swap = reports[0].swap_usage.as_ref().expect("swap: line");
        assert_eq!((swap.usage_kb, swap.limit_kb, swap.failcnt), (0, 0, 0));
        assert_eq!(reports[0].memsw_usage, None);
        assert_eq!(
            rows(&reports[0]),
            [
                (102, 5118, None, None, 118_784, 0, "oomt-member0"),
                (103, 5036, None, None, 122_880, 0, "oomt-member1"),
                (104, 5063, None, None, 118_784, 0, "oomt-member2"),
                (105, 11512, None, None, 176_128, 0, "oomt-grouper"),
            ]
        );
        assert_eq!(
            killed(&reports[1]),
            (102, "oomt-member0", 9664, 4, 10804, 116, 0)
        );
        assert_eq!(
            (reports[4].time.as_deref(), reports[4].monotonic_us),
            (Some("9.735043"), Some(9_735_043))
        );

        // The global OOM: show_mem's totals, every task, no memcg.
        let g = &reports[5];
        assert!(g.killed.global);
        assert_eq!(
            killed(g),
            (108, "oomt-global", 358_140, 4, 10808, 796, 1000)
        );
        assert_eq!(
            g.summary.as_ref().map(|s| s.constraint.as_str()),
            Some("CONSTRAINT_NONE")
        );
        assert_eq!(memcgs(g), (None, Some("/oomtrace-test-global-106")));
        assert_eq!((g.ram_pages, g.swap_total_kb), (Some(130_942), Some(0)));
        assert_eq!(
            (usage(g), stat(g), g.group_kill.as_deref()),
            (None, None, None)
        );
        assert_eq!(
            g.invoked
                .as_ref()
                .map(|i| (i.gfp_mask, i.order, i.oom_score_adj)),
            Some((0x140dca, 0, 1000))
        );
        assert_eq!(
            rows(g),
            [
                (106, 4973, None, None, 110_592, 0, "oom_shapes"),
                (108, 92238, None, None, 815_104, 1000, "oomt-global"),
            ]
        );

        // tests/domain.rs: the pod with a sidecar, then the protected large process.
        let app = &reports[6];
        assert_eq!(killed(app), (117, "oomt-app", 26324, 4, 10340, 148, 500));
        assert_eq!(
            memcgs(app),
            (
                Some("/oomtrace-test-domain-pod-109"),
                Some("/oomtrace-test-domain-pod-109/app")
            )
        );
        assert_eq!(usage(app), Some((65536, 65536, 79)));
        assert_eq!(
            stat(app),
            Some(("/oomtrace-test-domain-pod-109", 29, 66_473_984, 32_976))
        );
        assert_eq!(
            rows(app),
            [
                (116, 12253, None, None, 167_936, 0, "oomt-sidecar"),
                (117, 9167, None, None, 151_552, 500, "oomt-app"),
            ]
        );
        let small = &reports[7];
        assert_eq!(killed(small), (121, "oomt-small", 22344, 4, 10556, 140, 0));
        assert_eq!(
            stat(small),
            Some(("/oomtrace-test-domain-adj-109", 29, 66_711_552, 35_888))
        );
        assert_eq!(
            rows(small),
            [
                (120, 13237, None, None, 180_224, -500, "oomt-large"),
                (121, 8226, None, None, 143_360, 0, "oomt-small"),
            ]
        );
    }

    #[test]
    fn kernel_6_12() {
        let reports = parse_log(DMESG_6_12);
        assert_eq!(reports.len(), 8);
        let group = "/oomtrace-test-group-153";
        let pids: Vec<u32> = reports[..5].iter().map(|r| r.killed.pid).collect();
        assert_eq!(pids, [159, 156, 157, 158, 159]);
        for r in &reports[..5] {
            assert_eq!(r.group_kill.as_deref(), Some(group));
            assert_eq!(usage(r), Some((65536, 65536, 54)));
            assert_eq!(stat(r), Some((group, 60, 66_478_080, 76_224)));
        }
        let (_, s) = reports[0].memory_stat.as_ref().expect("memory.stat");
        assert_eq!((s["pgfault"], s["numa_hint_faults"]), (16974, 0));
        assert_eq!(
            rows(&reports[0]),
            [
                (
                    156,
                    5098,
                    Some(2432),
                    Some(2666),
                    110_592,
                    0,
                    "oomt-member0"
                ),
                (
                    157,
                    5195,
                    Some(2432),
                    Some(2763),
                    114_688,
                    0,
                    "oomt-member1"
                ),
                (
                    158,
                    5037,
                    Some(2432),
                    Some(2605),
                    114_688,
                    0,
                    "oomt-member2"
                ),
                (
                    159,
                    11477,
                    Some(8832),
                    Some(2645),
                    163_840,
                    0,
                    "oomt-grouper"
                ),
            ]
        );
        assert_eq!(
            killed(&reports[3]),
            (158, "oomt-member2", 9728, 0, 10420, 112, 0)
        );

        let g = &reports[5];
        assert!(g.killed.global);
        assert_eq!(
            killed(g),
            (162, "oomt-global", 367_232, 0, 10540, 812, 1000)
        );
        assert_eq!(memcgs(g), (None, Some("/oomtrace-test-global-160")));
        assert_eq!((g.ram_pages, g.swap_total_kb), (Some(130_942), Some(0)));
        assert_eq!(
            rows(g),
            [
                (160, 2443, Some(465), Some(1850), 143_360, 0, "oom_shapes"),
                (
                    162,
                    94443,
                    Some(91808),
                    Some(2635),
                    831_488,
                    1000,
                    "oomt-global"
                ),
            ]
        );
        let row = &g.tasks[0];
        assert_eq!(
            (row.rss_file_pages, row.total_vm_pages),
            (Some(128), Some(19859))
        );

        let app = &reports[6];
        assert_eq!(killed(app), (174, "oomt-app", 26624, 0, 10864, 144, 500));
        assert_eq!(usage(app), Some((65536, 65536, 69)));
        assert_eq!(
            stat(app),
            Some(("/oomtrace-test-domain-pod-163", 60, 66_707_456, 45_200))
        );
        assert_eq!(
            rows(app),
            [
                (
                    170,
                    12335,
                    Some(9600),
                    Some(2735),
                    172_032,
                    0,
                    "oomt-sidecar"
                ),
                (174, 9372, Some(6656), Some(2716), 147_456, 500, "oomt-app"),
            ]
        );
        let small = &reports[7];
        assert_eq!(killed(small), (175, "oomt-small", 22528, 0, 10532, 136, 0));
        assert_eq!(
            stat(small),
            Some(("/oomtrace-test-domain-adj-163", 60, 66_727_936, 39_936))
        );
        assert_eq!(
            rows(small),
            [
                (
                    173,
                    13359,
                    Some(10624),
                    Some(2735),
                    176_128,
                    -500,
                    "oomt-large"
                ),
                (175, 8265, Some(5632), Some(2633), 139_264, 0, "oomt-small"),
            ]
        );
        assert_eq!(
            (small.time.as_deref(), small.monotonic_us),
            (Some("27.056751"), Some(27_056_751))
        );
    }
}
