//! The .deb, as built by `cargo deb -p underlay` (vm-tests/run-tests.sh does
//! it first; UNDERLAY_DEB points elsewhere): `dpkg-deb -c` lists exactly the
//! files the README's "Package" section says it ships, `dpkg-deb -I` has the
//! control fields and maintainer scripts that keep an install from touching
//! the network, and the packaged units pass `systemd-analyze verify` on a root
//! without BIRD or cloud-init (the VM image checks them against Debian's real
//! units, and the VM tests boot them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("UNDERLAY_DEB") {
        return PathBuf::from(p);
    }
    let version = env!("CARGO_PKG_VERSION");
    let p = repo().join(format!("target/debian/underlay_{version}-1_amd64.deb"));
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo deb -p underlay` (vm-tests/run-tests.sh does) or set UNDERLAY_DEB",
        p.display()
    );
    p
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (installed? vm-tests/setup.sh): {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files (not directories) in the package, as absolute paths.
fn listed(deb: &Path) -> BTreeSet<String> {
    run("dpkg-deb", &["-c", &deb.to_string_lossy()])
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// The absolute paths in the first column of the README's "Package" table.
fn readme_paths() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Package\n"))
        .expect("README.md has a `## Package` section");
    section
        .lines()
        .filter(|l| l.starts_with("| `/"))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_deb_ships_exactly_what_the_readme_lists() {
    let deb = deb();
    let files = listed(&deb);
    let readme = readme_paths();
    assert!(readme.len() >= 10, "README Package table: {readme:?}");
    let missing: Vec<_> = readme.difference(&files).collect();
    let unlisted: Vec<_> = files.difference(&readme).collect();
    assert!(
        missing.is_empty() && unlisted.is_empty(),
        "README lists but the .deb lacks: {missing:?}\nthe .deb ships but the README does not list: {unlisted:?}"
    );
    // rt_tables.d/rt_protos.d and sysctl.d are the agent's derived files,
    // never package conffiles.
    for absent in [
        "/etc/iproute2/rt_tables.d/underlay.conf",
        "/etc/iproute2/rt_protos.d/underlay.conf",
        "/etc/sysctl.d/90-underlay.conf",
        "/etc/underlay/host.toml",
        "/etc/underlay/profile.toml",
    ] {
        assert!(!files.contains(absent), "{absent} must not be shipped");
    }
}

#[test]
fn control_and_scripts_never_start_anything_on_install_or_upgrade() {
    let deb = deb();
    let d = deb.to_string_lossy();
    let control = run("dpkg-deb", &["-f", &d]);
    for want in [
        "Package: underlay",
        "Section: net",
        "Depends: libc6",
        "Recommends: bird2",
    ] {
        assert!(control.contains(want), "control lacks {want:?}:\n{control}");
    }
    let info = run("dpkg-deb", &["-I", &d]);
    assert!(
        info.contains("postinst") && info.contains("prerm") && info.contains("postrm"),
        "{info}"
    );
    let tmp = tempdir("ctl");
    run("dpkg-deb", &["-e", &d, &tmp.to_string_lossy()]);
    let read = |f: &str| std::fs::read_to_string(tmp.join(f)).unwrap_or_default();
    assert!(!tmp.join("preinst").exists(), "no preinst of our own");
    let conffiles: BTreeSet<String> = read("conffiles").lines().map(str::to_string).collect();
    let etc: BTreeSet<String> = listed(&deb)
        .into_iter()
        .filter(|p| p.starts_with("/etc/"))
        .collect();
    assert_eq!(
        conffiles, etc,
        "every /etc file is a conffile, nothing else"
    );
    let postinst = read("postinst");
    for unit in [
        "underlay.service",
        "underlay-gates.service",
        "underlay-join.service",
        "underlay-watch.service",
    ] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "{unit} enabled on install:\n{postinst}"
        );
    }
    for forbidden in [
        "deb-systemd-invoke start",
        "deb-systemd-invoke restart",
        "deb-systemd-invoke try-restart",
        "systemctl start",
        "systemctl restart",
    ] {
        for f in ["postinst", "prerm", "postrm"] {
            assert!(
                !read(f).contains(forbidden),
                "{f} must not {forbidden:?} (installing or upgrading never touches the network):\n{}",
                read(f)
            );
        }
    }
    // The reconcile timer is opt-in: its enable is guarded by was-enabled
    // (it only re-creates links an admin made), never on a fresh install.
    {
        let unit = "underlay-reconcile.timer";
        let block = postinst
            .split("# Automatically added by cargo-deb")
            .filter(|b| b.contains(unit))
            .collect::<Vec<_>>()
            .join("");
        assert!(
            block.contains(&format!("debian-installed {unit}"))
                && block.contains(&format!("was-enabled {unit}")),
            "{unit} is not enabled on install:\n{block}"
        );
    }
    // Units are stopped only when the package is removed, not on upgrade.
    let prerm = read("prerm");
    for l in prerm
        .lines()
        .filter(|l| l.contains("deb-systemd-invoke stop"))
    {
        let _ = l;
        assert!(
            prerm.contains("[ \"$1\" = remove ]"),
            "prerm stops units only on remove:\n{prerm}"
        );
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("underlay-pkg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn packaged_units_verify_clean_without_bird_or_cloud_init() {
    let deb = deb();
    let root = tempdir("root");
    run(
        "dpkg-deb",
        &["-x", &deb.to_string_lossy(), &root.to_string_lossy()],
    );
    // systemd's own targets and units from this machine (package systemd),
    // without bird.service or cloud-init: the units must not need them.
    let units = root.join("usr/lib/systemd/system");
    for entry in
        std::fs::read_dir("/lib/systemd/system").expect("/lib/systemd/system (install systemd)")
    {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("bird") || name.starts_with("cloud-") || name.starts_with("underlay") {
            continue;
        }
        let dst = units.join(&name);
        if !dst.exists() && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            std::fs::copy(entry.path(), dst).unwrap();
        }
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .args([
            "underlay.service",
            "underlay-gates.service",
            "underlay-reconcile.service",
            "underlay-reconcile.timer",
            "underlay-join.service",
            "underlay-watch.service",
        ])
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify is not clean:\n{text}"
    );
    // And it does find problems: a unit with an unknown key is reported.
    let bad = units.join("underlay-gates.service");
    let mut t = std::fs::read_to_string(&bad).unwrap();
    t.push_str("\n[Service]\nNoSuchKey=1\n");
    std::fs::write(&bad, t).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .arg("underlay-gates.service")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NoSuchKey"),
        "verify must report a broken unit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}
