//! Pure parsers for the text and JSON the collectors gather: iptables-save,
//! `nft -j list ruleset`, `conntrack -L`, /proc/net/tcp, BIRD configs,
//! systemd-style INI files and kubelet flags.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::desired::Family;

mod firewall;

pub use firewall::{
    conntrack, iptables_save, nft_ruleset, CtEntry, Firewall, IfMatch, MarkRule, MasqRule,
    NatChain, NatStep, IPTABLES_NAT_PRIO, MASQ_BIT,
};

/// Listening sockets (state 0A) of /proc/net/tcp or tcp6: `(addr, port, inode)`.
pub fn proc_net_tcp(text: &str, family: Family) -> Vec<(IpAddr, u16, u64)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 10 || w[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = w[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let Ok(inode) = w[9].parse::<u64>() else {
            continue;
        };
        let ip = match family {
            // The kernel prints each 32-bit word in host (little-endian) order.
            Family::Ipv4 => match u32::from_str_radix(addr, 16) {
                Ok(v) => IpAddr::V4(Ipv4Addr::from(v.swap_bytes())),
                Err(_) => continue,
            },
            Family::Ipv6 => {
                if addr.len() != 32 {
                    continue;
                }
                let mut bytes = [0u8; 16];
                let mut ok = true;
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    match u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16) {
                        Ok(v) => chunk.copy_from_slice(&v.swap_bytes().to_be_bytes()),
                        Err(_) => ok = false,
                    }
                }
                if !ok {
                    continue;
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            }
        };
        out.push((ip, port, inode));
    }
    out
}

/// A `protocol kernel` block of a BIRD config: which kernel table it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSync {
    /// Protocol name, or `kernelN` when unnamed.
    pub name: String,
    pub table: u32,
    /// `None`: no channel named (BIRD 1.x: the binary's family).
    pub family: Option<Family>,
    /// `export none` (or no export at all in BIRD 2): it never writes routes.
    pub exports: bool,
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else if rest.starts_with('#') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            out.push('\n');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The `protocol kernel` blocks of a BIRD 1.x or 2.x config (includes are not followed).
pub fn bird_kernel_syncs(config: &str) -> Vec<KernelSync> {
    let text = strip_comments(config);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    let mut n = 0;
    while let Some(pos) = rest.find("protocol") {
        let after = &rest[pos + "protocol".len()..];
        rest = after;
        let head: Vec<&str> = after.split_whitespace().take(2).collect();
        if head.first().map(|w| w.trim_end_matches('{')) != Some("kernel") {
            continue;
        }
        n += 1;
        let Some(open) = after.find('{') else { break };
        let name = head
            .get(1)
            .filter(|w| !w.starts_with('{'))
            .map_or_else(|| format!("kernel{n}"), |w| w.to_string());
        // The block up to its matching brace.
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let block = &after[open + 1..end];
        let words: Vec<&str> = block
            .split(|c: char| c.is_whitespace() || c == ';' || c == '{' || c == '}')
            .filter(|w| !w.is_empty())
            .collect();
        let mut table = 254;
        let mut family = None;
        let mut exports = false;
        for (i, w) in words.iter().enumerate() {
            match *w {
                "kernel" if words.get(i + 1) == Some(&"table") => {
                    if let Some(t) = words.get(i + 2).and_then(|t| t.parse().ok()) {
                        table = t;
                    }
                }
                "ipv4" if i == 0 || words[i - 1] != "table" => family = Some(Family::Ipv4),
                "ipv6" if i == 0 || words[i - 1] != "table" => family = Some(Family::Ipv6),
                "export" => exports = words.get(i + 1) != Some(&"none"),
                _ => {}
            }
        }
        // BIRD 1.x exports nothing by default too; an absent export means none.
        out.push(KernelSync {
            name,
            table,
            family,
            exports,
        });
        rest = &after[end.min(after.len())..];
    }
    out
}

/// `Key=value` of a systemd-style INI file, last one wins; section ignored.
pub fn ini_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') || l.starts_with(';') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
        .next()
}

/// systemd's boolean parsing.
pub fn ini_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "y" | "t" => Some(true),
        "0" | "no" | "false" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

/// `--node-ip` from kubelet flags files (`KUBELET_KUBEADM_ARGS="... --node-ip=X"`),
/// or `nodeIP`/`address`-less KubeletConfiguration (which has no node IP field).
pub fn kubelet_node_ip(text: &str) -> Option<String> {
    let words = text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    let mut prev_flag = false;
    for w in words {
        if prev_flag && !w.is_empty() {
            return Some(w.to_string());
        }
        // `KUBELET_EXTRA_ARGS=--node-ip=X`: the flag may follow a variable name.
        if let Some(i) = w.find("--node-ip=") {
            return Some(w[i + "--node-ip=".len()..].to_string());
        }
        prev_flag = w.ends_with("--node-ip");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_tcp_listeners() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0B000A0A:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
           1: 0B000A0A:00B3 0100000A:1234 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n";
        assert_eq!(
            proc_net_tcp(v4, Family::Ipv4),
            [("10.10.0.11".parse().unwrap(), 179, 12345)]
        );
        let v6 = "header\n   0: 00000000000000000000000001000000:00B3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        assert_eq!(
            proc_net_tcp(v6, Family::Ipv6),
            [("::1".parse().unwrap(), 179, 777)]
        );
    }

    #[test]
    fn bird_kernel_tables() {
        let conf = "# host\nprotocol device {}\nprotocol kernel kernel_host {\n  ipv4 { export filter { accept; }; };\n  kernel table 1001; # ours\n  merge paths on;\n}\n\
            /* protocol kernel old { kernel table 5; } */\nprotocol kernel { ipv6 { export none; }; }\n\
            protocol bgp tor_a { ipv4 { table master4; }; }\n";
        let k = bird_kernel_syncs(conf);
        assert_eq!(k.len(), 2, "{k:?}");
        assert_eq!(k[0].name, "kernel_host");
        assert_eq!(
            (k[0].table, k[0].family, k[0].exports),
            (1001, Some(Family::Ipv4), true)
        );
        assert_eq!(
            (k[1].table, k[1].family, k[1].exports),
            (254, Some(Family::Ipv6), false)
        );
        // BIRD 1.x (Calico): no channels, export all, main.
        let k = bird_kernel_syncs("protocol kernel {\n  learn;\n  persist;\n  export all;\n}\n");
        assert_eq!((k[0].table, k[0].family, k[0].exports), (254, None, true));
    }

    #[test]
    fn ini_and_kubelet() {
        let t = "[Network]\n#ManageForeignRoutes=yes\nManageForeignRoutes=no\n";
        assert_eq!(
            ini_value(t, "ManageForeignRoutes").and_then(ini_bool),
            Some(false)
        );
        assert_eq!(ini_value(t, "ManageForeignRoutingPolicyRules"), None);
        assert_eq!(
            kubelet_node_ip(
                "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=x --node-ip=10.10.0.11\"\n"
            )
            .as_deref(),
            Some("10.10.0.11")
        );
        assert_eq!(
            kubelet_node_ip("KUBELET_EXTRA_ARGS=--node-ip 172.30.0.1").as_deref(),
            Some("172.30.0.1")
        );
        assert_eq!(kubelet_node_ip("KUBELET_EXTRA_ARGS="), None);
    }
}
