//! Where deliveries may go.
//!
//! Loopback and private addresses are Herald's main use and are allowed. What is refused
//! by default is what no subscriber legitimately is and what an attacker would aim a hub
//! at: link-local addresses and the other homes of cloud metadata services (169.254.169.254,
//! fd00:ec2::254, 100.100.100.200, 192.0.0.192), unspecified, multicast and broadcast
//! addresses, and the hub's own listening address (a loop). An IPv6 address that carries an
//! IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the IPv4 address it reaches.
//! `--deny-target` and `--allow-target` adjust the first part; a loop is always refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use thiserror::Error;
use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetRefused {
    #[error(
        "{ip} is link-local (169.254.0.0/16, fe80::/10), where cloud metadata services live; Herald never delivers there (see --allow-target)"
    )]
    LinkLocal { ip: IpAddr },
    #[error(
        "{ip} is a cloud metadata service address; Herald never delivers there (see --allow-target)"
    )]
    Metadata { ip: IpAddr },
    #[error("{ip} is an unspecified address, not a subscriber")]
    Unspecified { ip: IpAddr },
    #[error("{ip} is a multicast address, not a subscriber")]
    Multicast { ip: IpAddr },
    #[error("{ip} is the broadcast address, not a subscriber")]
    Broadcast { ip: IpAddr },
    #[error("{ip} is in {net}, which --deny-target refuses")]
    Denied { ip: IpAddr, net: IpNet },
    #[error("{addr} is this hub's own address; delivering there would loop")]
    OwnAddress { addr: SocketAddr },
}

#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Always refused, checked first.
    pub deny: Vec<IpNet>,
    /// Allowed even where the defaults refuse (but never the hub itself).
    pub allow: Vec<IpNet>,
    /// Where this hub listens, once bound.
    pub own_addr: Option<SocketAddr>,
}

impl TargetPolicy {
    /// Checks one address a delivery would connect to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), TargetRefused> {
        let ip = reached(ip);
        if let Some(net) = self.deny.iter().find(|net| net.contains(&ip)) {
            return Err(TargetRefused::Denied { ip, net: *net });
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match ip {
            ip if METADATA.contains(&ip) => Err(TargetRefused::Metadata { ip }),
            IpAddr::V4(v4) if v4.is_link_local() => Err(TargetRefused::LinkLocal { ip }),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Err(TargetRefused::LinkLocal { ip }),
            // All of 0.0.0.0/8 means "this host" or nothing; connecting to it reaches
            // loopback on Linux, so it is no way to name a subscriber.
            IpAddr::V4(v4) if v4.octets()[0] == 0 => Err(TargetRefused::Unspecified { ip }),
            IpAddr::V6(v6) if v6.is_unspecified() => Err(TargetRefused::Unspecified { ip }),
            IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Err(TargetRefused::Broadcast { ip }),
            ip if ip.is_multicast() => Err(TargetRefused::Multicast { ip }),
            _ => Ok(()),
        }
    }

    /// Checks a target URL before it is registered: its host when it is an IP literal
    /// (however it was spelled; the URL parser has already normalised decimal, hex and
    /// octal IPv4), and whether it points back at the hub. Host names are checked again,
    /// address by address, when a delivery resolves them.
    pub fn check_url(&self, url: &Url) -> Result<(), TargetRefused> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(Host::Domain(_)) | None => None,
        };
        if let Some(ip) = ip {
            self.check_ip(ip)?;
        }
        let loopback = match (ip, url.host()) {
            (Some(ip), _) => reached(ip).is_loopback(),
            (None, Some(Host::Domain(name))) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
            _ => false,
        };
        if let (Some(own), Some(port)) = (self.own_addr, url.port_or_known_default()) {
            let same_ip = ip.is_some_and(|ip| reached(ip) == reached(own.ip()));
            let reaches_own =
                same_ip || (loopback && (own.ip().is_loopback() || own.ip().is_unspecified()));
            if port == own.port() && reaches_own {
                return Err(TargetRefused::OwnAddress { addr: own });
            }
        }
        Ok(())
    }
}

