//! How a domain declares its routes: [`Routes`] pairs every path with who
//! may use it ([`Access`]), so the whole application can be enumerated (the
//! OpenAPI document, and tests that call every route without credentials).

use axum::Router;
use axum::routing::MethodRouter;

use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the sign-in form, health, static files, and enrollment (whose
    /// token in the body is its credential, checked by the handler).
    Public,
    /// Enrolled agents only, by their TLS client certificate (checked by the
    /// handler before anything else).
    Agent,
    /// A signed-in user (session cookie) or an API token; pages redirect to
    /// the sign-in form without one, the API answers 401.
    User,
}

/// One declared route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub path: &'static str,
    pub access: Access,
}

/// Routes with their declarations. The only way a domain adds a route.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    declared: Vec<RouteInfo>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    fn add(
        mut self,
        path: &'static str,
        access: Access,
        methods: MethodRouter<AppState>,
    ) -> Routes {
        self.router = self.router.route(path, methods);
        self.declared.push(RouteInfo { path, access });
        self
    }

    pub fn public(self, path: &'static str, methods: MethodRouter<AppState>) -> Routes {
        self.add(path, Access::Public, methods)
    }

    pub fn agent(self, path: &'static str, methods: MethodRouter<AppState>) -> Routes {
        self.add(path, Access::Agent, methods)
    }

    pub fn user(self, path: &'static str, methods: MethodRouter<AppState>) -> Routes {
        self.add(path, Access::User, methods)
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.declared.extend(other.declared);
        self
    }

    /// The router and what was declared.
    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteInfo>) {
        (self.router, self.declared)
    }

    pub fn declared(&self) -> &[RouteInfo] {
        &self.declared
    }
}
