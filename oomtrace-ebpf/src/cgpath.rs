//! The victim's cgroup path as kernfs names it, read at the kill and sent ahead of the kill
//! record: userspace then knows the path even if the cgroup is gone before it looks.
use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
use oomtrace_common::{CgroupPathRecord, KernelLayout, RecordKind, ABSENT, CGROUP_PATH_DEPTH};

use crate::{
    kread,
    maps::{count_lost, EVENTS, PATH_SCRATCH},
};

/// Sends the path of `memcg`'s cgroup (leaf first, up to the hierarchy root) for `victim_pid`.
#[inline(always)]
pub fn emit(memcg: *const u8, victim_pid: u32, l: &KernelLayout) {
    if l.kn_parent == ABSENT || l.kn_name == ABSENT || l.kn_id == ABSENT {
        return;
    }
    let css = memcg.wrapping_add(l.memcg_css as usize);
    let Some(mut kn) = kread::ptr(css, l.css_cgroup).and_then(|c| kread::ptr(c, l.cgroup_kn))
    else {
        return;
    };
    let Some(rec) = PATH_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot; only this program, on this CPU, uses it while it runs.
    let rec = unsafe { &mut *rec };
    rec.kind = RecordKind::CgroupPath as u32;
    rec.victim_pid = victim_pid;
    rec.depth = 0;
    rec.complete = 0;
    for i in 0..CGROUP_PATH_DEPTH {
        // The hierarchy root has no parent and no name of its own in the path.
        let Some(parent) = kread::ptr(kn, l.kn_parent) else {
            rec.complete = 1;
            break;
        };
        rec.ids[i] = kread::at::<u64>(kn, l.kn_id).unwrap_or(0);
        rec.names[i][0] = 0;
        if let Some(name) = kread::ptr(kn, l.kn_name) {
            // SAFETY: the helper checks the address and bounds the copy by the slot's length.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut rec.names[i]) };
        }
        rec.depth = i as u32 + 1;
        kn = parent;
    }
    if rec.complete == 0 && kread::ptr(kn, l.kn_parent).is_none() {
        rec.complete = 1;
    }
    if EVENTS.output::<CgroupPathRecord>(rec, 0).is_err() {
        count_lost();
    }
}
