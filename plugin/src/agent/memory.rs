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

    /// Read-only data of the test binary that only the test below reads (other tests run
    /// beside it in this process and fault their own code back in meanwhile).
    #[repr(align(4096))]
    struct Ballast([u8; 1 << 20]);
    static BALLAST: Ballast = Ballast([7; 1 << 20]);

    /// How many of the pages of `range` this process has present, from /proc/self/pagemap
    /// (bit 63 of each page's entry).
    fn present_pages(range: &[u8]) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let page = 4096;
        let first = range.as_ptr() as usize / page;
        let last = (range.as_ptr() as usize + range.len() - 1) / page;
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        pagemap.seek(SeekFrom::Start(first as u64 * 8)).unwrap();
        let mut entries = vec![0u8; (last - first + 1) * 8];
        pagemap.read_exact(&mut entries).unwrap();
        entries
            .chunks(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count()
    }

    #[test]
    fn the_test_binary_hands_back_its_pages_and_keeps_running() {
        // On one CPU: a page just faulted in waits in that CPU's batch before it joins the
        // LRU lists, and the advice drains only its own CPU's batch.
        // SAFETY: plain syscalls on this thread's affinity mask, which lives on the stack.
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::sched_getaffinity(0, size_of_val(&all), &mut all) },
            0
        );
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(libc::sched_getcpu() as usize, &mut one) };
        assert_eq!(
            unsafe { libc::sched_setaffinity(0, size_of_val(&one), &one) },
            0
        );
        let ballast = std::hint::black_box(&BALLAST.0);
        let touched: u64 = ballast.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert_eq!(touched, 7 * 256);
        assert_eq!(present_pages(ballast), 256);
        let advised = page_out_binary().expect("Linux 5.4 or later");
        assert!(advised > 1 << 20, "{advised} bytes advised");
        // The page cache holds the file in folios of up to the readahead size (128 KiB here):
        // the one at each end of the ballast may hold data other tests read, and stay. With
        // a 256 KiB ballast, 13 and 16 of its 64 pages stayed in the suite with one build of
        // the test binary, and none with others.
        let stayed = present_pages(ballast);
        assert!(stayed <= 64, "{stayed} of 256 pages still present");
        // Read again, from the file.
        assert!(ballast.iter().all(|&b| b == 7));
        assert_eq!(present_pages(ballast), 256);
        assert_eq!(
            unsafe { libc::sched_setaffinity(0, size_of_val(&all), &all) },
            0
        );
    }
}
