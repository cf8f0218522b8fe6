//! Kernel struct offsets and enum values resolved from BTF (`/sys/kernel/btf/vmlinux` or a file
//! given with `--btf`). Nothing here is compiled in: a field the kernel lacks stays `ABSENT`.
use std::{collections::HashMap, path::Path};

use oomtrace_common::{KernelLayout, ABSENT};

use crate::capture::btf_raw::{kind, RawBtf, RawBtfError};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read BTF file {path}: {source} (pass --btf FILE with the running kernel's BTF)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "BTF file {path} is not valid BTF: {source} (pass --btf FILE with the running kernel's BTF)"
    )]
    Invalid { path: String, source: RawBtfError },
    #[error("BTF {0}: {1}")]
    Btf(&'static str, RawBtfError),
    #[error("kernel BTF has no `struct {0}`")]
    NoStruct(String),
    #[error("kernel BTF: `struct {0}` has no member `{1}`")]
    NoMember(String, String),
    #[error("kernel BTF has no enum value `{0}`")]
    NoEnumValue(String),
    #[error(
        "BTF `struct {0}` member `{1}`: types nest deeper than {MAX_DEPTH} levels (a cycle?); \
         the BTF is malformed"
    )]
    TooDeep(String, String),
}

/// How deep the walks of nested types go: anonymous structs and unions in a member search,
/// array elements in a size. Real kernels nest a few levels; a crafted `--btf` with a cycle or
/// a long chain stops here with [`LayoutError::TooDeep`] instead of overflowing the stack.
pub const MAX_DEPTH: usize = 32;

/// A walk went deeper than [`MAX_DEPTH`].
#[derive(Debug)]
struct TooDeep;

/// The running kernel's BTF, with the look-ups oomtrace needs. Read in place ([`RawBtf`]):
/// the file's bytes and an offset per type, each type decoded only when a look-up reaches it.
pub struct KernelBtf {
    btf: RawBtf,
}

