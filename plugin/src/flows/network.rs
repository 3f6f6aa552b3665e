//! NetworkFlow records: endpoints and protocol the way the collector writes them.

use std::net::{IpAddr, SocketAddr};

use sysflow::{
    Ipv6Bytes, NetworkFlow, Oid,
    encoding::{ipv4_to_int, op, proto},
};

use crate::{probe::records::Socket, state::FlowState};

/// An address as the schema's (ip, port, ip6) fields: IPv4 (and IPv4-mapped IPv6) in the
/// 32-bit field, other IPv6 addresses in the extension field.
fn ip_fields(addr: Option<SocketAddr>) -> (i32, i32, Option<Ipv6Bytes>) {
    let Some(a) = addr else {
        return (0, 0, None);
    };
    let port = i32::from(a.port());
    match a.ip() {
        IpAddr::V4(v4) => (ipv4_to_int(v4), port, None),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (ipv4_to_int(v4), port, None),
            None => (0, port, Some(Ipv6Bytes(v6.octets()))),
        },
    }
}

/// A NetworkFlow: like the collector, source = the connecting side, destination = the
/// accepting side, for both ends of a connection.
pub fn network_flow(
    proc_oid: Oid,
    fd: i32,
    flow: &FlowState,
    end: i64,
    sock: Option<&Socket>,
) -> NetworkFlow {
    let (local, remote) = sock.map(|s| (s.local, s.remote)).unwrap_or((None, None));
    let (src, dst) = if flow.op_flags & op::ACCEPT != 0 {
        (remote, local)
    } else {
        (local, remote)
    };
    let (sip, sport, sip6) = ip_fields(src);
    let (dip, dport, dip6) = ip_fields(dst);
    let protocol = match sock.map(|s| s.protocol) {
        Some(6) => proto::TCP,
        Some(17) => proto::UDP,
        Some(1) => proto::ICMP,
        Some(255) => proto::RAW,
        _ => proto::UNKNOWN,
    };
    NetworkFlow {
        proc_oid,
        ts: flow.ts,
        tid: flow.tid,
        op_flags: flow.op_flags,
        end_ts: end.max(flow.ts),
        sip,
        sport,
        dip,
        dport,
        proto: protocol,
        fd,
        num_r_recv_ops: flow.read_ops,
        num_w_send_ops: flow.write_ops,
        num_r_recv_bytes: flow.read_bytes,
        num_w_send_bytes: flow.write_bytes,
        sip6,
        dip6,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn sock(local: &str, remote: &str) -> Socket {
        Socket {
            family: 10,
            sock_type: 1,
            protocol: 6,
            local: Some(local.parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
        }
    }

    #[test]
    fn the_accepting_side_is_the_destination_and_mapped_addresses_are_ipv4() {
        let oid = Oid {
            create_ts: 1,
            hpid: 2,
        };
        let s = sock("[::ffff:10.0.0.1]:8080", "[::ffff:10.0.0.2]:40000");
        let accepted = FlowState::starting(10, op::ACCEPT | op::READ_RECV, 2);
        let n = network_flow(oid, 5, &accepted, 20, Some(&s));
        assert_eq!(
            (n.sip, n.sport),
            (ipv4_to_int("10.0.0.2".parse().unwrap()), 40000)
        );
        assert_eq!(
            (n.dip, n.dport),
            (ipv4_to_int("10.0.0.1".parse().unwrap()), 8080)
        );
        assert_eq!((n.proto, n.end_ts, n.sip6), (proto::TCP, 20, None));

        let s = sock("[fd00::1]:1234", "[fd00::2]:443");
        let connected = FlowState::starting(30, op::CONNECT, 2);
        let n = network_flow(oid, 6, &connected, 25, Some(&s));
        assert_eq!((n.sip, n.sport, n.dport), (0, 1234, 443));
        let fd00_2: Ipv6Addr = "fd00::2".parse().unwrap();
        assert_eq!(n.dip6, Some(Ipv6Bytes(fd00_2.octets())));
        assert_eq!(n.end_ts, 30, "never ends before it starts");
    }
}
