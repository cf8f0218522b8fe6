//! The verdict rules, one function per code. Thresholds are shares of the OOM budget (the OOM
//! memcg's usage at the kill, else its limit).
use serde_json::{json, Map, Value};

use super::{
    evidence::{ChildFacts, Evidence, TaskFacts},
    runtime::{self, Runtime},
    shape::{self, Shape},
    Finding, Severity,
};
use crate::cgroup::is_under;

/// A heap cap above this share of the limit leaves no headroom.
pub const HEADROOM_SHARE: f64 = 0.75;
/// A sibling cgroup holding this share of a shared limit is named.
pub const SIDECAR_SHARE: f64 = 0.40;
/// Shared memory (tmpfs, shm) from this share of the budget.
pub const SHMEM_SHARE: f64 = 0.20;
/// Page cache (file pages not shmem) from this share.
pub const PAGE_CACHE_SHARE: f64 = 0.25;
/// Kernel memory from this share.
pub const KERNEL_SHARE: f64 = 0.20;
/// The victim's own anonymous memory from this share.
pub const VICTIM_ANON_SHARE: f64 = 0.75;

/// `123.4 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn finding(code: &'static str, severity: Severity, summary: String, evidence: Value) -> Finding {
    let evidence = match evidence {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Finding {
        code,
        severity,
        summary,
        evidence,
    }
}

/// Every rule that holds for `e`, unordered.
pub fn all(e: &Evidence) -> Vec<Finding> {
    let rules: [fn(&Evidence) -> Option<Finding>; 12] = [
        runtime_heap,
        sidecar_share,
        victim_not_largest,
        tmpfs_shmem,
        page_cache,
        kernel_memory,
        timeline_shape,
        group_kill,
        not_container_init,
        global_overcommit,
        global_unlimited_consumers,
        victim_anon_at_limit,
    ];
    rules.iter().filter_map(|r| r(e)).collect()
}

/// `runtime_heap_cap_above_limit`, `runtime_heap_cap_without_headroom`,
/// `runtime_heap_uncapped`: the runtime's heap cap against the OOM memcg's limit.
fn runtime_heap(e: &Evidence) -> Option<Finding> {
    let limit = e.limit_bytes.filter(|_| !e.global)?;
    let p = e.process.as_ref()?;
    let heap = runtime::detect(p, e.victim.comm.as_deref())?;
    let recommended = (limit as f64 * HEADROOM_SHARE) as u64;
    let name = heap.runtime.as_str();
    let Some(cap) = heap.cap else {
        // An unread environment may hold the cap (NODE_OPTIONS, GOMEMLIMIT).
        return p
            .env_read
            .then(|| uncapped(e, heap.runtime, limit, recommended))
            .flatten();
    };
    let cap_bytes = cap.bytes(limit);
    let evidence = json!({
        "runtime": name,
        "setting": cap.setting,
        "source": cap.source,
        "heap_cap_bytes": cap_bytes,
        "limit_bytes": limit,
        "share_of_limit": round4(share(cap_bytes, limit)),
        "recommended_cap_bytes": recommended,
        "victim_anon_rss_bytes": e.victim.anon_rss_bytes,
    });
    let tail = format!(
        "cap the heap at about {} (75%) to leave room for memory outside it",
        mib(recommended)
    );
    if cap_bytes > limit {
        // The cause when the victim's own memory filled the budget; otherwise a hazard.
        let grew = match (e.victim.anon_rss_bytes, e.budget_bytes()) {
            (Some(anon), Some(budget)) => share(anon, budget) >= 0.5,
            _ => true,
        };
        let severity = if grew {
            Severity::Critical
        } else {
            Severity::Warning
        };
        return Some(finding(
            "runtime_heap_cap_above_limit",
            severity,
            format!(
                "{name} heap cap {} ({} from {}) is above the {} limit: the kernel, not the \
                 runtime, ends the process; {tail}",
                cap.setting,
                mib(cap_bytes),
                cap.source,
                mib(limit)
            ),
            evidence,
        ));
    }
    if cap_bytes as f64 > HEADROOM_SHARE * limit as f64 {
        return Some(finding(
            "runtime_heap_cap_without_headroom",
            Severity::Warning,
            format!(
                "{name} heap cap {} ({}, {} of the {} limit) leaves less than 25% for memory \
                 outside the heap; {tail}",
                cap.setting,
                mib(cap_bytes),
                pct(share(cap_bytes, limit)),
                mib(limit)
            ),
            evidence,
        ));
    }
    None
}

