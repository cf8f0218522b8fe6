//! One scenario per code: the evidence a kill of that kind leaves, and the verdict on it.
use std::collections::BTreeMap;

use serde_json::json;

use super::{
    diagnose,
    evidence::{
        ChildFacts, Evidence, OvercommitFacts, ProcessFacts, StatFacts, TaskFacts, TimelineFacts,
        VictimFacts,
    },
    Severity,
};

const MIB: u64 = 1 << 20;

/// A memcg OOM of a 128 MiB cgroup `/app` whose victim, pid 100, held 120 MiB of anon.
fn base() -> Evidence {
    Evidence {
        global: false,
        oom_memcg: Some("/app".into()),
        limit_bytes: Some(128 * MIB),
        usage_bytes: Some(128 * MIB),
        order: Some(0),
        page_size: 4096,
        victim: VictimFacts {
            pid: Some(100),
            comm: Some("app".into()),
            anon_rss_bytes: Some(120 * MIB),
            file_rss_bytes: Some(2 * MIB),
            shmem_rss_bytes: Some(0),
            pgtables_bytes: Some(MIB / 4),
            oom_score_adj: Some(0),
            cgroup: Some("/app".into()),
        },
        ..Evidence::default()
    }
}

fn process(args: &[&str], env: &[(&str, &str)]) -> ProcessFacts {
    ProcessFacts {
        executable: args.first().map(|a| a.to_string()),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        env_read: true,
        container_init: Some(true),
    }
}

fn codes(e: &Evidence) -> Vec<&'static str> {
    diagnose(e).findings.iter().map(|f| f.code).collect()
}

#[test]
fn node_heap_cap_above_the_limit_is_the_cause() {
    let mut e = base();
    e.process = Some(process(
        &["/usr/bin/node", "--max-old-space-size=512", "server.js"],
        &[],
    ));
    let v = diagnose(&e);
    let top = &v.findings[0];
    assert_eq!(top.code, "runtime_heap_cap_above_limit");
    assert_eq!(top.severity, Severity::Critical);
    assert_eq!(
        serde_json::Value::Object(top.evidence.clone()),
        json!({
            "runtime": "node", "setting": "--max-old-space-size=512", "source": "command line",
            "heap_cap_bytes": 512 * MIB, "limit_bytes": 128 * MIB, "share_of_limit": 4.0,
            "recommended_cap_bytes": 96 * MIB, "victim_anon_rss_bytes": 120 * MIB,
        })
    );
    // The limit that fits the cap with 25% headroom.
    assert_eq!(v.sizing.suggested_limit_bytes, Some(683 * MIB));
    assert_eq!(v.reason(), "runtime_heap_cap_above_limit");
}

#[test]
fn heap_caps_without_headroom_and_uncapped_runtimes() {
    let mut e = base();
    e.process = Some(process(&["java", "-Xmx112m", "-jar", "a.jar"], &[]));
    assert_eq!(codes(&e)[0], "runtime_heap_cap_without_headroom");
    e.process = Some(process(
        &["node", "a.js"],
        &[("NODE_OPTIONS", "--max-old-space-size=64")],
    ));
    assert!(
        !codes(&e).iter().any(|c| c.starts_with("runtime_")),
        "50% is fine"
    );
    e.process = Some(process(&["node", "a.js"], &[]));
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "runtime_heap_uncapped");
    assert_eq!(
        v.findings[0].evidence["estimated_default_cap_bytes"],
        256 * MIB
    );
    e.process = Some(process(&["/srv/api"], &[("GOGC", "200")]));
    assert_eq!(codes(&e)[0], "runtime_heap_uncapped");
    e.process = Some(process(&["/srv/api"], &[("GOMEMLIMIT", "1GiB")]));
    assert_eq!(codes(&e)[0], "runtime_heap_cap_above_limit");
}

#[test]
fn a_sidecar_holding_the_pod_budget() {
    let mut e = base();
    e.oom_memcg = Some("/pod".into());
    e.victim.cgroup = Some("/pod/app".into());
    e.victim.anon_rss_bytes = Some(40 * MIB);
    e.children = Some(vec![
        ChildFacts {
            path: "/pod/app".into(),
            name: Some("app".into()),
            usage_bytes: 2 * MIB,
        },
        ChildFacts {
            path: "/pod/proxy".into(),
            name: Some("istio-proxy".into()),
            usage_bytes: 86 * MIB,
        },
    ]);
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "sidecar_share");
    assert_eq!(v.findings[0].severity, Severity::Critical);
    assert_eq!(v.findings[0].evidence["sidecar_cgroup"], "/pod/proxy");
    assert_eq!(v.findings[0].evidence["sidecar_usage_bytes"], 86 * MIB);
    assert_eq!(v.findings[0].evidence["victim_cgroup"], "/pod/app");
    // The same children under the victim's own limit say nothing.
    e.oom_memcg = Some("/pod/app".into());
    assert!(!codes(&e).contains(&"sidecar_share"));
}

