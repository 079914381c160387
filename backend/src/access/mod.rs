//! Who may do what: the permission catalogue, roles and where users hold
//! them, the grants a request carries, and the route layer that enforces
//! every route's declaration.
//!
//! - [`catalogue`]: every `resource:verb` permission, as data;
//! - [`grants`]: a caller's permissions, global or per host group; deny by
//!   default;
//! - [`roles`]: built-in and custom roles, assignments, grants of users and
//!   API tokens;
//! - [`caller`]: authentication and the route layer ([`authorize`]);
//! - [`http`]: the roles pages and API.
//!
//! Invariants: every route declares its access (`web::Routes`); a scoped
//! grant never reaches an ungrouped host nor a permission that is not about
//! hosts; an API token never holds more than its owner does at the moment
//! it is used; a handler refuses what is outside the caller's groups as
//! "not found".

pub mod caller;
pub mod catalogue;
pub mod grants;
pub mod http;
pub mod roles;

#[cfg(test)]
mod tests;

pub use caller::{Caller, Via, authorize};
pub use catalogue::Permission;
pub use grants::{Grants, HostScope};
