//! The one test harness for underlay's real-kernel tests: network namespaces
//! a test creates and always removes, veth cables between them, commands and
//! daemons (BIRD among them) run inside them, a scratch root for files, and
//! the JSON Schema check of the agent's documents.
//!
//! Rules it enforces for every test that uses it:
//! - Namespaces are named `<prefix>-<pid>-<n>`: two test processes never
//!   collide, and one process never reuses a name.
//! - Everything a [`Lab`] made (daemons, namespaces, the scratch directory)
//!   is removed when it drops, also when the test panics. Daemons are stopped
//!   by the pid the lab started, nothing else.
//! - Addresses exist only inside those namespaces; a veth pair is created
//!   inside its first namespace with its peer moved straight into the second,
//!   so neither end ever appears in the namespace of the machine running the
//!   tests.
//! - A test that needs root or a tool fails loudly and says what is missing
//!   ([`require_root`], [`require_tools`]): it never passes vacuously.
//!
//! This crate knows nothing of underlay's types (it is a dev-dependency of
//! the agent, whose own unit tests use it too); the per-area fixtures (the
//! two-uplink host, the doctor lab, the NAT namespaces) are thin layers in
//! `agent/tests/` on top of it.

pub mod bird;
pub mod cmd;
pub mod lab;
pub mod schema_check;

pub use bird::{bird_ids, birdc, BirdUser, BIRD};
pub use cmd::{must, require_root, require_tools, run};
pub use lab::{enter, on_thread, Lab};