#[test]
fn a_protected_large_task_beside_a_smaller_victim() {
    let mut e = base();
    e.victim.anon_rss_bytes = Some(30 * MIB);
    let task = |pid, mb: u64, adj, points, victim| TaskFacts {
        pid,
        comm: format!("t{pid}"),
        cgroup: Some("/app".into()),
        rss_bytes: mb * MIB,
        swap_bytes: Some(0),
        pgtables_bytes: Some(0),
        oom_score_adj: adj,
        points,
        victim,
    };
    e.tasks = Some(vec![
        task(100, 30, 500, Some(7680 + 16384), true),
        task(200, 90, -900, Some(0), false),
    ]);
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "victim_not_largest");
    assert_eq!(v.findings[0].evidence["largest_pid"], 200);
    assert_eq!(v.findings[0].evidence["largest_oom_score_adj"], -900);
    assert_eq!(v.findings[0].evidence["victim_oom_score_adj"], 500);
}

#[test]
fn tmpfs_page_cache_and_kernel_memory_shares() {
    let mut e = base();
    e.victim.anon_rss_bytes = Some(20 * MIB);
    e.stat = Some(StatFacts {
        anon: Some(20 * MIB),
        file: Some(100 * MIB),
        shmem: Some(80 * MIB),
        ..StatFacts::default()
    });
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "tmpfs_shmem");
    assert_eq!(v.findings[0].severity, Severity::Critical);
    assert_eq!(v.findings[0].evidence["shmem_bytes"], 80 * MIB);
    e.stat = Some(StatFacts {
        anon: Some(20 * MIB),
        file: Some(70 * MIB),
        shmem: Some(0),
        kernel: Some(30 * MIB),
        slab: Some(25 * MIB),
        ..StatFacts::default()
    });
    assert_eq!(codes(&e), ["kernel_memory", "page_cache"]);
}

#[test]
fn a_non_init_process_in_a_container() {
    let mut e = base();
    let mut p = process(&["/bin/worker"], &[]);
    p.container_init = Some(false);
    e.process = Some(p);
    assert!(
        !codes(&e).contains(&"not_container_init"),
        "not in a container"
    );
    e.in_container = true;
    assert_eq!(codes(&e)[0], "not_container_init");
}

#[test]
fn global_ooms_name_overcommit_or_the_largest_unlimited_process() {
    let mut e = base();
    e.global = true;
    e.oom_memcg = None;
    e.limit_bytes = None;
    e.usage_bytes = None;
    e.tasks = Some(vec![TaskFacts {
        pid: 7,
        comm: "db".into(),
        cgroup: Some("/system.slice/db.service".into()),
        rss_bytes: 900 * MIB,
        points: Some(230_400),
        ..TaskFacts::default()
    }]);
    e.overcommit = Some(OvercommitFacts {
        mem_total_bytes: 1024 * MIB,
        swap_total_bytes: 0,
        limits_sum_bytes: Some(4096 * MIB),
        limited_cgroups: Some(3),
    });
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "global_overcommit");
    assert_eq!(v.sizing.suggested_limit_bytes, None);
    e.overcommit = Some(OvercommitFacts {
        limits_sum_bytes: Some(512 * MIB),
        ..e.overcommit.expect("set")
    });
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "global_unlimited_consumers");
    assert_eq!(v.findings[0].evidence["largest"][0]["pid"], 7);
}

#[test]
fn group_kill_and_plain_growth() {
    let mut e = base();
    e.group_kill = Some(true);
    assert_eq!(codes(&e), ["group_kill", "victim_anon_at_limit"]);
    e.group_kill = None;
    e.timeline = Some(TimelineFacts {
        samples: (0..8)
            .map(|i| (i * 1000 - 7000, (40 + i as u64 * 12) * MIB))
            .collect(),
        growth_bytes_per_s: Some(12.0 * MIB as f64),
    });
    let v = diagnose(&e);
    assert_eq!(v.findings[0].code, "leak");
    assert_eq!(v.sizing.suggested_limit_bytes, None);
    assert_eq!(v.sizing.needed_bytes, Some(128 * MIB + 4096));
    assert_eq!(v.sizing.failed_charge_bytes, Some(4096));
    assert_eq!(v.sizing.peak_60s_bytes, Some(128 * MIB));
}