impl TargetPolicy {
    /// Whether connecting to `addr` reaches this hub's own listening socket.
    pub fn is_own(&self, addr: SocketAddr) -> bool {
        let Some(own) = self.own_addr else {
            return false;
        };
        let (ip, own_ip) = (reached(addr.ip()), reached(own.ip()));
        addr.port() == own.port()
            && (ip == own_ip
                || (own_ip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
    }
}

/// Metadata services outside link-local space: AWS's IPv6 one, Alibaba Cloud's and
/// Oracle Cloud's.
const METADATA: [IpAddr; 3] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
];

/// The address a connection to `ip` reaches: the IPv4 address inside an IPv6 one that
/// carries it (`::ffff:a.b.c.d` mapped, `::a.b.c.d` compatible, `64:ff9b::a.b.c.d` NAT64,
/// `2002:aabb:ccdd::` 6to4), since a gateway or the kernel takes it there.
fn reached(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip.to_canonical() else {
        return ip.to_canonical();
    };
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    };
    match s {
        // IPv4-compatible, but not :: and ::1, which are IPv6's own.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => v4(hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => v4(hi, lo),
        [0x2002, hi, lo, ..] => v4(hi, lo),
        _ => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::address::parse_target;

    fn policy() -> TargetPolicy {
        TargetPolicy {
            own_addr: Some("127.0.0.1:3000".parse().unwrap()),
            ..TargetPolicy::default()
        }
    }

    fn check(policy: &TargetPolicy, address: &str) -> Result<(), String> {
        let url = parse_target(address).map_err(|e| format!("unparsable: {e}"))?;
        policy.check_url(&url).map_err(|e| e.to_string())
    }

    #[test]
    fn spellings_of_allowed_and_refused_targets() {
        let policy = policy();
        let allowed = [
            "127.0.0.1:8080",
            "localhost:9000",
            "10.1.2.3:80",
            "192.168.0.10:443",
            "172.16.5.5:80",
            "[::1]:8080",
            "[fd00::1]:80",
            "[fd00:ec2::253]:80",
            "100.100.100.201:80",
            "[64:ff9b::10.0.0.1]:80",
            "[2002:0a00:0001::1]:80",
            "2130706433:8080", // decimal 127.0.0.1
            "http://0x7f000001:8080/x",
            "api.internal:80",
            "127.0.0.1:3001",
            "http://127.0.0.1:3000/event".replace("3000", "3002").leak(),
        ];
        for address in allowed {
            assert_eq!(check(&policy, address), Ok(()), "{address}");
        }
        let refused = [
            ("169.254.169.254:80", "link-local"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("2852039166:80", "link-local"), // decimal 169.254.169.254
            ("http://0xa9fea9fe/", "link-local"), // hex
            ("http://0251.0376.0251.0376/", "link-local"), // octal
            ("http://0xa9.254.0251.254/", "link-local"), // mixed
            ("[::ffff:169.254.169.254]:80", "link-local"), // IPv4-mapped IPv6
            ("[::ffff:a9fe:a9fe]:80", "link-local"),
            ("[fe80::1]:80", "link-local"),
            ("[fd00:ec2::254]:80", "metadata"),
            ("100.100.100.200:80", "metadata"),
            ("192.0.0.192:80", "metadata"),
            ("[64:ff9b::169.254.169.254]:80", "link-local"), // NAT64
            ("[64:ff9b::a9fe:a9fe]:80", "link-local"),
            ("[2002:a9fe:a9fe::1]:80", "link-local"), // 6to4
            ("[::169.254.169.254]:80", "link-local"), // IPv4-compatible
            ("[64:ff9b::100.100.100.200]:80", "metadata"),
            ("[2002:c000:00c0::]:80", "metadata"),
            ("[64:ff9b::127.0.0.1]:3000", "own address"),
            ("[::127.0.0.1]:3000", "own address"),
            ("0.0.0.0:80", "unspecified"),
            ("0:80", "unspecified"),
            ("[::]:80", "unspecified"),
            ("224.0.0.1:80", "multicast"),
            ("[ff02::1]:80", "multicast"),
            ("255.255.255.255:80", "broadcast"),
            ("127.0.0.1:3000", "own address"),
            ("localhost:3000", "own address"),
            ("localhost.:3000", "own address"),
            ("api.localhost:3000", "own address"),
            ("http://[::ffff:127.0.0.1]:3000/sendMessage", "own address"),
        ];
        for (address, why) in refused {
            let err = check(&policy, address).expect_err(address);
            assert!(err.contains(why), "{address}: {err}");
        }
    }

    #[test]
    fn allow_and_deny_lists_adjust_the_defaults() {
        let policy = TargetPolicy {
            allow: vec!["169.254.10.0/24".parse().unwrap()],
            deny: vec!["10.0.0.0/8".parse().unwrap()],
            ..policy()
        };
        assert_eq!(check(&policy, "169.254.10.7:80"), Ok(()));
        assert!(check(&policy, "169.254.169.254:80").is_err());
        let err = check(&policy, "10.9.9.9:80").unwrap_err();
        assert!(err.contains("--deny-target"), "{err}");
        // Not even an allow list makes a loop acceptable.
        let loop_policy = TargetPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..policy
        };
        assert!(check(&loop_policy, "127.0.0.1:3000").is_err());
    }
}
