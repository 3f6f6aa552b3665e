//! Kernel struct field offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! The eBPF programs are written in Rust, which emits no CO-RE relocations, so the offsets they
//! need are looked up here and handed to them at load time. This is a small reader of the BTF
//! type section: enough to find a struct by name and walk to a (possibly nested, possibly
//! anonymous) member. aya-obj parses BTF too, but keeps its type accessors crate-private.

use std::collections::HashMap;

use sysflow_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The data is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// A struct the programs need is not in this kernel's BTF.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// A field the programs need is not in the struct.
    #[error("kernel BTF: struct {structure} has no field {field}")]
    NoField { structure: String, field: String },
    /// The field is a bitfield, which the programs cannot read by byte offset.
    #[error("kernel BTF: {structure}.{field} is a bitfield on this kernel")]
    Bitfield { structure: String, field: String },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct.
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: u32,
    /// For modifiers, typedefs and pointers: the referenced type.
    referenced: u32,
    members: Vec<Member>,
}

/// The parsed type section of a BTF blob.
pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id (0 is void).
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("cut short at byte {at}")))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX_BTF).map_err(|source| BtfError::Read {
            path: VMLINUX_BTF.into(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(0xeb9f) {
            return Err(BtfError::Malformed(
                "bad magic (not little-endian BTF)".into(),
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?
            .to_vec();
        if types_end > data.len() {
            return Err(BtfError::Malformed("type section out of bounds".into()));
        }
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            referenced: 0,
            members: Vec::new(),
        }];
        let mut at = types_start;
        while at < types_end {
            let name = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let size_or_type = u32_at(data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(data, m + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name: u32_at(data, m)?,
                            type_id: u32_at(data, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                other => {
                    return Err(BtfError::Malformed(format!(
                        "unknown type kind {other} at type {}",
                        types.len()
                    )));
                }
            }
            types.push(Type {
                kind,
                name,
                referenced: size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                let name = btf.string(ty.name).to_owned();
                // Keep the first (complete) definition; later duplicates come from modules.
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referenced
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Bit offset and bitfield size of `field` inside the struct/union `ty`, looking through
    /// anonymous struct and union members.
    fn find_member(&self, ty: &Type, field: &str) -> Option<(u32, u32, u32)> {
        for m in &ty.members {
            if m.name != 0 && self.string(m.name) == field {
                return Some((m.bit_offset, m.bitfield_size, m.type_id));
            }
        }
        for m in &ty.members {
            if m.name == 0
                && let Some(inner) = self.resolve(m.type_id)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((bits, size, type_id)) = self.find_member(inner, field)
            {
                return Some((m.bit_offset + bits, size, type_id));
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. `["__sk_common", "skc_family"]`) inside `struct structure`.
    pub fn member_offset(&self, structure: &str, path: &[&str]) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(structure)
            .ok_or_else(|| BtfError::NoStruct(structure.into()))?;
        let mut ty = &self.types[id as usize];
        let mut bits = 0;
        for (i, field) in path.iter().enumerate() {
            let no_field = || BtfError::NoField {
                structure: structure.into(),
                field: path.join("."),
            };
            let (offset, bitfield_size, type_id) =
                self.find_member(ty, field).ok_or_else(no_field)?;
            if bitfield_size != 0 || offset % 8 != 0 {
                return Err(BtfError::Bitfield {
                    structure: structure.into(),
                    field: path.join("."),
                });
            }
            bits += offset;
            if i + 1 < path.len() {
                ty = self.resolve(type_id).ok_or_else(no_field)?;
            }
        }
        Ok(bits / 8)
    }

    /// Every offset the programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let f = |s: &str, p: &[&str]| self.member_offset(s, p);
        let sk = |field: &str| self.member_offset("sock", &["__sk_common", field]);
        let (regs, task_compat_word, task_compat_mask) = self.syscall_registers()?;
        Ok(KernelOffsets {
            task_group_leader: f("task_struct", &["group_leader"])?,
            task_real_parent: f("task_struct", &["real_parent"])?,
            task_tgid: f("task_struct", &["tgid"])?,
            task_start_boottime: f("task_struct", &["start_boottime"])?,
            task_exit_code: f("task_struct", &["exit_code"])?,
            task_files: f("task_struct", &["files"])?,
            task_mm: f("task_struct", &["mm"])?,
            files_fdt: f("files_struct", &["fdt"])?,
            fdtable_max_fds: f("fdtable", &["max_fds"])?,
            fdtable_fd: f("fdtable", &["fd"])?,
            fdtable_open_fds: f("fdtable", &["open_fds"])?,
            file_f_inode: f("file", &["f_inode"])?,
            file_private_data: f("file", &["private_data"])?,
            inode_i_mode: f("inode", &["i_mode"])?,
            inode_i_ino: f("inode", &["i_ino"])?,
            inode_i_sb: f("inode", &["i_sb"])?,
            super_block_s_dev: f("super_block", &["s_dev"])?,
            socket_sk: f("socket", &["sk"])?,
            sock_family: sk("skc_family")?,
            sock_rcv_saddr: sk("skc_rcv_saddr")?,
            sock_daddr: sk("skc_daddr")?,
            sock_num: sk("skc_num")?,
            sock_dport: sk("skc_dport")?,
            sock_v6_daddr: sk("skc_v6_daddr")?,
            sock_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
            sock_protocol: f("sock", &["sk_protocol"])?,
            sock_type: f("sock", &["sk_type"])?,
            mm_arg_start: f("mm_struct", &["arg_start"])?,
            mm_arg_end: f("mm_struct", &["arg_end"])?,
            task_pid: f("task_struct", &["pid"])?,
            task_flags: f("task_struct", &["flags"])?,
            task_cgroups: f("task_struct", &["cgroups"])?,
            css_set_dfl_cgrp: f("css_set", &["dfl_cgrp"])?,
            cgroup_kn: f("cgroup", &["kn"])?,
            kernfs_node_id: f("kernfs_node", &["id"])?,
            linux_binprm_filename: f("linux_binprm", &["filename"])?,
            regs_nr: regs[0],
            regs_args: [regs[1], regs[2], regs[3], regs[4], regs[5], regs[6]],
            task_compat_word,
            task_compat_mask,
        })
    }

    /// Where this architecture's `struct pt_regs` keeps the syscall number and arguments, and
    /// how a compat (32-bit) syscall is told apart.
    #[cfg(target_arch = "x86_64")]
    fn syscall_registers(&self) -> Result<([u32; 7], u32, u32), BtfError> {
        let r = |field: &str| self.member_offset("pt_regs", &[field]);
        // TS_COMPAT in thread_info.status (arch/x86/include/asm/thread_info.h).
        const TS_COMPAT: u32 = 0x0002;
        Ok((
            [
                r("orig_ax")?,
                r("di")?,
                r("si")?,
                r("dx")?,
                r("r10")?,
                r("r8")?,
                r("r9")?,
            ],
            self.member_offset("task_struct", &["thread_info", "status"])?,
            TS_COMPAT,
        ))
    }

    #[cfg(target_arch = "aarch64")]
    fn syscall_registers(&self) -> Result<([u32; 7], u32, u32), BtfError> {
        // x0 holds the return value at exit; the first argument stays in orig_x0.
        let regs = self.member_offset("pt_regs", &["regs"])?;
        let x = |i: u32| regs + 8 * i;
        // TIF_32BIT in thread_info.flags (arch/arm64/include/asm/thread_info.h).
        const TIF_32BIT: u32 = 1 << 22;
        Ok((
            [
                self.member_offset("pt_regs", &["syscallno"])?,
                self.member_offset("pt_regs", &["orig_x0"])?,
                x(1),
                x(2),
                x(3),
                x(4),
                x(5),
            ],
            self.member_offset("task_struct", &["thread_info", "flags"])?,
            TIF_32BIT,
        ))
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn syscall_registers(&self) -> Result<([u32; 7], u32, u32), BtfError> {
        Err(BtfError::NoStruct(
            "pt_regs layout for this architecture (x86_64 and aarch64 are supported)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF blob: struct outer { int a; union { int b; struct { int c; }; }; }
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0".to_vec();
        let (int, outer, a, b, c) = (1u32, 5u32, 11u32, 13u32, 15u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[int, KIND_INT << 24, 4, 32]);
        // 2: anonymous struct { int c; }
        push(&[0, (KIND_STRUCT << 24) | 1, 4, c, 1, 0]);
        // 3: anonymous union { int b; struct{c}; }
        push(&[0, (KIND_UNION << 24) | 2, 4, b, 1, 0, 0, 2, 0]);
        // 4: struct outer { int a; union @32 }
        push(&[outer, (KIND_STRUCT << 24) | 2, 8, a, 1, 0, 0, 3, 32]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xeb9fu16.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_structs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", &["a"]).unwrap(), 0);
        assert_eq!(btf.member_offset("outer", &["b"]).unwrap(), 4);
        assert_eq!(btf.member_offset("outer", &["c"]).unwrap(), 4);
        assert!(matches!(
            btf.member_offset("outer", &["zz"]),
            Err(BtfError::NoField { .. })
        ));
        assert!(matches!(
            btf.member_offset("nope", &["a"]),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_garbage_and_truncation_without_panicking() {
        assert!(Btf::parse(b"hello").is_err());
        let blob = sample();
        for cut in 0..blob.len() {
            let _ = Btf::parse(&blob[..cut]);
        }
    }

    #[test]
    fn running_kernel_has_every_offset_the_programs_need() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        };
        let o = btf.kernel_offsets().unwrap();
        // skc_family sits right after the address pair and hash/port words of sock_common.
        assert_eq!(o.sock_family, 16);
        assert!(o.task_start_boottime > 0 && o.task_files > 0);
        assert_ne!(o.mm_arg_start, o.mm_arg_end);
        // The x86_64 pt_regs layout is ptrace ABI: orig_ax is word 15, di word 14, r10 word 7.
        #[cfg(target_arch = "x86_64")]
        assert_eq!((o.regs_nr, o.regs_args[0], o.regs_args[3]), (120, 112, 56));
    }
}
