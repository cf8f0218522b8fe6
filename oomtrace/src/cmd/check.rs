//! `oomtrace check`: what this kernel allows and which hook each probe uses.
use std::{io::Write, path::Path};

use oomtrace_common::ABSENT;

use crate::{
    capture::tracefs,
    capture::tracer::{self, Tracer, DEFAULT_BTF},
    cgroup::{CgroupVersion, MemoryHierarchy},
    cmd::args::KernelArgs,
    pressure::StatHooksMode,
};

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The capabilities oomtrace uses that this process holds and lacks, and whether a seccomp
/// filter confines it (a container's profile must then allow bpf() and perf_event_open()).
fn write_privileges(out: &mut impl Write) -> std::io::Result<()> {
    use crate::capture::privilege::{Privileges, USED};
    let Some(p) = Privileges::of_self() else {
        return writeln!(out, "caps:     unknown (/proc/self/status unreadable)");
    };
    let list = |held: bool| {
        let names: Vec<String> = USED
            .iter()
            .filter(|(_, bit, _)| p.has(*bit) == held)
            .map(|(name, _, why)| format!("{name} ({why})"))
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    writeln!(out, "caps:     holds {}", list(true))?;
    writeln!(out, "          lacks {}", list(false))?;
    writeln!(
        out,
        "seccomp:  {}",
        if p.seccomp_filter {
            "a filter is installed: it must allow bpf() and perf_event_open() \
             (deploy/seccomp/oomtrace.json does)"
        } else {
            "no filter"
        }
    )
}

/// Prints the report; returns whether the victim probe can attach (exit status 0) or not (1).
pub fn run(args: &KernelArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    writeln!(out, "kernel:   {}", kernel_release())?;
    let btf_path = args.btf.clone().unwrap_or_else(|| DEFAULT_BTF.into());
    let btf_state = if Path::new(&btf_path).is_file() {
        "present"
    } else {
        "MISSING (pass --btf FILE)"
    };
    writeln!(out, "btf:      {} ({btf_state})", btf_path.display())?;
    match tracefs::root() {
        Ok(root) => writeln!(out, "tracefs:  {}", root.display())?,
        Err(e) => writeln!(out, "tracefs:  unavailable: {e}")?,
    }
    match MemoryHierarchy::detect() {
        Ok(h) => writeln!(
            out,
            "cgroup:   {} at {}",
            match h.version {
                CgroupVersion::V1 => "v1 memory",
                CgroupVersion::V2 => "v2 (memory controller)",
            },
            h.root.display()
        )?,
        Err(e) => writeln!(out, "cgroup:   {e}")?,
    }
    write_privileges(out)?;
    if !tracer::is_root() {
        writeln!(
            out,
            "probes:   not checked: {}",
            tracer::TracerError::NotRoot
        )?;
        return Ok(false);
    }
    let t = Tracer::start(&args.tracer_options(false))?;
    let unpinnable: Vec<String> = t
        .outcomes
        .iter()
        .filter_map(|o| o.chosen)
        .filter(|h| !crate::capture::pin::hook_pinnable(h))
        .map(|h| h.name())
        .collect();
    writeln!(
        out,
        "pinning:  {}; {}",
        crate::capture::pin::describe(std::path::Path::new(crate::capture::pin::DEFAULT_PIN_DIR)),
        if unpinnable.is_empty() {
            "every hook in use can be pinned".to_string()
        } else {
            format!("cannot pin {} (agent runs unpinned)", unpinnable.join(", "))
        }
    )?;
    let l = &t.layout;
    let rss = if l.mm_rss_value == 0 {
        "atomic_long_t counters (< 6.2)"
    } else {
        "percpu_counter (>= 6.2)"
    };
    writeln!(
        out,
        "layout:   mm rss_stat: {rss}; classic mark_victim fields: {}",
        if l.tp_total_vm == ABSENT {
            "pid only"
        } else {
            "full"
        }
    )?;
    let mut victim_ok = false;
    for o in &t.outcomes {
        match o.chosen {
            Some(h) if o.on_demand => writeln!(
                out,
                "probe {:<18} {h}, loaded to attach on demand  ({})",
                o.probe.name, o.probe.purpose
            )?,
            Some(h) => writeln!(out, "probe {:<18} {h}  ({})", o.probe.name, o.probe.purpose)?,
            None => writeln!(out, "probe {:<18} NONE: {}", o.probe.name, o.probe.without)?,
        }
        for (h, why) in &o.skipped {
            writeln!(out, "  skipped {h}: {why}")?;
        }
        if o.probe.required && o.chosen.is_some() {
            victim_ok = true;
        }
    }
    if args.pressure.no_pressure {
        writeln!(out, "pressure: off (--no-pressure)")?;
    } else {
        let s = crate::stream::pressure_sources(&t);
        writeln!(out, "pressure: sources {}", s.names().join(", "))?;
        let mode = args.pressure.stat_hooks_mode();
        writeln!(
            out,
            "  charge deltas and near-limit detection: {}",
            if s.memcg_stat && mode == StatHooksMode::Adaptive {
                "in the kernel (memcg stat tracepoints) while the stat hooks are attached; otherwise near-limit from reclaim and 1 s cgroup-file samples"
            } else if s.memcg_stat {
                "in the kernel (memcg stat tracepoints)"
            } else if mode == StatHooksMode::Never {
                "stat tracepoints off (--stat-hooks never): near-limit from reclaim and 1 s cgroup-file samples"
            } else {
                "no memcg stat tracepoints (6.13+): near-limit from reclaim and 1 s cgroup-file samples"
            }
        )?;
        stat_hooks_line(args, &t, out)?;
        writeln!(
            out,
            "  reclaim counts and stalls: {}",
            if s.reclaim {
                "memcg reclaim tracepoints"
            } else {
                "unavailable"
            }
        )?;
    }
    write_maps(out)?;
    // Counted from load, so a check reports its own (just loaded) programs: all 0 unless a
    // kill raced it. A running agent exports its own counts in /metrics.
    writeln!(
        out,
        "failures: kernel-side failures by reason, since this check loaded the programs:"
    )?;
    for (reason, n) in t.kernel_failures() {
        writeln!(out, "  {:<20} {n}", reason.name())?;
    }
    Ok(victim_ok)
}

/// `--stat-hooks`: the mode, whether this check's programs are attached, and which running
/// processes hold stat hook links now (an agent attaches them only while needed).
fn stat_hooks_line(args: &KernelArgs, t: &Tracer, out: &mut impl Write) -> std::io::Result<()> {
    let p = &args.pressure;
    let mode = p.stat_hooks_mode();
    let what = match mode {
        StatHooksMode::Adaptive if t.stat_hooks_on_demand() => format!(
            "adaptive: loaded, attached only while a memory cgroup's working set is at or above \
             {} of its limit or its reclaim fails, detached after {} s without",
            p.stat_hooks_threshold, p.stat_hooks_quiet
        ),
        StatHooksMode::Adaptive => "adaptive: not loaded (no memcg stat tracepoints)".to_string(),
        StatHooksMode::Always if t.stat_hooks_attached() => {
            "always: attached from start to exit".into()
        }
        StatHooksMode::Always => "always: not attached (no memcg stat tracepoints)".into(),
        StatHooksMode::Never => "never: not loaded".into(),
    };
    writeln!(out, "  stat hooks: {what}")?;
    let tracepoint = match crate::capture::probes::MEMCG_LRUVEC_STAT.hooks[0].kind {
        crate::capture::probes::HookKind::TpBtf { tracepoint, .. } => tracepoint,
        _ => "mod_memcg_lruvec_state",
    };
    let me = std::process::id();
    let holders: Vec<String> = crate::capture::stat_hooks::link_holders(tracepoint)
        .into_iter()
        .filter(|(pid, _, _)| *pid != me)
        .map(|(pid, comm, _)| format!("{comm} (pid {pid})"))
        .collect();
    writeln!(
        out,
        "  stat hooks attached now: by this check: {}; by other processes: {}",
        if t.stat_hooks_attached() { "yes" } else { "no" },
        if holders.is_empty() {
            "none".to_string()
        } else {
            holders.join(", ")
        }
    )
}

/// The eBPF maps this check loaded and the kernel memory each takes (`memlock` of
/// /proc/self/fdinfo): the same maps, sized the same way, as an agent on this node.
fn write_maps(out: &mut impl Write) -> anyhow::Result<()> {
    let maps = match crate::capture::map_memory::loaded() {
        Ok(m) => m,
        Err(e) => {
            writeln!(out, "maps:     unavailable: /proc/self/fdinfo: {e}")?;
            return Ok(());
        }
    };
    let total: u64 = maps.iter().map(|m| m.memlock).sum();
    writeln!(
        out,
        "maps:     {} eBPF maps, {total} bytes ({:.1} MiB) of kernel memory (memlock), for {} possible CPUs:",
        maps.len(),
        total as f64 / f64::from(1 << 20),
        crate::capture::tracer::possible_cpus()
    )?;
    for m in &maps {
        writeln!(
            out,
            "  map {:<16} {:>10} bytes  ({} entries, type {})",
            m.name, m.memlock, m.max_entries, m.map_type
        )?;
    }
    Ok(())
}
