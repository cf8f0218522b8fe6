//! Raw BTF, read in place: the blob's bytes and one offset per type id, nothing else. A type is
//! decoded (and its name looked up) only when a look-up reaches it, so the kernel's 100 000+
//! types cost their file's size plus 4 bytes each, not a parsed tree of every type and string
//! (tens of MB, the agent's start-up peak). Also builds the small BTF the eBPF loader gets
//! ([`RawBtf::loader_subset`]).
//!
//! Format: the kernel's `Documentation/bpf/btf.rst` (`struct btf_header`, `struct btf_type`
//! and the data each kind appends).

/// BTF kinds (`BTF_KIND_*`).
pub mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

const MAGIC: u16 = 0xeb9f;
/// `struct btf_header`'s size in its first version (what the kernel writes).
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;

/// Why a BTF blob cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RawBtfError {
    #[error("not BTF (no 0xeb9f magic, or another byte order)")]
    Magic,
    #[error("BTF header: {0}")]
    Header(&'static str),
    #[error("BTF type {id} at byte {at}: {what}")]
    Type {
        id: u32,
        at: usize,
        what: &'static str,
    },
}

/// A member of a struct or union: (name offset, type id, offset in bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
}

/// One type's `struct btf_type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeHeader {
    pub id: u32,
    pub name_off: u32,
    pub kind: u32,
    pub vlen: u32,
    pub kflag: bool,
    /// `size` (int, struct, union, enum, float, datasec) or `type` (the rest).
    pub size_or_type: u32,
    /// Where the kind's own data starts in the blob.
    data_at: usize,
}

/// A BTF blob and where each of its types starts.
pub struct RawBtf {
    data: Vec<u8>,
    /// Byte offset of type id `i + 1` (id 0 is `void`, never stored).
    offsets: Vec<u32>,
    strings: std::ops::Range<usize>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Bytes of kind-specific data after the 12-byte header.
fn extra_len(kind: u32, vlen: u32) -> Option<usize> {
    let vlen = vlen as usize;
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

impl RawBtf {
    /// Indexes `data` (little-endian BTF, as this machine's kernel writes it).
    pub fn new(data: Vec<u8>) -> Result<Self, RawBtfError> {
        let magic = data.get(0..2).ok_or(RawBtfError::Magic)?;
        if u16::from_le_bytes([magic[0], magic[1]]) != MAGIC {
            return Err(RawBtfError::Magic);
        }
        let field = |at| u32_at(&data, at).ok_or(RawBtfError::Header("truncated"));
        let hdr_len = field(4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(RawBtfError::Header("hdr_len below 24"));
        }
        let section = |off: u32, len: u32| {
            let start = hdr_len.checked_add(off as usize)?;
            let end = start.checked_add(len as usize)?;
            (end <= data.len()).then_some(start..end)
        };
        let types = section(field(8)?, field(12)?).ok_or(RawBtfError::Header("types outside"))?;
        let strings =
            section(field(16)?, field(20)?).ok_or(RawBtfError::Header("strings outside"))?;
        let mut offsets = Vec::new();
        let mut at = types.start;
        while at < types.end {
            let id = u32::try_from(offsets.len() + 1).unwrap_or(u32::MAX);
            let err = |what| RawBtfError::Type { id, at, what };
            if at + TYPE_LEN > types.end {
                return Err(err("truncated header"));
            }
            let info = u32_at(&data, at + 4).ok_or_else(|| err("truncated header"))?;
            let extra =
                extra_len((info >> 24) & 0x1f, info & 0xffff).ok_or_else(|| err("unknown kind"))?;
            let end = at + TYPE_LEN + extra;
            if end > types.end {
                return Err(err("truncated data"));
            }
            offsets.push(u32::try_from(at).map_err(|_| err("beyond 4 GiB"))?);
            at = end;
        }
        offsets.shrink_to_fit();
        Ok(Self {
            data,
            offsets,
            strings,
        })
    }

    /// The highest type id.
    pub fn max_id(&self) -> u32 {
        u32::try_from(self.offsets.len()).unwrap_or(u32::MAX)
    }

    /// Type `id`'s header; `None` for `void` (0) and ids beyond the last.
    pub fn header(&self, id: u32) -> Option<TypeHeader> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_at(&self.data, at + 4)?;
        Some(TypeHeader {
            id,
            name_off: u32_at(&self.data, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kflag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8)?,
            data_at: at + TYPE_LEN,
        })
    }

    /// Every type, by id.
    pub fn headers(&self) -> impl Iterator<Item = TypeHeader> + '_ {
        (1..=self.max_id()).filter_map(|id| self.header(id))
    }