impl KernelBtf {
    pub fn from_file(path: &Path) -> Result<Self, LayoutError> {
        let bytes = std::fs::read(path).map_err(|source| LayoutError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let btf = RawBtf::new(bytes).map_err(|source| LayoutError::Invalid {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Parses BTF from memory (the bytes of a `--btf` file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LayoutError> {
        let btf = RawBtf::new(bytes.to_vec()).map_err(|e| LayoutError::Btf("parse", e))?;
        Ok(Self { btf })
    }

    /// The raw BTF (for [`RawBtf::loader_subset`]).
    pub fn raw(&self) -> &RawBtf {
        &self.btf
    }

    /// Strips typedefs and qualifiers: the id of the type underneath.
    fn concrete(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.btf.header(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        kind::TYPEDEF
                            | kind::CONST
                            | kind::VOLATILE
                            | kind::RESTRICT
                            | kind::TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => return id,
            }
        }
        id
    }

    fn kind_of(&self, id: u32) -> Option<u32> {
        self.btf.header(id).map(|t| t.kind)
    }

    /// The complete (non-forward) struct named `name`.
    fn find_struct(&self, name: &str) -> Result<u32, LayoutError> {
        self.btf
            .find(kind::STRUCT, name)
            .find(|t| t.vlen > 0)
            .map(|t| t.id)
            .ok_or_else(|| LayoutError::NoStruct(name.to_string()))
    }

    /// Finds `name` among the members of struct or union `id`, descending into anonymous
    /// structs and unions (at most `depth` levels). Returns its byte offset and its (concrete)
    /// type.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: usize,
    ) -> Result<Option<(u32, u32)>, TooDeep> {
        let Some(depth) = depth.checked_sub(1) else {
            return Err(TooDeep);
        };
        let Some(t) = self.btf.header(id) else {
            return Ok(None);
        };
        for m in self.btf.members(&t) {
            let mname = self.btf.name(m.name_off);
            let ty = self.concrete(m.type_id);
            if mname == name {
                return Ok(Some((m.bit_offset / 8, ty)));
            }
            if mname.is_empty() && matches!(self.kind_of(ty), Some(kind::STRUCT | kind::UNION)) {
                if let Some((off, t)) = self.find_member(ty, name, depth)? {
                    return Ok(Some(((m.bit_offset / 8).saturating_add(off), t)));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of a dotted member path (`"pending.signal"`) in `struct sname`, and the
    /// member's (concrete) type id.
    fn member(&self, sname: &str, path: &str) -> Result<(u32, u32), LayoutError> {
        let mut ty = self.find_struct(sname)?;
        let mut total = 0;
        for part in path.split('.') {
            let (off, t) = self
                .find_member(ty, part, MAX_DEPTH)
                .map_err(|TooDeep| LayoutError::TooDeep(sname.to_string(), path.to_string()))?
                .ok_or_else(|| LayoutError::NoMember(sname.to_string(), path.to_string()))?;
            total = u32::saturating_add(total, off);
            ty = t;
        }
        Ok((total, ty))
    }

    pub fn offset(&self, sname: &str, path: &str) -> Result<u32, LayoutError> {
        self.member(sname, path).map(|(off, _)| off)
    }

    /// Like [`Self::offset`], `ABSENT` when the kernel lacks the struct or the member; a
    /// malformed BTF ([`LayoutError::TooDeep`]) is still an error.
    fn offset_or_absent(&self, sname: &str, path: &str) -> Result<u32, LayoutError> {
        match self.offset(sname, path) {
            Ok(off) => Ok(off),
            Err(e @ LayoutError::TooDeep(..)) => Err(e),
            Err(_) => Ok(ABSENT),
        }
    }

    /// The size of type `id` in bytes; `None` when unknown, too large, or nested (arrays of
    /// arrays) deeper than [`MAX_DEPTH`].
    fn size_of(&self, id: u32) -> Option<u32> {
        self.size_at(id, MAX_DEPTH)
    }

    fn size_at(&self, id: u32, depth: usize) -> Option<u32> {
        let depth = depth.checked_sub(1)?;
        let t = self.btf.header(self.concrete(id))?;
        match t.kind {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 => {
                Some(t.size_or_type)
            }
            kind::PTR => Some(8),
            kind::ARRAY => {
                let (elem, n) = self.btf.array(&t)?;
                self.size_at(elem, depth)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Values of every enumerator named in `wanted`, across all enums (several kernel enums are
    /// anonymous).
    pub fn enum_values(&self, wanted: &[&str]) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for t in self.btf.headers() {
            for (name_off, value) in self.btf.enumerators(&t) {
                let name = self.btf.name(name_off);
                if wanted.contains(&name) {
                    out.insert(name.to_string(), value);
                }
            }
            if out.len() == wanted.len() {
                break;
            }
        }
        out
    }

    /// The enumerators of `enum name` as (value, name) pairs.
    pub fn enum_named(&self, name: &str) -> Vec<(u64, String)> {
        self.btf
            .find(kind::ENUM, name)
            .next()
            .map(|t| {
                self.btf
                    .enumerators(&t)
                    .into_iter()
                    .map(|(n, v)| (v, self.btf.name(n).to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The id of typedef `btf_trace_<tp>`: the kernel has the tracepoint `tp` in BTF (a
    /// prerequisite for tp_btf).
    pub fn tracepoint_id(&self, tp: &str) -> Option<u32> {
        self.btf
            .find(kind::TYPEDEF, &format!("btf_trace_{tp}"))
            .next()
            .map(|t| t.id)
    }

    /// Whether the kernel has the tracepoint `tp` in BTF (a prerequisite for tp_btf).
    pub fn has_tracepoint(&self, tp: &str) -> bool {
        self.tracepoint_id(tp).is_some()
    }

    /// The id of function `name` in BTF (a prerequisite for fentry).
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.btf.find(kind::FUNC, name).next().map(|t| t.id)
    }

    /// Whether the kernel has a function `name` in BTF (a prerequisite for fentry).
    pub fn has_function(&self, name: &str) -> bool {
        self.function_id(name).is_some()
    }

    /// The type name of parameter `index` of BTF tracepoint `tp` (`btf_trace_<tp>` typedef;
    /// parameter 0 is the context pointer). E.g. `Some("task_struct")` for a struct pointer,
    /// `Some("int")` for an int.
    pub fn tracepoint_param(&self, tp: &str, index: usize) -> Option<String> {
        let ptr = self.btf.header(self.concrete(self.tracepoint_id(tp)?))?;
        if ptr.kind != kind::PTR {
            return None;
        }
        let proto = self.btf.header(self.concrete(ptr.size_or_type))?;
        let param = *self.btf.params(&proto).get(index)?;
        let mut ty = self.btf.header(self.concrete(param))?;
        if ty.kind == kind::PTR {
            ty = self.btf.header(self.concrete(ty.size_or_type))?;
        }
        Some(self.btf.name(ty.name_off).to_string())
    }

    /// Resolves every offset the eBPF programs read. Required layouts (task, mm, memcg) fail the
    /// whole resolution; optional ones stay `ABSENT`.
    pub fn kernel_layout(&self, page_shift: u32) -> Result<KernelLayout, LayoutError> {
        let mut l = KernelLayout::absent();
        l.page_shift = page_shift;
        l.task_pid = self.offset("task_struct", "pid")?;
        l.task_tgid = self.offset("task_struct", "tgid")?;
        l.task_comm = self.offset("task_struct", "comm")?;
        l.task_mm = self.offset("task_struct", "mm")?;
        l.task_signal = self.offset("task_struct", "signal")?;
        l.task_real_cred = self.offset("task_struct", "real_cred")?;
        l.task_cgroups = self.offset_or_absent("task_struct", "cgroups")?;
        l.task_pending_signal = self.offset_or_absent("task_struct", "pending.signal")?;
        l.cred_uid = self.offset("cred", "uid")?;
        l.signal_oom_score_adj = self.offset("signal_struct", "oom_score_adj")?;
        l.signal_shared_pending_signal =
            self.offset_or_absent("signal_struct", "shared_pending.signal")?;
        l.signal_oom_mm = self.offset_or_absent("signal_struct", "oom_mm")?;

        l.mm_total_vm = self.offset("mm_struct", "total_vm")?;
        l.mm_pgtables_bytes = self.offset_or_absent("mm_struct", "pgtables_bytes")?;
        let (rss_off, rss_ty) = self.member("mm_struct", "rss_stat")?;
        self.fill_rss_layout(&mut l, rss_off, rss_ty)?;
        let counters = self.enum_values(&[
            "MM_FILEPAGES",
            "MM_ANONPAGES",
            "MM_SHMEMPAGES",
            "memory_cgrp_id",
            "MEMCG_OOM",
        ]);
        let value = |name: &str| {
            counters
                .get(name)
                .and_then(|v| u32::try_from(*v).ok())
                .ok_or_else(|| LayoutError::NoEnumValue(name.to_string()))
        };
        l.mm_filepages = value("MM_FILEPAGES")?;
        l.mm_anonpages = value("MM_ANONPAGES")?;
        l.mm_shmempages = value("MM_SHMEMPAGES")?;

        // Memory cgroups: optional as a whole (a kernel without CONFIG_MEMCG still OOMs).
        if let (Ok(memory_id), Ok(subsys)) =
            (value("memory_cgrp_id"), self.offset("css_set", "subsys"))
        {
            l.memory_cgrp_id = memory_id;
            l.css_set_subsys = subsys;
            l.css_cgroup = self.offset_or_absent("cgroup_subsys_state", "cgroup")?;
            l.cgroup_kn = self.offset_or_absent("cgroup", "kn")?;
            l.kn_id = self.offset_or_absent("kernfs_node", "id")?;
            l.kn_name = self.offset_or_absent("kernfs_node", "name")?;
            l.kn_parent = match self.offset_or_absent("kernfs_node", "parent")? {
                ABSENT => self.offset_or_absent("kernfs_node", "__parent")?,
                off => off,
            };
            l.memcg_css = self.offset_or_absent("mem_cgroup", "css")?;
            l.memcg_memory = self.offset_or_absent("mem_cgroup", "memory")?;
            l.memcg_memory_events = self.offset_or_absent("mem_cgroup", "memory_events")?;
            l.memcg_oom_event = value("MEMCG_OOM").unwrap_or(ABSENT);
            l.page_counter_usage = self.offset_or_absent("page_counter", "usage")?;
            l.page_counter_max = self.offset_or_absent("page_counter", "max")?;
            l.page_counter_parent = self.offset_or_absent("page_counter", "parent")?;
        }

        l.oom_margin_pages = oom_margin_pages();

        l.oc_memcg = self.offset_or_absent("oom_control", "memcg")?;
        l.oc_gfp_mask = self.offset_or_absent("oom_control", "gfp_mask")?;
        l.oc_order = self.offset_or_absent("oom_control", "order")?;
        l.oc_totalpages = self.offset_or_absent("oom_control", "totalpages")?;
        l.oc_chosen_points = self.offset_or_absent("oom_control", "chosen_points")?;
        l.oc_constraint = self.offset_or_absent("oom_control", "constraint")?;
        Ok(l)
    }

    /// `mm_struct.rss_stat`: an array of `percpu_counter` (>= 6.2) or a `struct mm_rss_stat`
    /// holding `atomic_long_t count[]` (< 6.2).
    fn fill_rss_layout(
        &self,
        l: &mut KernelLayout,
        rss_off: u32,
        rss_ty: u32,
    ) -> Result<(), LayoutError> {
        let no_member = || LayoutError::NoMember("mm_struct".into(), "rss_stat".into());
        let t = self.btf.header(rss_ty).ok_or_else(no_member)?;
        match t.kind {
            kind::ARRAY => {
                let (elem, _) = self.btf.array(&t).ok_or_else(no_member)?;
                let elem = self.concrete(elem);
                l.mm_rss_stat = rss_off;
                l.mm_rss_stride = self.size_of(elem).ok_or_else(no_member)?;
                l.mm_rss_value = match self.btf.header(elem) {
                    Some(e) if e.kind == kind::STRUCT && self.btf.named(&e, "percpu_counter") => {
                        self.offset("percpu_counter", "count")?
                    }
                    _ => 0,
                };
            }
            kind::STRUCT => {
                let (count_off, count_ty) = self.member("mm_rss_stat", "count")?;
                let (elem, _) = self
                    .btf
                    .header(count_ty)
                    .and_then(|a| self.btf.array(&a))
                    .ok_or_else(no_member)?;
                l.mm_rss_stat = rss_off.saturating_add(count_off);
                l.mm_rss_stride = self.size_of(elem).ok_or_else(no_member)?;
                l.mm_rss_value = 0;
            }
            _ => return Err(no_member()),
        }
        Ok(())
    }
}

/// The usage margin for the inferred constraint. The failed charge is at most
/// `1 << PAGE_ALLOC_COSTLY_ORDER` = 8 pages (the kernel does not OOM-kill for costlier orders),
/// and before the OOM the kernel drains every CPU's charge stock (up to MEMCG_CHARGE_BATCH = 64
/// pages each) asynchronously, so usage can sink by that much after the failed check.
pub fn oom_margin_pages() -> u32 {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list_len(s.trim()))
        .unwrap_or(1);
    8 + 64 * cpus
}

/// Number of CPUs in a list such as `0-3,6,8-9`.
fn parse_cpu_list_len(s: &str) -> Option<u32> {
    let mut n = 0;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => n += b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1,
            None => {
                part.parse::<u32>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// `enum oom_constraint` value → the schema's name (`"none"`, `"cpuset"`, `"memory_policy"`,
/// `"memcg"`).
/// The raw stat item numbers the memcg stat tracepoints report for each of
/// `oomtrace_common::STAT_ITEM_SLOTS`, from the `node_stat_item` / `memcg_stat_item` enums;
/// `ABSENT` for an item this kernel lacks.
pub fn stat_items(btf: &KernelBtf) -> [u32; oomtrace_common::STAT_ITEMS] {
    const NAMES: [&str; oomtrace_common::STAT_ITEMS] = [
        "NR_ANON_MAPPED",
        "NR_FILE_PAGES",
        "NR_SHMEM",
        "MEMCG_KMEM",
        "MEMCG_SOCK",
        "NR_SLAB_RECLAIMABLE_B",
        "NR_SLAB_UNRECLAIMABLE_B",
    ];
    let values = btf.enum_values(&NAMES);
    NAMES.map(|n| {
        values
            .get(n)
            .and_then(|v| u32::try_from(*v).ok())
            .unwrap_or(oomtrace_common::ABSENT)
    })
}

pub fn constraint_names(btf: &KernelBtf) -> HashMap<u32, &'static str> {
    btf.enum_named("oom_constraint")
        .into_iter()
        .filter_map(|(v, name)| {
            let label = match name.as_str() {
                "CONSTRAINT_NONE" => "none",
                "CONSTRAINT_CPUSET" => "cpuset",
                "CONSTRAINT_MEMORY_POLICY" => "memory_policy",
                "CONSTRAINT_MEMCG" => "memcg",
                _ => return None,
            };
            Some((u32::try_from(v).ok()?, label))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    fn host_btf() -> Option<KernelBtf> {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: {VMLINUX} not present (kernel without BTF)");
            return None;
        }
        Some(KernelBtf::from_file(Path::new(VMLINUX)).expect("host BTF parses"))
    }

    #[test]
    fn host_layout_resolves_every_required_field() {
        let Some(btf) = host_btf() else { return };
        let l = btf.kernel_layout(12).expect("layout");
        // comm is 16 bytes, so pid and tgid precede it by at least 4 bytes each.
        assert_eq!(
            l.task_tgid,
            l.task_pid + 4,
            "pid_t pid; pid_t tgid; are adjacent"
        );
        for (name, v) in [
            ("css_set_subsys", l.css_set_subsys),
            ("kn_id", l.kn_id),
            ("page_counter_usage", l.page_counter_usage),
            ("page_counter_parent", l.page_counter_parent),
            ("oc_constraint", l.oc_constraint),
            ("memcg_memory_events", l.memcg_memory_events),
        ] {
            assert_ne!(v, ABSENT, "{name} must resolve on this kernel");
        }
        // >= 6.2: struct percpu_counter rss_stat[NR_MM_COUNTERS].
        assert_eq!(
            l.mm_rss_stride,
            btf.size_of(btf.find_struct("percpu_counter").expect("percpu_counter"))
                .expect("size")
        );
        assert_eq!(
            [l.mm_filepages, l.mm_anonpages, l.mm_shmempages],
            [0, 1, 3],
            "MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES"
        );
    }

    #[test]
    fn host_mark_victim_tracepoint_carries_the_task() {
        let Some(btf) = host_btf() else { return };
        assert_eq!(
            btf.tracepoint_param("mark_victim", 1).as_deref(),
            Some("task_struct")
        );
        assert!(btf.has_function("oom_kill_process"));
        let names = constraint_names(&btf);
        assert_eq!(names.get(&3), Some(&"memcg"));
        assert_eq!(names.get(&0), Some(&"none"));
    }

    /// A BTF blob with Linux 6.1's shapes (see tests/fixtures/layout-6.1.c for every offset).
    #[test]
    fn fixture_6_1_layout() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layout-6.1.btf");
        let btf = KernelBtf::from_file(&path).expect("fixture parses");
        let l = btf.kernel_layout(12).expect("layout");
        assert_eq!((l.task_mm, l.task_pid, l.task_tgid), (1000, 1008, 1012));
        assert_eq!(
            (l.task_real_cred, l.task_comm, l.task_signal),
            (1016, 1024, 1040)
        );
        assert_eq!((l.task_pending_signal, l.task_cgroups), (1064, 1072));
        assert_eq!((l.cred_uid, l.signal_shared_pending_signal), (8, 32));
        assert_eq!(l.signal_oom_score_adj, 40);
        // mm_struct's members inside its anonymous struct; < 6.2 counters: atomic_long_t.
        assert_eq!((l.mm_total_vm, l.mm_pgtables_bytes), (200, 280));
        assert_eq!(
            (l.mm_rss_stat, l.mm_rss_stride, l.mm_rss_value),
            (248, 8, 0)
        );
        assert_eq!((l.mm_filepages, l.mm_anonpages, l.mm_shmempages), (0, 1, 3));
        assert_eq!((l.css_set_subsys, l.memory_cgrp_id), (8, 4));
        assert_eq!((l.css_cgroup, l.cgroup_kn, l.kn_id), (0, 24, 8));
        assert_eq!(
            (l.memcg_css, l.memcg_memory, l.memcg_memory_events),
            (0, 64, 144)
        );
        assert_eq!(l.memcg_oom_event, 3);
        assert_eq!(
            (
                l.page_counter_usage,
                l.page_counter_max,
                l.page_counter_parent
            ),
            (0, 64, 72)
        );
        assert_eq!((l.oc_memcg, l.oc_gfp_mask, l.oc_order), (16, 24, 28));
        assert_eq!(
            (l.oc_totalpages, l.oc_chosen_points, l.oc_constraint),
            (32, 48, 56)
        );
        let names = constraint_names(&btf);
        assert_eq!(names.get(&1), Some(&"cpuset"));
        assert_eq!(names.get(&2), Some(&"memory_policy"));
    }

    /// A BTF blob: `types` are (name offset, kind, vlen, size or type, members as (name
    /// offset, type, bit offset)); `strings` starts with the empty name.
    fn btf_blob(types: &[RawType], strings: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for (name, kind, members, size) in types {
            let vlen = u32::try_from(members.len()).expect("few members");
            t.extend_from_slice(&name.to_le_bytes());
            t.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            t.extend_from_slice(&size.to_le_bytes());
            for (n, ty, off) in members {
                for v in [n, ty, off] {
                    t.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        b.extend_from_slice(&[1, 0]); // version, flags
        let tlen = u32::try_from(t.len()).expect("small");
        let slen = u32::try_from(strings.len()).expect("small");
        for v in [24u32, 0, tlen, tlen, slen] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(strings);
        b
    }

    /// A member: (name offset, type id, bit offset).
    type RawMember = (u32, u32, u32);
    /// A type: (name offset, kind, members, size).
    type RawType = (u32, u32, Vec<RawMember>, u32);

    const STRUCT: u32 = 4;
    const ARRAY: u32 = 3;

    /// `struct task_struct { struct { <itself> }; }`: an anonymous struct containing itself.
    #[test]
    fn a_cycle_of_anonymous_structs_is_an_error_not_a_stack_overflow() {
        let blob = btf_blob(
            &[
                (1, STRUCT, vec![(0, 2, 0)], 8),
                (0, STRUCT, vec![(0, 2, 0)], 8),
            ],
            b"\0task_struct\0",
        );
        let btf = KernelBtf::from_bytes(&blob).expect("well-formed BTF");
        let err = btf.offset("task_struct", "pid").expect_err("must fail");
        assert!(
            matches!(err, LayoutError::TooDeep(ref s, ref m) if s == "task_struct" && m == "pid"),
            "{err}"
        );
        assert!(err.to_string().contains("deeper than 32 levels"), "{err}");
        // The whole layout fails with it, rather than guessing.
        assert!(matches!(
            btf.kernel_layout(12),
            Err(LayoutError::TooDeep(..))
        ));
    }

    /// A chain of 40 anonymous structs, the last holding `pid`: too deep, refused.
    #[test]
    fn a_deep_chain_is_refused_and_a_shallow_one_resolves() {
        let chain = |n: u32| {
            let mut types: Vec<RawType> = vec![(1, STRUCT, vec![(0, 2, 64)], 16)];
            for i in 0..n {
                types.push((0, STRUCT, vec![(0, 3 + i, 8)], 16));
            }
            // The innermost: struct { int pid; } at id n + 2, and the int at n + 3.
            types.push((0, STRUCT, vec![(13, n + 3, 32)], 8));
            types.push((17, 1, vec![], 4));
            let mut strings = b"\0task_struct\0pid\0int\0".to_vec();
            strings.truncate(21);
            let mut blob = btf_blob(&types, &strings);
            // The int's encoding word (after its 12-byte header): 32 bits, signed.
            let int_at = blob.len() - strings.len() - 4;
            blob.splice(int_at..int_at, (0x0100_0020u32).to_le_bytes());
            let tlen = u32::from_le_bytes(blob[12..16].try_into().expect("4 bytes")) + 4;
            blob[12..16].copy_from_slice(&tlen.to_le_bytes());
            blob[16..20].copy_from_slice(&tlen.to_le_bytes());
            KernelBtf::from_bytes(&blob).expect("well-formed BTF")
        };
        // 8 bytes (the outer member) + 1 byte per level + 4 bytes (pid) deep.
        assert_eq!(
            chain(3).offset("task_struct", "pid").expect("resolves"),
            8 + 3 + 4
        );
        assert!(matches!(
            chain(40).offset("task_struct", "pid"),
            Err(LayoutError::TooDeep(..))
        ));
    }

    /// An array whose element is itself: its size is unknown, not a stack overflow.
    #[test]
    fn a_cyclic_array_has_no_size() {
        let mut blob = btf_blob(&[(0, ARRAY, vec![], 0)], b"\0");
        // struct btf_array { type, index_type, nelems } after the 12-byte header.
        let arr_at = blob.len() - 1;
        let arr: Vec<u8> = [1u32, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        blob.splice(arr_at..arr_at, arr);
        for at in [12, 16] {
            blob[at..at + 4].copy_from_slice(&24u32.to_le_bytes());
        }
        let btf = KernelBtf::from_bytes(&blob).expect("well-formed BTF");
        assert_eq!(btf.size_of(1), None);
    }

    /// Corrupted kernel BTF (bytes overwritten in the type section, the file cut short): every
    /// look-up start-up makes either resolves or fails, none panics or loops.
    #[test]
    fn corrupted_host_btf_fails_cleanly() {
        let Ok(full) = std::fs::read(VMLINUX) else {
            eprintln!("skipped: {VMLINUX} not readable");
            return;
        };
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..24 {
            let mut data = full.clone();
            if round % 3 == 0 {
                data.truncate(next() as usize % full.len());
            } else {
                for _ in 0..64 {
                    let at = 24 + next() as usize % (full.len() / 2);
                    data[at] = next() as u8;
                }
            }
            let Ok(btf) = KernelBtf::from_bytes(&data) else {
                continue;
            };
            let _ = btf.kernel_layout(12);
            let _ = btf.tracepoint_param("mark_victim", 1);
            let _ = stat_items(&btf);
            let _ = constraint_names(&btf);
            let _ = btf
                .raw()
                .loader_subset(&crate::capture::tracer::loader_type_ids(&btf));
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list_len("0-1"), Some(2));
        assert_eq!(parse_cpu_list_len("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list_len("0"), Some(1));
        assert_eq!(parse_cpu_list_len("x"), None);
    }

    #[test]
    fn invalid_btf_file_names_the_file_and_the_fix() {
        let path = std::env::temp_dir().join(format!("oomtrace-not-btf-{}", std::process::id()));
        std::fs::write(&path, b"this is not BTF").expect("write");
        let err = KernelBtf::from_file(&path).err().expect("must fail");
        let _ = std::fs::remove_file(&path);
        let msg = err.to_string();
        assert!(
            msg.contains(&*path.to_string_lossy())
                && msg.contains("--btf")
                && msg.contains("0xeb9f"),
            "{msg}"
        );
    }

    #[test]
    fn missing_btf_file_names_the_fix() {
        let err = KernelBtf::from_file(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/vmlinux") && msg.contains("--btf"),
            "{msg}"
        );
    }

    #[test]
    fn stat_items_resolve_on_kernels_with_memcg_stat_tracepoints() {
        let Some(btf) = host_btf() else { return };
        if !btf.has_tracepoint("mod_memcg_lruvec_state") {
            eprintln!("skipped: kernel before 6.13 (no memcg stat tracepoints)");
            return;
        }
        let items = stat_items(&btf);
        assert!(
            items.iter().all(|i| *i != oomtrace_common::ABSENT),
            "{items:?}"
        );
        // memcg_stat_item values continue after the node_stat_item ones.
        assert!(items[3] > items[0] && items[4] > items[2], "{items:?}");
        let mut sorted = items.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), items.len());
    }
}
