//! Tracepoint record layouts from tracefs. The sched tracepoints' layouts change between kernels
//! (e.g. `parent_comm` became a __data_loc string in 6.x), so the offsets the programs use are
//! read from `events/<category>/<name>/format` at load time.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// No tracefs mount was found and mounting one failed.
    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing: {0} \
         (run as root, or mount it: mount -t tracefs nodev /sys/kernel/tracing)"
    )]
    NotMounted(std::io::Error),
    /// A format file could not be read.
    #[error("cannot read tracepoint format {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A field the programs need is missing from a tracepoint record.
    #[error("tracepoint {tracepoint} has no field {field} on this kernel")]
    NoField { tracepoint: String, field: String },
}

/// A mounted tracefs.
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs (mounting it at /sys/kernel/tracing if nothing is mounted).
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
            if Path::new(candidate).join("events").is_dir() {
                return Ok(Self {
                    root: candidate.into(),
                });
            }
        }
        mount_tracefs("/sys/kernel/tracing").map_err(TracefsError::NotMounted)?;
        Ok(Self {
            root: "/sys/kernel/tracing".into(),
        })
    }

    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }

    /// Field name -> byte offset in the tracepoint's record.
    pub fn field_offsets(
        &self,
        category: &str,
        name: &str,
    ) -> Result<HashMap<String, u32>, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(parse_format(&text))
    }

    pub fn field_offset(
        &self,
        category: &str,
        name: &str,
        field: &str,
    ) -> Result<u32, TracefsError> {
        self.field_offsets(category, name)?
            .get(field)
            .copied()
            .ok_or_else(|| TracefsError::NoField {
                tracepoint: format!("{category}/{name}"),
                field: field.into(),
            })
    }
}

fn mount_tracefs(target: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in constant");
    let (source, target, fstype) = (c("nodev"), c(target), c("tracefs"));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Parses lines like `\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;`.
fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse::<u32>().ok();
            }
        }
        if let (Some(decl), Some(offset)) = (decl, offset) {
            // The name is the last word of the declaration, without any array suffix.
            let name = decl
                .split_whitespace()
                .last()
                .unwrap_or("")
                .split('[')
                .next()
                .unwrap_or("");
            if !name.is_empty() {
                fields.insert(name.to_owned(), offset);
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_6_18_sched_process_exit_format() {
        let text = "name: sched_process_exit\nID: 312\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\
            \nprint fmt: \"comm=%s\"\n";
        let f = parse_format(text);
        assert_eq!(f["comm"], 8);
        assert_eq!(f["pid"], 24);
        assert_eq!(f["group_dead"], 32);
        assert_eq!(f["common_type"], 0);
    }

    #[test]
    fn parses_data_loc_fields() {
        let text = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(parse_format(text)["filename"], 8);
    }
}
