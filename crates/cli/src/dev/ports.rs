//! Keeping the kernel from lending the stack's ports to client connections.
//!
//! Some of the stack's ports (54329, 50051, 50052) lie inside Linux's ephemeral port range
//! (32768–60999 by default), so any client connection on the machine can take one as its source
//! port, and its TIME-WAIT then makes the server's bind fail with "Address already in use" for
//! up to a minute. As root, `up` reserves them (`net.ipv4.ip_local_reserved_ports`: a runtime
//! setting, gone at reboot, that only stops the kernel from picking them for clients; explicit
//! binds are unaffected); otherwise it prints the command that would.

use std::fs;

const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Reserves those of `ports` that are ephemeral and not reserved yet. Best effort: a failure
/// is reported, not returned.
pub fn reserve(ports: &[u16]) {
    let (Ok(range), Ok(reserved)) = (fs::read_to_string(RANGE), fs::read_to_string(RESERVED))
    else {
        return;
    };
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    let (Some(low), Some(high)) = (bounds.next(), bounds.next()) else {
        return;
    };
    let reserved = reserved.trim();
    let needed = missing(ports, low..=high, reserved);
    if needed.is_empty() {
        return;
    }
    let list = needed
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let value = if reserved.is_empty() {
        list.clone()
    } else {
        format!("{reserved},{list}")
    };
    match fs::write(RESERVED, &value) {
        Ok(()) => println!(
            "==> reserved ports {list} from the kernel's ephemeral range \
             (net.ipv4.ip_local_reserved_ports), so client connections cannot take them"
        ),
        Err(_) => eprintln!(
            "warning: ports {list} are in the ephemeral port range ({low}-{high}): a client \
             connection may hold one and make a bind fail; as root: \
             sysctl -w net.ipv4.ip_local_reserved_ports={value}"
        ),
    }
}

/// The ports inside `ephemeral` that `reserved` ("a-b,c,...") does not cover, sorted.
fn missing(ports: &[u16], ephemeral: std::ops::RangeInclusive<u16>, reserved: &str) -> Vec<u16> {
    let covered = |port: u16| {
        reserved.split(',').filter(|e| !e.is_empty()).any(|entry| {
            let (a, b) = entry.split_once('-').unwrap_or((entry, entry));
            matches!((a.trim().parse::<u16>(), b.trim().parse::<u16>()),
                (Ok(a), Ok(b)) if (a..=b).contains(&port))
        })
    };
    let mut needed: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|port| ephemeral.contains(port) && !covered(*port))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    needed
}

#[cfg(test)]
mod tests {
    use super::missing;

    #[test]
    fn only_ephemeral_unreserved_ports_are_missing() {
        let ports = [54329, 50051, 50052, 7000, 17000, 54329];
        assert_eq!(missing(&ports, 32768..=60999, ""), [50051, 50052, 54329]);
        assert_eq!(
            missing(&ports, 32768..=60999, "50050-50052,54329"),
            [] as [u16; 0]
        );
        assert_eq!(missing(&ports, 32768..=60999, "54329"), [50051, 50052]);
    }
}