fn uncapped(e: &Evidence, rt: Runtime, limit: u64, recommended: u64) -> Option<Finding> {
    match rt {
        Runtime::Node => {
            let default = runtime::node_default_cap(limit);
            (default as f64 > HEADROOM_SHARE * limit as f64).then(|| {
                finding(
                    "runtime_heap_uncapped",
                    Severity::Warning,
                    format!(
                        "node runs without --max-old-space-size: V8's default cap under a {} \
                         limit is at least {}, so the heap can outgrow the limit; set \
                         --max-old-space-size={}",
                        mib(limit),
                        mib(default),
                        recommended >> 20
                    ),
                    json!({
                        "runtime": "node",
                        "estimated_default_cap_bytes": default,
                        "limit_bytes": limit,
                        "recommended_cap_bytes": recommended,
                        "victim_anon_rss_bytes": e.victim.anon_rss_bytes,
                    }),
                )
            })
        }
        Runtime::Go => Some(finding(
            "runtime_heap_uncapped",
            Severity::Warning,
            format!(
                "Go runs without GOMEMLIMIT: its GC is paced by GOGC only and does not know the \
                 {} limit; set GOMEMLIMIT={}MiB",
                mib(limit),
                recommended >> 20
            ),
            json!({
                "runtime": "go",
                "gogc": e.process.as_ref().and_then(|p| p.env.get("GOGC")),
                "limit_bytes": limit,
                "recommended_cap_bytes": recommended,
            }),
        )),
        // The JVM's container-aware default is 25% of the limit.
        Runtime::Jvm => None,
    }
}

/// The child of the OOM memcg that holds the victim.
fn victim_child<'a>(e: &Evidence, children: &'a [ChildFacts]) -> Option<&'a ChildFacts> {
    let victim = e.victim.cgroup.as_deref()?;
    children.iter().find(|c| is_under(victim, &c.path))
}

/// `sidecar_share`: another cgroup under the same shared limit held much of it.
fn sidecar_share(e: &Evidence) -> Option<Finding> {
    if !e.limit_above_victim() {
        return None;
    }
    let children = e.children.as_ref()?;
    let budget = e.budget_bytes()?;
    let own = victim_child(e, children);
    let others: Vec<&ChildFacts> = children
        .iter()
        .filter(|c| Some(c.path.as_str()) != own.map(|o| o.path.as_str()))
        .collect();
    let top = others.iter().max_by_key(|c| c.usage_bytes)?;
    let others_sum: u64 = others.iter().map(|c| c.usage_bytes).sum();
    let top_share = share(top.usage_bytes, budget);
    if top_share < SIDECAR_SHARE && share(others_sum, budget) < 0.5 {
        return None;
    }
    let severity = if top_share >= 0.5 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let top_name = top.name.clone().unwrap_or_else(|| top.path.clone());
    Some(finding(
        "sidecar_share",
        severity,
        format!(
            "{top_name} held {} ({}) of the shared {} budget of {}; the victim's own \
             memory was {}",
            mib(top.usage_bytes),
            pct(top_share),
            mib(budget),
            e.oom_memcg.as_deref().unwrap_or("?"),
            e.victim
                .anon_rss_bytes
                .map_or_else(|| "unknown".to_string(), mib),
        ),
        json!({
            "sidecar_cgroup": top.path,
            "sidecar_name": top.name,
            "sidecar_usage_bytes": top.usage_bytes,
            "sidecar_share": round4(top_share),
            "others_usage_bytes": others_sum,
            "victim_cgroup": own.map(|o| o.path.clone()).or_else(|| e.victim.cgroup.clone()),
            "victim_anon_rss_bytes": e.victim.anon_rss_bytes,
            "oom_memcg": e.oom_memcg,
            "budget_bytes": budget,
        }),
    ))
}

