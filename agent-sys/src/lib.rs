//! What the Palisade agent processes share with the kernel.
//!
//! - [`ipc`]: the framed channel over a Unix socketpair between the platform
//!   and each child, and how a child finds its end.
//! - [`spawn`]: starting a child binary with its end of the socketpair.
//! - [`logging`]: tracing set-up, identical in every process.
//! - [`identity`]: who this process runs as, and what that means for the
//!   sandbox.
//!
//! This is the one agent crate allowed to contain `unsafe`, and only where
//! the kernel interface demands it; each block carries a `// SAFETY:` comment.

pub mod identity;
pub mod ipc;
pub mod logging;
pub mod spawn;
