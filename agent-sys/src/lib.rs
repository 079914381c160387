//! What the Palisade agent processes share with the kernel.
//!
//! - [`ipc`]: the framed channel over a Unix socketpair between the platform
//!   and each child, and how a child finds its end.
//! - [`spawn`]: starting a child binary with its end of the socketpair.
//! - [`logging`]: tracing set-up, identical in every process.
//! - [`identity`]: who this process runs as, and what that means for the
//!   sandbox.
//! - [`control_pin`]: the agent id and command-signing key control trusts,
//!   written at enrollment where only root can write.
//! - [`package_root`]: which system's packages the collector reads and
//!   control manages (`/`, or a root the agent was started with).
//! - [`sandbox`]: what each process applies to itself before it reads any
//!   untrusted input (users, capabilities, Landlock, seccomp, limits), the
//!   policies as data, and the hostile selftest probes.
//! - [`launcher`]: the small privileged process that starts the children
//!   for a platform that has dropped every privilege.
//!
//! This is the one agent crate allowed to contain `unsafe`, and only where
//! the kernel interface demands it; each block carries a `// SAFETY:` comment.

pub mod child;
pub mod control_pin;
pub mod identity;
pub mod ipc;
pub mod launcher;
pub mod logging;
pub mod package_root;
pub mod sandbox;
pub mod spawn;
