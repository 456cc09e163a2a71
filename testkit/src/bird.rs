//! BIRD 2 inside a lab namespace, in the foreground so that the lab stops
//! exactly the process it started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{must, require_tools};
use crate::lab::Lab;

/// Debian's bird2 installs BIRD here.
pub const BIRD: &str = "/usr/sbin/bird";

/// Who BIRD runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirdUser {
    /// root, as the ToR and Calico stand-ins of the labs run.
    Root,
    /// `-u bird -g bird`, exactly as Debian's `bird.service` starts it: BIRD
    /// reads its config (and every reload) after dropping privileges.
    Bird,
}

/// The uid and gid of user `bird` (Debian's bird2 package creates it).
pub fn bird_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name("bird")
        .expect("reading the user database")
        .expect("user bird (Debian's bird2 package creates it; vm-tests/setup.sh installs bird2)");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// `birdc -s SOCK CMD...` (words split on white space), which must succeed;
/// its stdout.
pub fn birdc(sock: &Path, cmd: &str) -> String {
    require_tools(&["birdc"]);
    let sock = sock.to_str().expect("a UTF-8 socket path");
    let mut args = vec!["-s", sock];
    args.extend(cmd.split_whitespace());
    must("birdc", &args)
}

impl Lab {
    /// Starts BIRD (`-f -c CONF -s SOCK`, plus `-u bird -g bird` for
    /// [`BirdUser::Bird`]) as background process `name` inside `ns`, and
    /// returns its control socket once it accepts connections. Fails with
    /// BIRD's log if it exits first or never listens.
    pub fn bird(
        &mut self,
        name: &str,
        ns: &str,
        conf: &Path,
        sock: &Path,
        user: BirdUser,
    ) -> PathBuf {
        require_tools(&[BIRD]);
        std::fs::create_dir_all(sock.parent().expect("a socket path with a directory")).unwrap();
        let (c, s) = (conf.to_str().unwrap(), sock.to_str().unwrap());
        let mut argv = vec![BIRD, "-f", "-c", c, "-s", s];
        if user == BirdUser::Bird {
            argv.extend(["-u", "bird", "-g", "bird"]);
        }
        self.spawn(name, ns, &argv);
        // A hang bound, not a timing: BIRD listens within milliseconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            if let Some(status) = self.exited(name) {
                panic!("{name}: bird exited with {status}:\n{}", self.log(name));
            }
            assert!(
                Instant::now() < deadline,
                "{name}: BIRD made no control socket at {s}:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sock.to_path_buf()
    }
}