    /// The string at `off` in the string section (empty when out of range or not UTF-8).
    pub fn name(&self, off: u32) -> &str {
        self.name_bytes(off)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn name_bytes(&self, off: u32) -> Option<&[u8]> {
        let start = self.strings.start.checked_add(off as usize)?;
        let s = self.data.get(start..self.strings.end)?;
        Some(&s[..s.iter().position(|b| *b == 0)?])
    }

    /// Whether type `t` is named `name` (without decoding other types' names).
    pub fn named(&self, t: &TypeHeader, name: &str) -> bool {
        self.name_bytes(t.name_off) == Some(name.as_bytes())
    }

    /// Types of kind `kind` named `name`, by id.
    pub fn find<'a>(&'a self, kind: u32, name: &'a str) -> impl Iterator<Item = TypeHeader> + 'a {
        self.headers()
            .filter(move |t| t.kind == kind && self.named(t, name))
    }

    /// The members of a struct or union (empty for other kinds). Bitfield members' offsets
    /// are their bit offsets (`kind_flag` set: the low 24 bits).
    pub fn members(&self, t: &TypeHeader) -> impl Iterator<Item = Member> + '_ {
        let n = match t.kind {
            kind::STRUCT | kind::UNION => t.vlen as usize,
            _ => 0,
        };
        let (at, kflag) = (t.data_at, t.kflag);
        (0..n).filter_map(move |i| {
            let m = at + i * 12;
            let off = u32_at(&self.data, m + 8)?;
            Some(Member {
                name_off: u32_at(&self.data, m)?,
                type_id: u32_at(&self.data, m + 4)?,
                bit_offset: if kflag { off & 0x00ff_ffff } else { off },
            })
        })
    }

    /// An array's (element type, element count).
    pub fn array(&self, t: &TypeHeader) -> Option<(u32, u32)> {
        (t.kind == kind::ARRAY).then(|| {
            Some((
                u32_at(&self.data, t.data_at)?,
                u32_at(&self.data, t.data_at + 8)?,
            ))
        })?
    }

    /// A function prototype's parameter types.
    pub fn params(&self, t: &TypeHeader) -> Vec<u32> {
        if t.kind != kind::FUNC_PROTO {
            return Vec::new();
        }
        (0..t.vlen as usize)
            .filter_map(|i| u32_at(&self.data, t.data_at + i * 8 + 4))
            .collect()
    }

