use super::*;

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain #[repr(C)] value.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
}

fn open_record(path: &[u8]) -> Vec<u8> {
    let r = OpenRecord {
        header: RecordHeader {
            kind: RecordKind::Open as u16,
            size: (size_of::<OpenRecord>() + path.len()) as u32,
            tgid: 7,
            tid: 8,
            ret: 3,
            ..Default::default()
        },
        path_len: path.len() as u16,
        flags: 0o1101,
        syscall: sysflow_common::open_syscall::OPENAT,
        dirfd: -100,
        ..Default::default()
    };
    let mut b = bytes_of(&r);
    b.extend_from_slice(path);
    b
}

#[test]
fn decodes_an_open_with_its_path() {
    let Record::Open(open) = decode(&open_record(b"/tmp/x")).unwrap() else {
        panic!("not an open");
    };
    assert_eq!(open.path, "/tmp/x");
    assert_eq!(open.flags, 0o1101);
    assert_eq!(open.common.ret, 3);
    assert_eq!(open.syscall, OpenSyscall::Openat);
}

#[test]
fn truncated_and_corrupt_records_are_errors_not_panics() {
    let good = open_record(b"/tmp/some/path");
    for cut in 0..good.len() {
        let _ = decode(&good[..cut]);
    }
    assert!(matches!(
        decode(&good[..size_of::<OpenRecord>() + 2]),
        Err(DecodeError::StringsOverrun { .. })
    ));
    let mut bad = good.clone();
    bad[0] = 99;
    assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(99)));
    // Flip every bit once: never a panic.
    for i in 0..good.len() * 8 {
        let mut b = good.clone();
        b[i / 8] ^= 1 << (i % 8);
        let _ = decode(&b);
    }
}

#[test]
fn a_close_without_counters_is_a_short_record_and_a_counted_one_must_be_whole() {
    let head = std::mem::offset_of!(FdReportRecord, counters);
    let mut r = FdReportRecord {
        header: RecordHeader {
            kind: RecordKind::FdReport as u16,
            size: head as u32,
            tgid: 9,
            ..Default::default()
        },
        fd: 4,
        reason: sysflow_common::report_reason::CLOSE,
        ..Default::default()
    };
    let short = bytes_of(&r)[..head].to_vec();
    match decode(&short).unwrap() {
        Record::Close(c) => assert_eq!((c.fd, c.counters, c.common.tgid), (4, None, 9)),
        other => panic!("{other:?}"),
    }
    r.has_counters = 1;
    r.counters.write_bytes = 300;
    r.header.size = size_of::<FdReportRecord>() as u32;
    let whole = bytes_of(&r);
    match decode(&whole).unwrap() {
        Record::Close(c) => assert_eq!(c.counters.unwrap().write_bytes, 300),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode(&whole[..head + 8]),
        Err(DecodeError::Short { .. })
    ));
}

#[test]
fn exit_status_is_split_into_code_and_signal() {
    let mk = |status| {
        let r = ExitRecord {
            header: RecordHeader {
                kind: RecordKind::Exit as u16,
                size: size_of::<ExitRecord>() as u32,
                ..Default::default()
            },
            wait_status: status,
            group_dead: 1,
            _pad: [0; 3],
        };
        match decode(&bytes_of(&r)).unwrap() {
            Record::Exit(e) => (e.exit_code, e.signal),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(mk(7 << 8), (Some(7), None));
    assert_eq!(mk(9), (None, Some(9)));
}