fn task_size(t: &TaskFacts) -> u64 {
    t.rss_bytes
        .saturating_add(t.swap_bytes.unwrap_or(0))
        .saturating_add(t.pgtables_bytes.unwrap_or(0))
}

/// `victim_not_largest`: `oom_score_adj` (or an unkillable protection) made a smaller task the
/// victim.
fn victim_not_largest(e: &Evidence) -> Option<Finding> {
    let tasks = e.tasks.as_ref()?;
    let victim = tasks
        .iter()
        .find(|t| t.victim || Some(t.pid) == e.victim.pid)?;
    let largest = tasks
        .iter()
        .filter(|t| t.pid != victim.pid)
        .max_by_key(|t| task_size(t))?;
    if task_size(largest) <= task_size(victim) {
        return None;
    }
    let protected = largest.points.is_none();
    Some(finding(
        "victim_not_largest",
        Severity::Warning,
        format!(
            "pid {} ({}) was killed with {} and oom_score_adj {} while pid {} ({}) held {} with \
             oom_score_adj {}{}",
            victim.pid,
            victim.comm,
            mib(task_size(victim)),
            victim.oom_score_adj,
            largest.pid,
            largest.comm,
            mib(task_size(largest)),
            largest.oom_score_adj,
            if protected {
                " (unkillable)"
            } else {
                ": the score adjustment chose the smaller task"
            }
        ),
        json!({
            "victim_pid": victim.pid,
            "victim_size_bytes": task_size(victim),
            "victim_oom_score_adj": victim.oom_score_adj,
            "victim_points": victim.points,
            "largest_pid": largest.pid,
            "largest_comm": largest.comm,
            "largest_cgroup": largest.cgroup,
            "largest_size_bytes": task_size(largest),
            "largest_oom_score_adj": largest.oom_score_adj,
            "largest_points": largest.points,
        }),
    ))
}

/// `tmpfs_shmem`: tmpfs and shared memory, which killing a process does not free.
fn tmpfs_shmem(e: &Evidence) -> Option<Finding> {
    let shmem = e.stat?.shmem?;
    let budget = e.budget_bytes()?;
    let s = share(shmem, budget);
    if s < SHMEM_SHARE {
        return None;
    }
    Some(finding(
        "tmpfs_shmem",
        if s >= 0.5 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        format!(
            "tmpfs and shared memory held {} ({}) of the {} budget; killing a process does \
             not free it (emptyDir medium: Memory, /dev/shm)",
            mib(shmem),
            pct(s),
            mib(budget)
        ),
        json!({
            "shmem_bytes": shmem,
            "share": round4(s),
            "budget_bytes": budget,
            "victim_shmem_rss_bytes": e.victim.shmem_rss_bytes,
        }),
    ))
}