    /// An enum's (name offset, value) pairs (`ENUM` values as unsigned 32-bit, `ENUM64` as
    /// 64-bit).
    pub fn enumerators(&self, t: &TypeHeader) -> Vec<(u32, u64)> {
        let n = t.vlen as usize;
        match t.kind {
            kind::ENUM => (0..n)
                .filter_map(|i| {
                    let e = t.data_at + i * 8;
                    Some((
                        u32_at(&self.data, e)?,
                        u64::from(u32_at(&self.data, e + 4)?),
                    ))
                })
                .collect(),
            kind::ENUM64 => (0..n)
                .filter_map(|i| {
                    let e = t.data_at + i * 12;
                    let lo = u64::from(u32_at(&self.data, e + 4)?);
                    let hi = u64::from(u32_at(&self.data, e + 8)?);
                    Some((u32_at(&self.data, e)?, hi << 32 | lo))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A BTF blob with the same type ids as this one for the types in `keep` (named types
    /// without kind data of their own: typedefs and funcs), and nothing else: every other id
    /// up to the highest kept one is a nameless `void *`, the ids beyond are left out, and the
    /// strings are only the kept names. What the eBPF loader needs: it looks up the ids of the
    /// `btf_trace_<tracepoint>` typedefs (tp_btf) and of functions (fentry/fexit) by name and
    /// kind, and hands the kernel the id; a blob of placeholders parses in a fraction of the
    /// memory the whole kernel BTF takes.
    pub fn loader_subset(&self, keep: &[u32]) -> Vec<u8> {
        let keep: Vec<TypeHeader> = keep
            .iter()
            .filter_map(|id| self.header(*id))
            .filter(|t| matches!(t.kind, kind::TYPEDEF | kind::FUNC))
            .collect();
        let last = keep.iter().map(|t| t.id).max().unwrap_or(0);
        let mut strings = vec![0u8];
        let mut types = Vec::with_capacity(last as usize * TYPE_LEN);
        for id in 1..=last {
            let (name_off, info, size_or_type) = match keep.iter().find(|t| t.id == id) {
                Some(t) => {
                    let off = u32::try_from(strings.len()).unwrap_or(0);
                    strings.extend_from_slice(self.name(t.name_off).as_bytes());
                    strings.push(0);
                    let info = t.kind << 24 | u32::from(t.kflag) << 31 | t.vlen;
                    (off, info, t.size_or_type)
                }
                None => (0, kind::PTR << 24, 0),
            };
            for v in [name_off, info, size_or_type] {
                types.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        let type_len = u32::try_from(types.len()).unwrap_or(u32::MAX);
        let str_len = u32::try_from(strings.len()).unwrap_or(u32::MAX);
        for v in [HEADER_LEN as u32, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_le_bytes().to_vec();
        b.extend_from_slice(&[1, 0]);
        let (t, s) = (types.len() as u32, strings.len() as u32);
        for v in [24u32, 0, t, t, s] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn reads_types_members_and_names() {
        // 1: int (4 bytes), 2: struct s { int a; int b:3 at bit 35 (kflag) }, 3: typedef t -> 2.
        let types = words(&[
            1,
            kind::INT << 24,
            4,
            32,
            5,
            kind::STRUCT << 24 | 1 << 31 | 2,
            8,
            7,
            1,
            0,
            9,
            1,
            3 << 24 | 35,
            11,
            kind::TYPEDEF << 24,
            2,
        ]);
        let b = RawBtf::new(blob(&types, b"\0int\0s\0a\0b\0t\0")).expect("parses");
        assert_eq!(b.max_id(), 3);
        let s = b.find(kind::STRUCT, "s").next().expect("struct s");
        assert_eq!((s.id, s.size_or_type, s.vlen), (2, 8, 2));
        let m: Vec<(String, u32, u32)> = b
            .members(&s)
            .map(|m| (b.name(m.name_off).to_string(), m.type_id, m.bit_offset))
            .collect();
        assert_eq!(m, [("a".into(), 1, 0), ("b".into(), 1, 35)]);
        assert_eq!(
            b.find(kind::TYPEDEF, "t").next().map(|t| t.size_or_type),
            Some(2)
        );
        assert!(b.header(0).is_none() && b.header(4).is_none());
    }

    #[test]
    fn refuses_malformed_blobs() {
        assert_eq!(RawBtf::new(vec![0; 30]).err(), Some(RawBtfError::Magic));
        // A struct claiming a member it does not have.
        let types = words(&[0, kind::STRUCT << 24 | 1, 4]);
        assert!(matches!(
            RawBtf::new(blob(&types, b"\0")),
            Err(RawBtfError::Type {
                id: 1,
                what: "truncated data",
                ..
            })
        ));
        let types = words(&[0, 31 << 24, 4]);
        assert!(matches!(
            RawBtf::new(blob(&types, b"\0")),
            Err(RawBtfError::Type {
                what: "unknown kind",
                ..
            })
        ));
        let mut b = blob(&[], b"\0");
        b[20..24].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            RawBtf::new(b).err(),
            Some(RawBtfError::Header("strings outside"))
        );
    }

    #[test]
    fn loader_subset_keeps_ids_and_names() {
        let types = words(&[
            1,
            kind::INT << 24,
            4,
            32,
            5,
            kind::TYPEDEF << 24,
            1,
            7,
            kind::FUNC << 24 | 1,
            5,
            9,
            kind::TYPEDEF << 24,
            1,
        ]);
        let b = RawBtf::new(blob(&types, b"\0int\0x\0f\0y\0")).expect("parses");
        let sub = RawBtf::new(b.loader_subset(&[3, 2])).expect("subset parses");
        assert_eq!(sub.max_id(), 3, "ids beyond the last kept one are left out");
        let t = sub.header(2).expect("2");
        assert_eq!(
            (t.kind, sub.name(t.name_off), t.size_or_type),
            (kind::TYPEDEF, "x", 1)
        );
        let f = sub.header(3).expect("3");
        assert_eq!((f.kind, sub.name(f.name_off), f.vlen), (kind::FUNC, "f", 1));
        let p = sub.header(1).expect("1");
        assert_eq!((p.kind, p.name_off), (kind::PTR, 0));
    }
}
