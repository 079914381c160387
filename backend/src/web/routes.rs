//! How a domain declares its routes: every (method, path) is registered
//! with who may call it ([`Access`]), and that declaration is what is
//! enforced: a route layer authenticates the caller and checks the
//! permission before the handler runs, and puts the [`Caller`] in the
//! request for the handler (which checks the host-group scope of what it
//! touches). The declarations can be enumerated: tests call every route.
//!
//! [`Caller`]: crate::access::Caller

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware;
use axum::routing::MethodRouter;

use crate::access::Permission;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the sign-in form, health, static files, the API document,
    /// and enrollment (whose token in the body is its credential, checked
    /// by the handler).
    Public,
    /// Enrolled agents only, by their TLS client certificate (checked by the
    /// handler before anything else).
    Agent,
    /// Any signed-in user or valid API token (their own sessions, signing
    /// out, their own API tokens).
    SignedIn,
    /// A caller holding this permission somewhere; the handler checks the
    /// host group of what it touches.
    Permission(Permission),
    /// A caller holding at least one of these somewhere: a route whose
    /// request says which one it needs (a command's type); the handler
    /// checks that one for the host it touches.
    AnyOf(&'static [Permission]),
}

/// One declared route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// Routes with their declarations. The only way a domain adds a route.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    declared: Vec<RouteInfo>,
}

macro_rules! method {
    ($($name:ident => $method:ident, $routing:ident;)*) => {
        $(
            pub fn $name<H, T>(self, path: &'static str, access: Access, handler: H) -> Routes
            where
                H: Handler<T, AppState>,
                T: 'static,
            {
                self.add(path, Method::$method, access, axum::routing::$routing(handler))
            }
        )*
    };
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    fn add(
        mut self,
        path: &'static str,
        method: Method,
        access: Access,
        route: MethodRouter<AppState>,
    ) -> Routes {
        let route = match access {
            Access::Public | Access::Agent => route,
            Access::SignedIn | Access::Permission(_) | Access::AnyOf(_) => {
                route.route_layer(middleware::from_fn(move |req, next| {
                    crate::access::authorize(access, req, next)
                }))
            }
        };
        self.router = self.router.route(path, route);
        self.declared.push(RouteInfo {
            method,
            path,
            access,
        });
        self
    }

    method! {
        get => GET, get;
        post => POST, post;
        put => PUT, put;
        patch => PATCH, patch;
        delete => DELETE, delete;
    }

    /// A route whose method router is built by the caller (a layer on the
    /// handler, such as a body limit).
    pub fn with(
        self,
        path: &'static str,
        method: Method,
        access: Access,
        route: MethodRouter<AppState>,
    ) -> Routes {
        self.add(path, method, access, route)
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