/// `page_cache`: file pages (not tmpfs) the kernel could not reclaim in time.
fn page_cache(e: &Evidence) -> Option<Finding> {
    let stat = e.stat?;
    let cache = stat.file?.saturating_sub(stat.shmem.unwrap_or(0));
    let budget = e.budget_bytes()?;
    let s = share(cache, budget);
    if s < PAGE_CACHE_SHARE {
        return None;
    }
    Some(finding(
        "page_cache",
        if s >= 0.5 {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!(
            "page cache held {} ({}) of the {} budget and counts against the limit; what \
             reclaim could not free in time was dirty, under writeback or in use",
            mib(cache),
            pct(s),
            mib(budget)
        ),
        json!({
            "page_cache_bytes": cache,
            "file_bytes": stat.file,
            "share": round4(s),
            "budget_bytes": budget,
        }),
    ))
}

/// `kernel_memory`: slab, socket buffers, stacks and page tables charged to the cgroup.
fn kernel_memory(e: &Evidence) -> Option<Finding> {
    let stat = e.stat?;
    let kernel = stat.kernel.or_else(|| {
        let parts = [stat.slab, stat.sock, stat.kernel_stack, stat.pagetables];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    })?;
    let budget = e.budget_bytes()?;
    let s = share(kernel, budget);
    if s < KERNEL_SHARE {
        return None;
    }
    Some(finding(
        "kernel_memory",
        Severity::Warning,
        format!(
            "kernel memory held {} ({}) of the {} budget (slab {}, sockets {})",
            mib(kernel),
            pct(s),
            mib(budget),
            stat.slab.map_or_else(|| "unknown".into(), mib),
            stat.sock.map_or_else(|| "unknown".into(), mib),
        ),
        json!({
            "kernel_bytes": kernel,
            "slab_bytes": stat.slab,
            "sock_bytes": stat.sock,
            "kernel_stack_bytes": stat.kernel_stack,
            "pagetables_bytes": stat.pagetables,
            "share": round4(s),
            "budget_bytes": budget,
        }),
    ))
}

/// `leak` or `spike`, from the timeline.
fn timeline_shape(e: &Evidence) -> Option<Finding> {
    let limit = e.limit_bytes?;
    let t = e.timeline.as_ref()?;
    Some(match shape::classify(t, limit)? {
        Shape::Spike {
            from_bytes,
            jump_bytes,
            jump_ms,
            small_ms,
        } => finding(
            "spike",
            Severity::Warning,
            format!(
                "usage jumped {} in {} ms from {} after sitting below half the limit for {:.1} \
                 s: a burst (a large request, an upload or result buffered whole)",
                mib(jump_bytes),
                jump_ms,
                mib(from_bytes),
                small_ms as f64 / 1000.0
            ),
            json!({
                "from_bytes": from_bytes,
                "jump_bytes": jump_bytes,
                "jump_ms": jump_ms,
                "small_ms": small_ms,
                "limit_bytes": limit,
            }),
        ),
        Shape::Leak {
            from_bytes,
            rise_ms,
            growth_bytes_per_s,
            steps,
            rising_steps,
        } => finding(
            "leak",
            Severity::Warning,
            format!(
                "usage rose steadily from {} to the {} limit in {:.1} s ({}/s, {rising_steps} \
                 of {steps} seconds up): a raised limit only delays the kill",
                mib(from_bytes),
                mib(limit),
                rise_ms as f64 / 1000.0,
                mib(growth_bytes_per_s as u64)
            ),
            json!({
                "from_bytes": from_bytes,
                "time_to_limit_ms": rise_ms,
                "growth_bytes_per_s": growth_bytes_per_s.round(),
                "steps": steps,
                "rising_steps": rising_steps,
                "limit_bytes": limit,
            }),
        ),
    })
}

/// `group_kill`: `memory.oom.group` killed every task of the cgroup.
fn group_kill(e: &Evidence) -> Option<Finding> {
    (e.group_kill == Some(true)).then(|| {
        finding(
            "group_kill",
            Severity::Info,
            format!(
                "memory.oom.group is set on {}: every task in it was killed with the victim",
                e.oom_memcg.as_deref().unwrap_or("the OOM cgroup")
            ),
            json!({ "oom_memcg": e.oom_memcg }),
        )
    })
}

/// `not_container_init`: a container's non-init process was killed; the container runs on.
fn not_container_init(e: &Evidence) -> Option<Finding> {
    let p = e.process.as_ref()?;
    (e.in_container && p.container_init == Some(false)).then(|| {
        finding(
            "not_container_init",
            Severity::Warning,
            format!(
                "pid {} ({}) was not its container's PID 1: the container may keep running \
                 without it, and Kubernetes will not report OOMKilled",
                e.victim.pid.map_or_else(|| "?".into(), |p| p.to_string()),
                e.victim.comm.as_deref().unwrap_or("?")
            ),
            json!({
                "victim_pid": e.victim.pid,
                "container_init": false,
                "victim_cgroup": e.victim.cgroup,
            }),
        )
    })
}

fn top_consumers(e: &Evidence, n: usize) -> Vec<Value> {
    let mut tasks: Vec<&TaskFacts> = e.tasks.iter().flatten().collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(task_size(t)));
    tasks
        .into_iter()
        .take(n)
        .map(|t| json!({"pid": t.pid, "comm": t.comm, "cgroup": t.cgroup, "size_bytes": task_size(t)}))
        .collect()
}

