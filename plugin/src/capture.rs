//! Capture modes: which kinds of activity of a cgroup's processes the kernel side reports. A
//! bit set of `sysflow_common::capture` bits, spelled as the config and policies spell it:
//! one of the named modes (`off`, `lifecycle`, `process`, `process+file`, `all`,
//! `flows-without-io`), or kinds joined with `+` (`process+network`, `lifecycle+file+io`).

use std::{fmt, str::FromStr};

use sysflow_common::capture as bits;

/// What the kernel side captures for one cgroup.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaptureMode(u32);

/// The named modes, as documented.
const NAMED: [(&str, CaptureMode); 6] = [
    ("off", CaptureMode::OFF),
    ("lifecycle", CaptureMode::LIFECYCLE),
    ("process", CaptureMode::PROCESS),
    ("process+file", CaptureMode(bits::PROCESS | bits::FILE)),
    ("all", CaptureMode::ALL),
    (
        "flows-without-io",
        CaptureMode(bits::PROCESS | bits::FILE | bits::NETWORK),
    ),
];

/// The kinds a mode can be built of with `+`, in the order `Display` writes them.
const KINDS: [(&str, u32); 6] = [
    ("process", bits::PROCESS),
    ("lifecycle", bits::PROCESS_LIFECYCLE),
    ("process-syscalls", bits::PROCESS_SYSCALLS),
    ("file", bits::FILE),
    ("network", bits::NETWORK),
    ("io", bits::IO_COUNTERS),
];

impl CaptureMode {
    pub const OFF: CaptureMode = CaptureMode(bits::OFF);
    /// clone, exec and exit only: no syscall hook.
    pub const LIFECYCLE: CaptureMode = CaptureMode(bits::PROCESS_LIFECYCLE);
    pub const PROCESS: CaptureMode = CaptureMode(bits::PROCESS);
    pub const ALL: CaptureMode = CaptureMode(bits::ALL);

    /// The mode of these kernel bits (bits the kernel does not know are dropped).
    pub const fn from_bits(b: u32) -> CaptureMode {
        CaptureMode(b & bits::ALL)
    }

    /// The bits the kernel side reads.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether the mode includes every kind in `kinds` (`sysflow_common::capture` bits).
    pub const fn includes(self, kinds: u32) -> bool {
        self.0 & kinds == kinds
    }
}

impl Default for CaptureMode {
    /// Everything: the mode without a policy or configuration saying otherwise.
    fn default() -> Self {
        CaptureMode::ALL
    }
}

/// A capture mode that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown capture mode {0:?}: expected off, lifecycle, process, process+file, all or flows-without-io, or kinds joined with + (process, lifecycle, process-syscalls, file, network, io)"
)]
pub struct UnknownCaptureMode(pub String);

impl FromStr for CaptureMode {
    type Err = UnknownCaptureMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, mode)) = NAMED.iter().find(|(name, _)| *name == s) {
            return Ok(*mode);
        }
        let mut mode = 0;
        for term in s.split('+') {
            let named = NAMED
                .iter()
                .find(|(name, _)| *name == term)
                .map(|(_, m)| m.0);
            let kind = KINDS
                .iter()
                .find(|(name, _)| *name == term)
                .map(|(_, b)| *b);
            match named.or(kind) {
                Some(b) => mode |= b,
                None => return Err(UnknownCaptureMode(s.into())),
            }
        }
        Ok(CaptureMode(mode))
    }
}

impl TryFrom<String> for CaptureMode {
    type Error = UnknownCaptureMode;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for CaptureMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CaptureMode {
    /// The mode's name, or its kinds joined with `+`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = NAMED.iter().find(|(_, m)| m == self) {
            return f.write_str(name);
        }
        let mut rest = self.0;
        let mut first = true;
        for (name, b) in KINDS {
            if rest & b == b && rest & b != 0 {
                rest &= !b;
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaptureMode({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_modes_have_the_documented_bits() {
        let parse = |s: &str| s.parse::<CaptureMode>().unwrap().bits();
        assert_eq!(parse("off"), 0);
        assert_eq!(parse("lifecycle"), bits::PROCESS_LIFECYCLE);
        assert_eq!(
            parse("lifecycle") & bits::SYSCALL_KINDS,
            0,
            "no syscall hook"
        );
        assert_eq!(parse("process"), bits::PROCESS);
        assert_eq!(parse("process+file"), bits::PROCESS | bits::FILE);
        assert_eq!(parse("all"), bits::ALL);
        assert_eq!(parse("flows-without-io") & bits::IO_COUNTERS, 0);
        assert_eq!(parse("process+network"), bits::PROCESS | bits::NETWORK);
        assert_eq!(
            parse("lifecycle+file+io"),
            bits::PROCESS_LIFECYCLE | bits::FILE | bits::IO_COUNTERS
        );
    }

    #[test]
    fn every_mode_prints_as_text_that_parses_back_to_it() {
        for b in 0..=bits::ALL {
            let mode = CaptureMode::from_bits(b);
            let text = mode.to_string();
            assert_eq!(text.parse::<CaptureMode>(), Ok(mode), "{b:#x} -> {text}");
        }
        assert_eq!(CaptureMode::ALL.to_string(), "all");
        assert_eq!(
            CaptureMode::from_bits(bits::PROCESS_SYSCALLS | bits::NETWORK).to_string(),
            "process-syscalls+network"
        );
    }

    #[test]
    fn unknown_modes_say_what_is_accepted() {
        let err = "everything".parse::<CaptureMode>().unwrap_err();
        assert_eq!(err, UnknownCaptureMode("everything".into()));
        assert!(err.to_string().starts_with(
            "unknown capture mode \"everything\": expected off, lifecycle, process, process+file, all or flows-without-io"
        ));
        assert!("process+".parse::<CaptureMode>().is_err());
        assert!("".parse::<CaptureMode>().is_err());
    }
}
