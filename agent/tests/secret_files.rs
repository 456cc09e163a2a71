//! Secret files (BGP passwords) below a temporary --root, read the way ssh
//! reads a private key: no symlink followed at any component, a regular file
//! owned by root, no group or other permission bits, the fix in the error.
//! Needs root (it chowns files); fails loudly otherwise.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use underlay::system::linux::secret::{read, MAX_SECRET_BYTES};
use underlay::system::SystemError;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates root- and user-owned files); run the README's test command as root"
    );
}

/// A root with /etc/underlay/secrets/ and one secret `tor-a` (0600, root).
fn root() -> tempfile::TempDir {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("etc/underlay/secrets");
    fs::create_dir_all(&secrets).unwrap();
    put(&secrets.join("tor-a"), "s3cret\n", 0o600);
    dir
}

fn put(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn refused(root: &Path, logical: &str) -> String {
    match read(root, Path::new(logical)) {
        Err(e @ SystemError::Secret { .. }) => e.to_string(),
        other => panic!("{logical}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_private_root_owned_file_is_read() {
    let r = root();
    let s = read(r.path(), Path::new("/etc/underlay/secrets/tor-a"))
        .unwrap()
        .unwrap();
    assert_eq!(s.expose(), "s3cret\n");
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "Debug never shows a secret"
    );
    // 0400 is fine too.
    fs::set_permissions(
        r.path().join("etc/underlay/secrets/tor-a"),
        fs::Permissions::from_mode(0o400),
    )
    .unwrap();
    assert!(read(r.path(), Path::new("/etc/underlay/secrets/tor-a"))
        .unwrap()
        .is_some());
}

#[test]
fn absent_is_none() {
    let r = root();
    assert!(read(r.path(), Path::new("/etc/underlay/secrets/nope"))
        .unwrap()
        .is_none());
    assert!(read(r.path(), Path::new("/etc/missing/dir/x"))
        .unwrap()
        .is_none());
}

#[test]
fn group_or_other_access_is_refused_with_the_fix() {
    let r = root();
    let real = r.path().join("etc/underlay/secrets/tor-a");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o666, 0o620, 0o601, 0o610] {
        fs::set_permissions(&real, fs::Permissions::from_mode(mode)).unwrap();
        let e = refused(r.path(), "/etc/underlay/secrets/tor-a");
        assert!(e.contains(&format!("has mode {mode:04o}")), "{e}");
        assert!(
            e.contains(&format!(
                "chmod 600 {0}; chown root:root {0}",
                real.display()
            )),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }
}

#[test]
fn a_file_not_owned_by_root_is_refused() {
    let r = root();
    let real = r.path().join("etc/underlay/secrets/tor-a");
    nix::unistd::chown(&real, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
    let e = refused(r.path(), "/etc/underlay/secrets/tor-a");
    assert!(e.contains("owned by uid 1000, not root"), "{e}");
    assert!(e.contains("chown root:root"), "{e}");
}

#[test]
fn a_symlink_is_never_followed() {
    let r = root();
    let secrets = r.path().join("etc/underlay/secrets");
    // The case: a link to a file outside the root.
    let outside = tempfile::tempdir().unwrap();
    put(&outside.path().join("x"), "outside-content\n", 0o600);
    symlink(outside.path().join("x"), secrets.join("tor-b")).unwrap();
    let e = refused(r.path(), "/etc/underlay/secrets/tor-b");
    assert!(e.contains("symbolic link"), "{e}");
    assert!(!e.contains("outside-content"), "{e}");
    // A link inside the root, to a good secret, is refused all the same.
    symlink("tor-a", secrets.join("tor-c")).unwrap();
    assert!(refused(r.path(), "/etc/underlay/secrets/tor-c").contains("symbolic link"));
    // A symlinked directory on the way.
    symlink(&secrets, r.path().join("etc/underlay/linked")).unwrap();
    let e = refused(r.path(), "/etc/underlay/linked/tor-a");
    assert!(e.contains("etc/underlay/linked is a symbolic link"), "{e}");
    // Dangling links too (no ENOENT that would read as "absent").
    symlink("/nonexistent", secrets.join("tor-d")).unwrap();
    assert!(refused(r.path(), "/etc/underlay/secrets/tor-d").contains("symbolic link"));
}

#[test]
fn only_regular_files_are_read() {
    let r = root();
    let secrets = r.path().join("etc/underlay/secrets");
    fs::create_dir(secrets.join("dir")).unwrap();
    assert!(refused(r.path(), "/etc/underlay/secrets/dir").contains("is a directory"));
    // A FIFO would block a plain open; it is refused at once.
    nix::unistd::mkfifo(
        &secrets.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let t = std::time::Instant::now();
    assert!(refused(r.path(), "/etc/underlay/secrets/fifo").contains("FIFO"));
    assert!(t.elapsed().as_secs() < 5);
    // A file on the way where a directory should be.
    assert!(refused(r.path(), "/etc/underlay/secrets/tor-a/x").contains("not a directory"));
}

#[test]
fn size_and_shape_are_bounded() {
    let r = root();
    let big = r.path().join("etc/underlay/secrets/big");
    put(&big, &"x".repeat(MAX_SECRET_BYTES as usize + 1), 0o600);
    assert!(refused(r.path(), "/etc/underlay/secrets/big").contains("larger than 4096 bytes"));
    put(&big, &"x".repeat(MAX_SECRET_BYTES as usize), 0o600);
    assert!(read(r.path(), Path::new("/etc/underlay/secrets/big"))
        .unwrap()
        .is_some());
    for bad in [
        "/etc/underlay/../underlay/secrets/tor-a",
        "etc/underlay/secrets/tor-a",
        "/",
    ] {
        let e = refused(r.path(), bad);
        assert!(e.contains("expected"), "{bad}: {e}");
    }
}