/// `global_overcommit`: a node-wide OOM where the cgroup limits add up to more than RAM.
fn global_overcommit(e: &Evidence) -> Option<Finding> {
    let o = e.overcommit.filter(|_| e.global)?;
    let sum = o.limits_sum_bytes?;
    let ram = o.mem_total_bytes.saturating_add(o.swap_total_bytes);
    if sum <= ram {
        return None;
    }
    Some(finding(
        "global_overcommit",
        Severity::Critical,
        format!(
            "the node ran out of memory: the limits of {} cgroups add up to {}, more than its {} \
             of RAM and swap, so no limit stopped the growth first",
            o.limited_cgroups.unwrap_or(0),
            mib(sum),
            mib(ram)
        ),
        json!({
            "limits_sum_bytes": sum,
            "limited_cgroups": o.limited_cgroups,
            "mem_total_bytes": o.mem_total_bytes,
            "swap_total_bytes": o.swap_total_bytes,
            "largest": top_consumers(e, 3),
        }),
    ))
}

/// `global_unlimited_consumers`: a node-wide OOM without overcommitted limits: processes
/// outside any limit grew until the node ran out.
fn global_unlimited_consumers(e: &Evidence) -> Option<Finding> {
    if !e.global {
        return None;
    }
    if let Some(o) = e.overcommit {
        if o.limits_sum_bytes.unwrap_or(0) > o.mem_total_bytes.saturating_add(o.swap_total_bytes) {
            return None;
        }
    }
    let largest = top_consumers(e, 3);
    let first = e.tasks.iter().flatten().max_by_key(|t| task_size(t))?;
    Some(finding(
        "global_unlimited_consumers",
        Severity::Warning,
        format!(
            "the node ran out of memory with no cgroup limit hit; the largest process was pid \
             {} ({}) with {}{}",
            first.pid,
            first.comm,
            mib(task_size(first)),
            first
                .cgroup
                .as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        ),
        json!({
            "largest": largest,
            "mem_total_bytes": e.overcommit.map(|o| o.mem_total_bytes),
            "limits_sum_bytes": e.overcommit.and_then(|o| o.limits_sum_bytes),
        }),
    ))
}

/// `victim_anon_at_limit`: the victim's own anonymous memory filled most of the limit.
fn victim_anon_at_limit(e: &Evidence) -> Option<Finding> {
    if e.global {
        return None;
    }
    let anon = e.victim.anon_rss_bytes?;
    let budget = e.budget_bytes()?;
    let s = share(anon, budget);
    (s >= VICTIM_ANON_SHARE).then(|| {
        finding(
            "victim_anon_at_limit",
            Severity::Info,
            format!(
                "the victim's own anonymous memory was {} ({}) of the {} budget",
                mib(anon),
                pct(s),
                mib(budget)
            ),
            json!({
                "victim_anon_rss_bytes": anon,
                "share": round4(s),
                "budget_bytes": budget,
            }),
        )
    })
}
