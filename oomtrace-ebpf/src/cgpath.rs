//! The victim's cgroup path as kernfs names it, read at the kill and sent ahead of the kill
//! record: userspace then knows the path even if the cgroup is gone before it looks.
use aya_ebpf::{helpers::bpf_probe_read_kernel_str_bytes, maps::RingBuf};
use oomtrace_common::{
    CgroupPathRecord, Failure, KernelLayout, RecordKind, ABSENT, CGROUP_NAME_LEN, CGROUP_PATH_DEPTH,
};

use crate::{failure, kread, maps::PATH_SCRATCH};

/// Sends the path of `memcg`'s cgroup (leaf first, up to the hierarchy root) for `victim_pid`
/// on `ring`; `lost` is the failure that counts it when the ring is full.
///
/// A path the walk could not read whole is still sent, marked incomplete (`complete` 0); the
/// first failure is counted and returned, for the caller to log where logging is allowed.
/// `Err(lost)` means nothing was sent.
#[inline(always)]
pub fn emit(
    memcg: *const u8,
    victim_pid: u32,
    l: &KernelLayout,
    ring: &RingBuf,
    lost: Failure,
) -> Result<(), Failure> {
    if l.kn_parent == ABSENT || l.kn_name == ABSENT || l.kn_id == ABSENT {
        return Ok(());
    }
    let css = memcg.wrapping_add(l.memcg_css as usize);
    let Some(mut kn) = kread::ptr(css, l.css_cgroup, Failure::ReadCgroup)
        .and_then(|c| kread::ptr(c, l.cgroup_kn, Failure::ReadCgroup))
    else {
        return Err(Failure::ReadCgroup);
    };
    let Some(rec) = PATH_SCRATCH.get_ptr_mut(0) else {
        failure::count(Failure::ScratchLookup);
        return Err(Failure::ScratchLookup);
    };
    // SAFETY: a per-CPU slot; only this program, on this CPU, uses it while it runs.
    let rec = unsafe { &mut *rec };
    rec.kind = RecordKind::CgroupPath as u32;
    rec.victim_pid = victim_pid;
    rec.depth = 0;
    rec.complete = 0;
    // The walk's state lives in `rec.complete` (map memory, which the verifier does not track
    // by value) rather than in a local: a local would split the verifier's states at every
    // level. WALKING until the root or a failure; NAME_CUT and FAULT stick.
    for i in 0..CGROUP_PATH_DEPTH {
        // The hierarchy root has no parent and no name of its own in the path.
        let Some(parent) = parent_of(kn, l) else {
            rec.complete = FAULT;
            break;
        };
        if parent.is_null() {
            if rec.complete == WALKING {
                rec.complete = WHOLE;
            }
            break;
        }
        let Some(id) = kread::at::<u64>(kn, l.kn_id, Failure::ReadCgroup) else {
            rec.complete = FAULT;
            break;
        };
        rec.ids[i] = id;
        rec.names[i][0] = 0;
        let Some(name) = kread::ptr(kn, l.kn_name, Failure::ReadCgroup) else {
            rec.complete = FAULT;
            break;
        };
        // SAFETY: the helper checks the address and bounds the copy by the slot's length.
        match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut rec.names[i]) } {
            // A name that fills its slot may have been cut short.
            // (FAULT always ends the walk, so nothing is overwritten here.)
            Ok(s) if s.len() >= CGROUP_NAME_LEN - 1 => rec.complete = NAME_CUT,
            Ok(_) => {}
            Err(_) => {
                failure::count(Failure::ReadCgroup);
                rec.complete = FAULT;
                break;
            }
        }
        rec.depth = i as u32 + 1;
        kn = parent;
    }
    if rec.complete == WALKING {
        // Every level read: the path is whole only if the next node is the root.
        rec.complete = match parent_of(kn, l) {
            Some(p) if p.is_null() => WHOLE,
            Some(_) => DEPTH_CUT,
            None => FAULT,
        };
    }
    let outcome = match rec.complete {
        WHOLE => Ok(()),
        NAME_CUT | DEPTH_CUT => {
            failure::count(Failure::PathTruncated);
            Err(Failure::PathTruncated)
        }
        // Counted where the read failed.
        _ => Err(Failure::ReadCgroup),
    };
    if outcome.is_err() {
        rec.complete = 0;
    }
    if ring.output::<CgroupPathRecord>(rec, 0).is_err() {
        failure::count(lost);
        return Err(lost);
    }
    outcome
}

/// States of `rec.complete` during the walk; only WHOLE (1) and 0 are ever sent.
const WALKING: u32 = 0;
const WHOLE: u32 = 1;
const NAME_CUT: u32 = 2;
const DEPTH_CUT: u32 = 3;
const FAULT: u32 = 4;

/// `kn->parent`: `Some(null)` at the hierarchy root, `None` when the read faults.
#[inline(always)]
fn parent_of(kn: *const u8, l: &KernelLayout) -> Option<*const u8> {
    kread::at::<*const u8>(kn, l.kn_parent, Failure::ReadCgroup)
}
