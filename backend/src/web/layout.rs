//! The frame around every page, and the error page.

use askama::Template;
use axum::http::StatusCode;

use super::RequestId;
use crate::access::{Caller, Permission};

/// A link of the navigation bar.
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
}

/// The navigation: each page whose permission the caller holds somewhere.
const NAV: &[(&str, &str, Permission)] = &[
    ("/hosts", "Hosts", Permission::HostsRead),
    ("/packages", "Updates", Permission::PackagesRead),
    ("/patch-runs", "Patch runs", Permission::PatchRunsRead),
    (
        "/patch-policies",
        "Patch policies",
        Permission::PatchPoliciesRead,
    ),
    ("/host-groups", "Host groups", Permission::HostGroupsRead),
    (
        "/enrollment-tokens",
        "Enrollment",
        Permission::EnrollmentTokensRead,
    ),
    ("/users", "Users", Permission::UsersRead),
    ("/roles", "Roles", Permission::RolesRead),
    ("/api-tokens", "API tokens", Permission::ApiTokensCreate),
    ("/audit", "Audit", Permission::AuditRead),
];

/// What the frame around every page needs.
pub struct Layout {
    pub css_href: &'static str,
    pub js_href: &'static str,
    /// The signed-in user, if any (shows the navigation and sign-out).
    pub username: Option<String>,
    pub nav: Vec<NavLink>,
}

impl Layout {
    pub fn anonymous() -> Self {
        Layout {
            css_href: super::stylesheet_href(),
            js_href: super::script_href(),
            username: None,
            nav: Vec::new(),
        }
    }

    pub fn for_caller(caller: &Caller) -> Self {
        Layout {
            css_href: super::stylesheet_href(),
            js_href: super::script_href(),
            username: caller.username().map(str::to_owned),
            nav: NAV
                .iter()
                .filter(|(_, _, p)| caller.grants.allows_somewhere(*p))
                .map(|&(href, label, _)| NavLink { href, label })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "web/templates/error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    title: &'a str,
    message: &'a str,
    request_id: String,
}

/// The HTML body of an error response.
pub fn error_page(status: StatusCode, message: &str, request_id: RequestId) -> String {
    let page = ErrorPage {
        layout: Layout::anonymous(),
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error"),
        message,
        request_id: request_id.to_string(),
    };
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the error page");
        format!("{} {message} (request id {request_id})", status.as_u16())
    })
}
