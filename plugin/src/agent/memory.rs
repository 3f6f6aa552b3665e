//! The agent's own resident memory once capture runs.
//!
//! Starting runs code the pipeline never runs again: parsing the configuration and the
//! kernel's BTF, loading and verifying the eBPF programs, reading /proc. Their pages of the
//! binary (and the embedded eBPF object, 1.3 MB) stay resident until the node runs short of
//! memory, and they are charged to the agent's cgroup. `MADV_PAGEOUT` (Linux 5.4) reclaims the
//! pages of a range that only this process maps; those the pipeline runs fault back in on
//! first use. Measured with `bench scale`: the binary's resident pages go from about 10-11 MiB
//! to 4-5 MiB.

use std::os::unix::fs::MetadataExt;

/// Advises the kernel to reclaim every read-only mapping of the agent's own binary; returns the
/// bytes advised. Kernels before 5.4 refuse (EINVAL): that only costs the memory.
pub fn page_out_binary() -> std::io::Result<u64> {
    let exe = std::fs::metadata("/proc/self/exe")?;
    // The device as /proc/<pid>/maps shows it: major:minor, in hex.
    let device = format!(
        "{:02x}:{:02x}",
        libc::major(exe.dev()),
        libc::minor(exe.dev())
    );
    let inode = exe.ino().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for (start, end) in binary_mappings(&maps, &device, &inode) {
        // SAFETY: a range of this process's own mappings, read-only and file-backed: the
        // advice drops clean pages that fault back in from the file when used.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        advised += (end - start) as u64;
    }
    Ok(advised)
}

/// The address ranges of the read-only mappings of the file `device`/`inode` in `maps` (the
/// text of /proc/<pid>/maps: `start-end perms offset dev inode path`).
fn binary_mappings<'a>(
    maps: &'a str,
    device: &'a str,
    inode: &'a str,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    maps.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        let _offset = fields.next()?;
        if fields.next()? != device || fields.next()? != inode || perms.contains('w') {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        Some((
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_read_only_mappings_of_the_binary_are_chosen() {
        let maps = "\
55d0a1c00000-55d0a1e00000 r--p 00000000 fd:01 1048602 /usr/bin/nri-sysflow
55d0a1e00000-55d0a2800000 r-xp 00200000 fd:01 1048602 /usr/bin/nri-sysflow
55d0a2800000-55d0a2900000 rw-p 00c00000 fd:01 1048602 /usr/bin/nri-sysflow
55d0a3000000-55d0a3100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 1048999 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r--p 00000000 fd:02 1048602 /mnt/other-disk/same-inode
";
        let ranges: Vec<_> = binary_mappings(maps, "fd:01", "1048602").collect();
        assert_eq!(
            ranges,
            vec![
                (0x55d0a1c00000, 0x55d0a1e00000),
                (0x55d0a1e00000, 0x55d0a2800000)
            ]
        );
    }

    /// KiB of this process's binary resident, from /proc/self/smaps.
    fn binary_resident_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_binary = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if line
                .split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-'))
            {
                in_binary = line.ends_with(exe.to_str().unwrap());
            } else if in_binary && let Some(rss) = line.strip_prefix("Rss:") {
                kib += rss.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
            }
        }
        kib
    }

    #[test]
    fn the_test_binary_hands_back_its_pages_and_keeps_running() {
        let before = binary_resident_kib();
        let advised = page_out_binary().expect("Linux 5.4 or later");
        let after = binary_resident_kib();
        assert!(advised > 1 << 20, "{advised} bytes advised");
        // The code running now (this test, the reading of smaps) faulted back in: a few pages.
        assert!(
            after < before / 2,
            "resident {before} KiB before, {after} KiB after"
        );
    }
}
