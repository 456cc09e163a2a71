//! Sources without root or network, through the real binary: the kernel
//! command line and cloud-init data from files the test writes, the
//! precedence row by row, and the errors a person gets. Nothing here
//! fetches (refusals happen before any connection).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use underlay_testkit::schema_check;

const ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/l3-ecmp-calico.toml"
);
const HOST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/examples/host.toml"
);
const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn copy(&self, from: &str, rel: &str) -> PathBuf {
        self.write(rel, &std::fs::read_to_string(from).unwrap())
    }

    fn show(&self, extra: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_underlay"))
            .args(["show-sources", "--json", "--root"])
            .arg(self.path("root"))
            .arg("--cmdline")
            .arg(self.path("cmdline"))
            .arg("--cloud-init-dir")
            .arg(self.path("cloud"))
            .arg("--instance-data")
            .arg(self.path("instance-data.json"))
            .args(extra)
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        schema_check::assert_valid(&doc);
        (out.status.code().unwrap(), doc)
    }
}

fn levels(doc: &Value) -> (String, String) {
    let l = |i: usize| {
        doc["sources"][i]["level"]
            .as_str()
            .unwrap_or("-")
            .to_string()
    };
    (l(0), l(1))
}

#[test]
fn precedence_through_the_binary_row_by_row() {
    let s = Scratch::new();
    s.write("cmdline", "");
    // Only local files.
    s.copy(ROLE, "root/etc/underlay/profile.toml");
    s.copy(HOST, "root/etc/underlay/host.toml");
    let (code, doc) = s.show(&[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(levels(&doc), ("local".into(), "local".into()));
    assert_eq!(doc["sources"][0]["pinned"], false);

    // cloud-init's inline host facts beat the local file.
    let host_text = std::fs::read_to_string(HOST).unwrap();
    let inline: String = host_text.lines().map(|l| format!("      {l}\n")).collect();
    s.write(
        "cloud/cloud-config.txt",
        &format!("#cloud-config\nunderlay:\n  host:\n    toml: |\n{inline}"),
    );
    let (code, doc) = s.show(&[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(levels(&doc), ("local".into(), "cloud-init".into()));

    // The kernel command line beats cloud-init; a path there is read as given.
    let cmd_role = s.copy(ROLE, "boot/role.toml");
    s.write(
        "cmdline",
        &format!(
            "ro underlay.profile={} underlay.host={HOST}\n",
            cmd_role.display()
        ),
    );
    let (code, doc) = s.show(&[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(levels(&doc), ("cmdline".into(), "cmdline".into()));
    assert_eq!(doc["sources"][0]["origin"], cmd_role.display().to_string());

    // A flag beats everything, for its item only.
    let (code, doc) = s.show(&[
        "--host",
        s.path("root/etc/underlay/host.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(levels(&doc), ("cmdline".into(), "flag".into()));
    assert_eq!(doc["command"], "show-sources");
    assert_eq!(doc["host"], "node-a1");
    assert_eq!(doc["converged"], Value::Null);
}

#[test]
fn cloud_config_as_cloud_init_wrote_it_keeps_the_inline_toml_byte_for_byte() {
    let s = Scratch::new();
    s.write("cmdline", "");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloud-init/cloud-config.txt");
    s.write(
        "cloud/cloud-config.txt",
        &std::fs::read_to_string(fixture).unwrap(),
    );
    s.write(
        "instance-data.json",
        r#"{"v1": {"local_hostname": "node-a1"}, "ds": {"meta_data": {}}}"#,
    );
    // The fixture's profile is remote: take the profile from a flag so
    // nothing is fetched, and read the host facts from cloud-init.
    let (code, doc) = s.show(&["--profile", ROLE]);
    assert_eq!(code, 0, "{doc}");
    let host = &doc["sources"][1];
    assert_eq!(host["level"], "cloud-init");
    assert_eq!(host["declared"], "cloud-init user-data underlay.host.toml");
    let want = underlay::source::Sha256::of(&std::fs::read(HOST).unwrap()).to_string();
    assert_eq!(host["sha256"], want);
}

#[test]
fn errors_name_where_the_mistake_is_and_change_nothing() {
    let s = Scratch::new();
    s.write("cmdline", "");
    let kind = |doc: &Value| doc["failure"]["kind"].as_str().unwrap().to_string();
    let msg = |doc: &Value| doc["failure"]["message"].as_str().unwrap().to_string();

    // Nothing anywhere: every place looked at is named.
    let (code, doc) = s.show(&[]);
    assert_eq!((code, kind(&doc)), (1, "input".into()), "{doc}");
    for place in ["--profile", "cmdline", "cloud-init", "etc/underlay"] {
        assert!(msg(&doc).contains(place), "{}", msg(&doc));
    }

    // A typo on the kernel command line.
    s.write("cmdline", "ro underlay.profle=https://prov/r.toml");
    let (code, doc) = s.show(&[]);
    assert_eq!((code, kind(&doc)), (1, "input".into()));
    assert!(
        msg(&doc).contains("unknown parameter underlay.profle"),
        "{}",
        msg(&doc)
    );

    // Unpinned, plain http: refused before any connection.
    for (line, wants) in [
        (
            "underlay.profile=https://prov.invalid/r.toml".to_string(),
            "must be pinned: add underlay.profile.sha256=",
        ),
        (
            format!("underlay.profile=http://prov.invalid/r.toml underlay.profile.sha256={PIN}"),
            "plain http is refused",
        ),
        (
            format!(
                "underlay.profile=https://prov.invalid/${{mac}}.toml underlay.profile.sha256={PIN}"
            ),
            "BOOTIF=",
        ),
    ] {
        s.write("cmdline", &line);
        let (code, doc) = s.show(&["--host", HOST]);
        assert_eq!((code, kind(&doc)), (1, "input".into()), "{line}: {doc}");
        assert!(msg(&doc).contains(wants), "{line}: {}", msg(&doc));
    }

    // A mistake in inline host facts is located in the inline text.
    s.write("cmdline", "");
    s.write(
        "cloud/cloud-config.txt",
        "#cloud-config\nunderlay:\n  host:\n    toml: |\n      version = 1\n      hostname = 7\n",
    );
    let (code, doc) = s.show(&["--profile", ROLE]);
    assert_eq!((code, kind(&doc)), (1, "input".into()), "{doc}");
    let p = &doc["failure"]["problems"][0];
    assert_eq!(p["file"], "cloud-init user-data underlay.host.toml");
    assert_eq!(
        (p["line"].as_u64(), p["column"].as_u64()),
        (Some(2), Some(12)),
        "{p}"
    );
    assert_eq!(
        doc["sources"][1]["level"], "cloud-init",
        "the failure still says where the bytes came from"
    );

    // A broken underlay key in cloud-init.
    s.write(
        "cloud/cloud-config.txt",
        "#cloud-config\nunderlay:\n  host: {url: https://x/h.toml, toml: x}\n",
    );
    let (code, doc) = s.show(&["--profile", ROLE]);
    assert_eq!((code, kind(&doc)), (1, "input".into()));
    assert!(
        msg(&doc).contains("underlay.host: has both `url:` and `toml:`"),
        "{}",
        msg(&doc)
    );
    assert!(
        !s.path("root/var").exists(),
        "nothing was written below the root"
    );
}

/// Under systemd, stderr is the journal stream named by JOURNAL_STREAM
/// (`<dev>:<inode>`): logs then go to journald. The variable alone (a
/// child whose stderr was redirected) must not switch.
#[test]
fn journald_is_chosen_when_journal_stream_names_stderr() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    s.write("cmdline", "");
    s.copy(ROLE, "root/etc/underlay/profile.toml");
    s.copy(HOST, "root/etc/underlay/host.toml");
    let run = |stream: &str| {
        let err = s.path("stderr");
        let f = std::fs::File::create(&err).unwrap();
        let m = std::fs::metadata(&err).unwrap();
        let value = if stream == "match" {
            format!("{}:{}", m.dev(), m.ino())
        } else {
            format!("{}:{}", m.dev(), m.ino() + 1)
        };
        let status = Command::new(env!("CARGO_BIN_EXE_underlay"))
            .args(["show-sources", "--root"])
            .arg(s.path("root"))
            .args(["--cmdline", "/dev/null", "--cloud-init-dir", "/nonexistent"])
            .env("JOURNAL_STREAM", value)
            .env("UNDERLAY_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(f)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(&err).unwrap()
    };
    let other = run("other");
    assert!(
        other.contains("source loaded"),
        "text logs on stderr: {other}"
    );
    let matched = run("match");
    if Path::new("/run/systemd/journal/socket").exists() {
        assert!(
            !matched.contains("source loaded"),
            "logs went to the journal: {matched}"
        );
    } else {
        // No journald on this machine: the switch was made, and it says why it fell back.
        assert!(matched.contains("cannot log to the journal"), "{matched}");
        assert!(matched.contains("source loaded"), "{matched}");
    }
}

/// The shipped examples say what underlay reads: the cloud-init example's
/// inline host facts validate, and the PXELINUX and iPXE command lines parse
/// (placeholders filled in; flags keep anything from being fetched).
#[test]
fn the_packaging_examples_parse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples");
    let fill = |t: &str| {
        t.replace("<sha256sum l3-ecmp-calico.toml>", PIN)
            .replace("<sha256sum of this host's file>", PIN)
            .replace("<mac of the NIC cabled to ToR A>", "52:54:00:00:00:0a")
            .replace("<mac of the NIC cabled to ToR B>", "52:54:00:00:00:0b")
    };
    let s = Scratch::new();
    s.write("cmdline", "");
    let ud = std::fs::read_to_string(examples.join("cloud-init-user-data.yaml")).unwrap();
    s.write("cloud/cloud-config.txt", &fill(&ud));
    let (code, doc) = s.show(&["--profile", ROLE]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["sources"][1]["level"], "cloud-init");
    assert_eq!(doc["host"], "node-a1");

    let pxe = std::fs::read_to_string(examples.join("pxelinux.cfg/01-52-54-00-12-34-56")).unwrap();
    let append = pxe
        .lines()
        .find_map(|l| l.trim().strip_prefix("APPEND "))
        .expect("an APPEND line");
    // IPAPPEND 2 adds BOOTIF.
    s.write(
        "cmdline",
        &format!("{} BOOTIF=01-52-54-00-12-34-56\n", fill(append)),
    );
    let (code, doc) = s.show(&["--profile", ROLE, "--host", HOST]);
    assert_eq!(code, 0, "the PXELINUX command line parses: {doc}");

    // The iPXE kernel line after iPXE expanded its own variables.
    let ipxe = std::fs::read_to_string(examples.join("boot.ipxe")).unwrap();
    let start = ipxe.find("\nkernel ").unwrap() + 1;
    let kernel: String = ipxe[start..]
        .lines()
        .take_while(|l| !l.starts_with("initrd"))
        .collect::<Vec<_>>()
        .join(" ");
    let expanded = kernel
        .replace('\\', " ")
        .replace("${prov}", "https://prov.example")
        .replace("${net0/mac:hexhyp}", "52-54-00-12-34-56")
        .replace("${net0/mac}", "52:54:00:12:34:56")
        .replace("${profile-sha256}", PIN)
        .replace("${host-sha256}", PIN);
    assert!(!expanded.contains("${"), "{expanded}");
    s.write("cmdline", &expanded);
    let (code, doc) = s.show(&["--profile", ROLE, "--host", HOST]);
    assert_eq!(code, 0, "the iPXE command line parses: {doc}");
}
