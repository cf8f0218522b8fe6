//! Memory cgroups: a task's memcg, a memcg's cgroup id, and the page-counter walk that infers
//! which cgroup's limit was hit when the kernel's own OOM context cannot be hooked.
use oomtrace_common::{Failure, KernelLayout, MAX_MEMCG_DEPTH};

use crate::kread;

/// `task->cgroups->subsys[memory_cgrp_id]`, converted to its `struct mem_cgroup`.
#[inline(always)]
pub fn of_task(task: *const u8, l: &KernelLayout) -> Option<*const u8> {
    let cset = kread::ptr(task, l.task_cgroups, Failure::ReadMemcg)?;
    let idx = l.memory_cgrp_id;
    if idx >= 64 {
        return None;
    }
    let css = kread::ptr(
        cset,
        l.css_set_subsys.wrapping_add(idx * 8),
        Failure::ReadMemcg,
    )?;
    Some(css.wrapping_sub(l.memcg_css as usize))
}

/// `memcg->css.cgroup->kn->id`: the cgroup directory's inode number.
#[inline(always)]
pub fn cgroup_id(memcg: *const u8, l: &KernelLayout) -> Option<u64> {
    let css = memcg.wrapping_add(l.memcg_css as usize);
    let cgroup = kread::ptr(css, l.css_cgroup, Failure::ReadCgroup)?;
    let kn = kread::ptr(cgroup, l.cgroup_kn, Failure::ReadCgroup)?;
    kread::at::<u64>(kn, l.kn_id, Failure::ReadCgroup)
}

/// `memcg->memory_events[MEMCG_OOM]`: bumped once per OOM invocation in this memcg.
#[inline(always)]
pub fn oom_events(memcg: *const u8, l: &KernelLayout) -> Option<u64> {
    if l.memcg_memory_events == oomtrace_common::ABSENT || l.memcg_oom_event >= 16 {
        return None;
    }
    kread::at::<u64>(
        memcg,
        l.memcg_memory_events + l.memcg_oom_event * 8,
        Failure::ReadMemcg,
    )
}

/// Usage and limit (pages) of the memcg's `memory` page counter.
#[inline(always)]
pub fn usage_and_limit(memcg: *const u8, l: &KernelLayout) -> Option<(u64, u64)> {
    let counter = memcg.wrapping_add(l.memcg_memory as usize);
    let usage = kread::at::<u64>(counter, l.page_counter_usage, Failure::ReadMemcg)?;
    let max = kread::at::<u64>(counter, l.page_counter_max, Failure::ReadMemcg)?;
    Some((usage, max))
}

/// An ancestor found by [`first_ancestor`].
pub struct Found {
    pub memcg: *const u8,
    /// 0 for `memcg` itself, 1 for its parent, …
    pub level: u32,
    /// Its `memory` page counter (pages).
    pub usage: u64,
    pub max: u64,
}

/// Walks from `memcg` up at most `depth` levels of `memory` page counters to the first whose
/// usage and limit satisfy `pred`. `None` when none does, or a read fails.
#[inline(always)]
pub fn first_ancestor(
    memcg: *const u8,
    l: &KernelLayout,
    depth: u32,
    pred: impl Fn(u64, u64) -> bool,
) -> Option<Found> {
    let mut counter = memcg.wrapping_add(l.memcg_memory as usize);
    let mut level = 0;
    while level < depth {
        let usage = kread::at::<u64>(counter, l.page_counter_usage, Failure::ReadMemcg)?;
        let max = kread::at::<u64>(counter, l.page_counter_max, Failure::ReadMemcg)?;
        if pred(usage, max) {
            return Some(Found {
                memcg: counter.wrapping_sub(l.memcg_memory as usize),
                level,
                usage,
                max,
            });
        }
        counter = kread::ptr(counter, l.page_counter_parent, Failure::ReadMemcg)?;
        level += 1;
    }
    None
}

/// Walks from `memcg` up its ancestors to the first whose usage is within `oom_margin_pages` of
/// its limit: the cgroup whose limit was hit. `None` means no ancestor is at its limit (global
/// OOM).
#[inline(always)]
pub fn first_at_limit(memcg: *const u8, l: &KernelLayout) -> Option<(*const u8, u64, u64)> {
    let margin = u64::from(l.oom_margin_pages);
    first_ancestor(memcg, l, MAX_MEMCG_DEPTH, |usage, max| {
        usage.saturating_add(margin) > max
    })
    .map(|f| (f.memcg, f.usage, f.max))
}
