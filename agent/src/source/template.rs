//! URL templates, so one kernel command line serves a whole rack:
//! `https://prov/hosts/${mac}.toml`.
//!
//! | variable | value |
//! |---|---|
//! | `${mac}` | the boot NIC's MAC, from `BOOTIF=` on the kernel command line |
//! | `${mac:eth0}` | the permanent (else current) MAC of the NIC named eth0 |
//! | `${hostname}` | cloud-init's `local_hostname` when cloud-init ran, else the kernel's hostname |
//! | `${serial}` | DMI `product_serial` (`/sys/class/dmi/id/product_serial`) |
//! | `${uuid}` | DMI `product_uuid`, lowercase |
//!
//! MACs print as `52:54:00:12:34:56`. Values are percent-encoded (a serial
//! with a space stays one path segment). Vendor placeholders that many
//! machines share ("To Be Filled By O.E.M.", an all-zero UUID) are refused:
//! they would hand every host of the rack the same file.

use super::{Context, DmiField, Host};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Mac(Option<String>),
    Hostname,
    Serial,
    Uuid,
}

const VARS: &str = "${mac}, ${mac:NIC}, ${hostname}, ${serial}, ${uuid}";

fn parse_var(body: &str) -> Result<Var, String> {
    let (name, arg) = match body.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (body, None),
    };
    match (name, arg) {
        ("mac", None) => Ok(Var::Mac(None)),
        ("mac", Some(nic)) if !nic.is_empty() => Ok(Var::Mac(Some(nic.to_string()))),
        ("hostname", None) => Ok(Var::Hostname),
        ("serial", None) => Ok(Var::Serial),
        ("uuid", None) => Ok(Var::Uuid),
        _ => Err(format!(
            "unknown template ${{{body}}}; expected one of {VARS}"
        )),
    }
}

/// Replaces every `${...}` with `value(var)`, percent-encoded. A `$` not
/// followed by `{` is kept as it is.
pub fn expand(
    template: &str,
    mut value: impl FnMut(&Var) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated template '{}' (no closing brace)", &rest[i..]))?;
        let var = parse_var(&after[..end])?;
        let v = value(&var)?;
        out.push_str(&encode(&v));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Unreserved characters and ':' (MACs) pass; everything else is %XX.
fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// DMI strings vendors ship unset; a template on one would collide.
fn placeholder(v: &str) -> bool {
    let l = v.trim().to_ascii_lowercase();
    let generic = [
        "",
        "to be filled by o.e.m.",
        "default string",
        "not specified",
        "not applicable",
        "none",
        "system serial number",
        "0123456789",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",
    ];
    generic.contains(&l.as_str()) || l.chars().all(|c| c == '0')
}

/// The value of one variable on this host.
pub fn value(var: &Var, host: &mut dyn Host, ctx: &Context) -> Result<String, String> {
    match var {
        Var::Mac(None) => ctx.bootif.map(|m| m.to_string()).ok_or_else(|| {
            "${mac} is the boot NIC's MAC, from BOOTIF= on the kernel command line, and there is none; \
             add BOOTIF=01-aa-bb-cc-dd-ee-ff (PXELINUX IPAPPEND 2, iPXE BOOTIF=01-${net0/mac:hexhyp}) \
             or name the NIC: ${mac:eth0}"
                .to_string()
        }),
        Var::Mac(Some(nic)) => host
            .nic_mac(nic)
            .map(|m| m.to_string())
            .map_err(|e| format!("${{mac:{nic}}}: {e}")),
        Var::Hostname => ctx
            .cloud_hostname
            .map(str::to_string)
            .or_else(|| host.hostname())
            .filter(|h| !h.is_empty() && h != "localhost" && h != "(none)")
            .ok_or_else(|| {
                "${hostname}: this host has no hostname yet (none from cloud-init, and the kernel's is unset or localhost); use ${mac} or ${serial}".to_string()
            }),
        Var::Serial | Var::Uuid => {
            let field = if *var == Var::Serial {
                DmiField::Serial
            } else {
                DmiField::Uuid
            };
            let name = if field == DmiField::Serial {
                "serial"
            } else {
                "uuid"
            };
            match host.dmi(field) {
                None => Err(format!(
                    "${{{name}}}: cannot read DMI {} (no DMI on this machine, or not root); use ${{mac}}",
                    field.file()
                )),
                Some(v) if placeholder(&v) => Err(format!(
                    "${{{name}}}: DMI {} is '{v}', a vendor placeholder that many machines share; use ${{mac}}",
                    field.file()
                )),
                Some(v) if field == DmiField::Uuid => Ok(v.to_ascii_lowercase()),
                Some(v) => Ok(v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(var: &Var) -> Result<String, String> {
        Ok(match var {
            Var::Mac(None) => "52:54:00:aa:bb:01".into(),
            Var::Mac(Some(n)) => format!("mac-of-{n}"),
            Var::Hostname => "node-a1".into(),
            Var::Serial => "SN 12/3".into(),
            Var::Uuid => "4c4c4544".into(),
        })
    }

    #[test]
    fn expands_every_variable_and_encodes_values() {
        assert_eq!(
            expand(
                "https://p/${hostname}/${mac}/${mac:eth1}/${serial}/${uuid}.toml?a=$x",
                fixed
            )
            .unwrap(),
            "https://p/node-a1/52:54:00:aa:bb:01/mac-of-eth1/SN%2012%2F3/4c4c4544.toml?a=$x"
        );
        assert_eq!(
            expand("https://p/plain.toml", fixed).unwrap(),
            "https://p/plain.toml"
        );
    }

    #[test]
    fn unknown_and_unterminated_templates_are_errors() {
        let e = expand("https://p/${macaddr}.toml", fixed).unwrap_err();
        assert!(e.contains("unknown template ${macaddr}"), "{e}");
        assert!(e.contains("${mac:NIC}"), "{e}");
        let e = expand("https://p/${mac.toml", fixed).unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        assert!(expand("https://p/${mac:}.toml", fixed).is_err());
        assert!(expand("https://p/${hostname:x}.toml", fixed).is_err());
    }

    #[test]
    fn vendor_placeholders_are_recognised() {
        for p in [
            "To Be Filled By O.E.M.",
            "Default string",
            "0000000",
            "00000000-0000-0000-0000-000000000000",
            " ",
        ] {
            assert!(placeholder(p), "{p}");
        }
        for real in ["CZ2D1234AB", "4c4c4544-0042-3510-8052-b4c04f384d32"] {
            assert!(!placeholder(real), "{real}");
        }
    }
}
