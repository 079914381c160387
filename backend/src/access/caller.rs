//! Who is calling and what they may do: [`authorize`] is the route layer
//! every route that is neither public nor for agents goes through. It
//! authenticates the request (a session cookie, or a bearer API token),
//! loads the caller's grants, checks the route's permission, and hands the
//! handler a [`Caller`].
//!
//! Refusals: no or bad credentials are 401 for the API and a redirect to
//! the sign-in form for pages; a missing permission is 403 and audited
//! (`access.denied`). A rejected API token is audited too
//! (`auth.api_token`), through the rate limit of unauthenticated events.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{Grants, HostScope, Permission};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::Millis;
use crate::identity::auth::{ClientInfo, bearer_token, resume_session, session_cookie};
use crate::identity::{User, store as identity_store};
use crate::secrets;
use crate::state::AppState;
use crate::web::{Access, WebError};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session (its id's hash).
    Session {
        id_hash: Vec<u8>,
        created_at: Millis,
        /// When the user last gave their password (and second factor).
        authenticated_at: Millis,
    },
    /// An API token (its public id).
    Token { id: String },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    /// The user: signed in, or owning the API token (none for a token made
    /// on the command line).
    pub user: Option<User>,
    pub via: Via,
    pub grants: Grants,
    pub client: ClientInfo,
    /// Set on a route whose permission is dangerous, reached by a session
    /// that re-authenticated recently: when it last did. Recorded in the
    /// audit events of the request ([`Caller::event`]).
    pub proof_at: Option<Millis>,
}

impl Caller {
    /// Whether the caller holds `p` for a host in `group`.
    pub fn may(&self, p: Permission, group: Option<&str>) -> bool {
        self.grants.allows(p, group)
    }

    /// `Ok` if the caller holds `p` for a host in `group`, else the error a
    /// handler returns: "not found", so a scoped caller cannot learn that a
    /// host of another group exists.
    pub fn require_for_host(
        &self,
        p: Permission,
        group: Option<&str>,
        what: &'static str,
    ) -> Result<(), WebError> {
        if self.may(p, group) {
            Ok(())
        } else {
            Err(WebError::NotFound(what))
        }
    }

    /// `Ok` if the caller holds `p` for everything.
    pub fn require_global(&self, p: Permission) -> Result<(), WebError> {
        if self.grants.allows_globally(p) {
            Ok(())
        } else {
            Err(WebError::Forbidden("you may not do this"))
        }
    }

    /// The hosts `p` reaches for this caller (at least some: the route
    /// layer checked).
    pub fn host_scope(&self, p: Permission) -> HostScope {
        self.grants
            .host_scope(p)
            .unwrap_or(HostScope::Groups(Vec::new()))
    }

    /// The username shown in the page frame, if a user is signed in.
    pub fn username(&self) -> Option<&str> {
        match self.via {
            Via::Session { .. } => self.user.as_ref().map(|u| u.username.as_str()),
            Via::Token { .. } => None,
        }
    }

    /// An audit event by this caller, from where the request came.
    pub fn event(&self, at: Millis, action: Action, outcome: Outcome) -> NewAuditEvent {
        let event = NewAuditEvent::new(at, self.actor.clone(), action, outcome)
            .from_client(self.client.ip.clone(), self.client.user_agent.clone());
        match self.proof_at {
            Some(proof) => event.details(serde_json::json!({ "reauthenticated_at": proof })),
            None => event,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The route layer put it there; a handler asking for a caller on a
        // route that declares no authentication is a bug, and fails closed.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            WebError::internal(
                "the route declares no authentication but its handler needs a caller",
            )
        })
    }
}

/// Why a request has no caller.
enum NoCaller {
    /// No credentials, or ones that are not valid: sign in again.
    Unauthenticated,
    Error(WebError),
}

impl From<WebError> for NoCaller {
    fn from(e: WebError) -> Self {
        NoCaller::Error(e)
    }
}

/// The route layer of every route that needs a caller (see the module).
pub async fn authorize(access: Access, mut req: Request, next: Next) -> Response {
    let Some(state) = req.extensions().get::<AppState>().cloned() else {
        return WebError::internal("the application state is missing from the request")
            .into_response();
    };
    let is_api = req.uri().path().starts_with("/api/");
    let (mut parts, body) = req.into_parts();
    let client = match ClientInfo::from_request_parts(&mut parts, &state).await {
        Ok(client) => client,
        Err(never) => match never {},
    };
    let caller = authenticate(&state, &parts.headers, client).await;
    req = Request::from_parts(parts, body);
    let caller = match caller {
        Ok(caller) => caller,
        Err(NoCaller::Unauthenticated) if is_api => return WebError::Unauthorized.into_response(),
        Err(NoCaller::Unauthenticated) => return Redirect::to("/login").into_response(),
        Err(NoCaller::Error(e)) => return e.into_response(),
    };
    // A password someone else set (or an expired one) is replaced before
    // anything else: only the account pages and signing out are reachable.
    if let (Via::Session { .. }, Some(user)) = (&caller.via, &caller.user)
        && !req.uri().path().starts_with("/account")
        && crate::identity::account_http::password_change_due(&state, user, crate::now_millis())
    {
        if is_api {
            return WebError::Forbidden("choose a new password first, at /account").into_response();
        }
        return Redirect::to("/account").into_response();
    }
    // A user who must have a second factor and has none reaches only the
    // account pages (where they enroll) and signing out.
    let mfa = &state.config.mfa;
    if let (Via::Session { .. }, Some(user)) = (&caller.via, &caller.user)
        && (mfa.required || !mfa.required_roles.is_empty())
        && !req.uri().path().starts_with("/account")
        && !req.uri().path().starts_with("/reauth")
    {
        let (state2, user2) = (state.clone(), user.clone());
        let missing = state
            .db
            .read("second factor required", move |tx| {
                Ok(
                    crate::identity::factors::enrollment_required(tx, &state2, &user2)?
                        && !crate::identity::factor_store::has_second_factor(tx, user2.id)?,
                )
            })
            .await;
        match missing {
            Ok(false) => {}
            Ok(true) if is_api => {
                return WebError::Forbidden(
                    "set up a second factor first, at /account/second-factor",
                )
                .into_response();
            }
            Ok(true) => return Redirect::to("/account/second-factor").into_response(),
            Err(e) => return WebError::from(e).into_response(),
        }
    }
    let needed: &[Permission] = match &access {
        Access::Permission(p) => std::slice::from_ref(p),
        Access::AnyOf(any) => any,
        Access::Public | Access::Agent | Access::SignedIn => &[],
    };
    if !needed.is_empty() && !needed.iter().any(|p| caller.grants.allows_somewhere(*p)) {
        let now = crate::now_millis();
        let names: Vec<&str> = needed.iter().map(|p| p.name()).collect();
        let event = caller
            .event(now, Action::AccessDenied, Outcome::Denied)
            .target(req.uri().path().chars().take(200).collect::<String>())
            .details(serde_json::json!({ "permission": names.join(" or "), "method": req.method().as_str() }));
        tracing::info!(permission = %names.join(" or "), "access denied");
        if let Err(e) = state
            .db
            .write("audit denied access", move |tx| {
                crate::audit::store::append(tx, &event).map(|_| ())
            })
            .await
        {
            return WebError::from(e).into_response();
        }
        return WebError::Forbidden("you do not have the permission this needs").into_response();
    }
    // A dangerous operation from a browser session needs a recent proof of
    // identity (password and second factor); API tokens carry theirs from
    // their creation (see `identity::tokens_http`).
    let mut caller = caller;
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Via::Session {
        authenticated_at, ..
    } = caller.via
        && changes
        && needed.iter().any(|p| p.is_dangerous())
    {
        let now = crate::now_millis();
        if !crate::identity::factors::recently_authenticated(&state, authenticated_at, now) {
            tracing::info!("dangerous operation without a recent re-authentication");
            if is_api {
                return WebError::Forbidden(REAUTH_NEEDED).into_response();
            }
            let back = referer_path(req.headers()).unwrap_or_else(|| "/hosts".to_owned());
            return crate::identity::reauth::reauth_redirect(&back);
        }
        caller.proof_at = Some(authenticated_at);
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// What the API answers a dangerous operation from a session that has not
/// re-authenticated recently.
pub const REAUTH_NEEDED: &str = "this operation is dangerous: confirm your password (and second factor) again at /reauth, then retry";

/// The path of a same-site `Referer`, to come back to after re-authenticating.
fn referer_path(headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let rest = referer.strip_prefix("https://")?.strip_prefix(host)?;
    rest.starts_with('/').then(|| rest.to_owned())
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: ClientInfo,
) -> Result<Caller, NoCaller> {
    let now = crate::now_millis();
    // An Authorization header decides alone: a bad token does not fall back
    // to the cookie.
    if headers.contains_key(header::AUTHORIZATION) {
        let token = bearer_token(headers).ok_or(NoCaller::Unauthenticated)?;
        return token_caller(state, token, client, now).await;
    }
    let cookie = session_cookie(headers).ok_or(NoCaller::Unauthenticated)?;
    let session = resume_session(state, cookie, now)
        .await?
        .ok_or(NoCaller::Unauthenticated)?;
    let user = session.user;
    let user_id = user.id;
    let grants = state
        .db
        .read("load grants", move |tx| {
            super::roles::grants_of_user(tx, user_id)
        })
        .await
        .map_err(WebError::from)?;
    Ok(Caller {
        actor: Actor::User(user.username.clone()),
        user: Some(user),
        via: Via::Session {
            id_hash: secrets::hash_secret(cookie),
            created_at: session.created_at,
            authenticated_at: session.authenticated_at,
        },
        grants,
        client,
        proof_at: None,
    })
}

/// How often a token's "last used" is written at most.
const LAST_USED_INTERVAL_MS: Millis = 60_000;

async fn token_caller(
    state: &AppState,
    token: &str,
    client: ClientInfo,
    now: Millis,
) -> Result<Caller, NoCaller> {
    let reject = |token_id: Option<String>, reason: &'static str| {
        let state = state.clone();
        let client = client.clone();
        async move {
            tracing::info!(reason, "rejected an API token");
            let event = NewAuditEvent::new(
                now,
                Actor::Anonymous,
                Action::ApiTokenRejected,
                Outcome::Denied,
            )
            .from_client(client.ip.clone(), client.user_agent.clone())
            .details(serde_json::json!({ "token_id": token_id, "reason": reason }));
            crate::audit::limits::append_unauthenticated(&state, client.ip.as_deref(), event)
                .await
                .map_err(WebError::from)?;
            Err::<Caller, NoCaller>(NoCaller::Unauthenticated)
        }
    };
    let Some((id, secret)) = secrets::split_token(token) else {
        return reject(None, "malformed").await;
    };
    let lookup = id.to_owned();
    let found = state
        .db
        .read("load api token", move |tx| {
            let Some(token) = identity_store::api_token(tx, &lookup)? else {
                return Ok(None);
            };
            let owner = match token.user_id {
                Some(user_id) => identity_store::user_by_id(tx, user_id)?,
                None => None,
            };
            Ok(Some((token, owner)))
        })
        .await
        .map_err(WebError::from)?;
    let Some((stored, owner)) = found else {
        return reject(Some(id.to_owned()), "unknown").await;
    };
    if !secrets::secret_matches(secret, &stored.secret_hash) {
        return reject(Some(id.to_owned()), "wrong secret").await;
    }
    if stored.revoked_at.is_some() {
        return reject(Some(id.to_owned()), "revoked").await;
    }
    if stored.expires_at.is_some_and(|at| at <= now) {
        return reject(Some(id.to_owned()), "expired").await;
    }
    if stored.user_id.is_some() && owner.as_ref().is_none_or(|u| u.disabled) {
        return reject(Some(id.to_owned()), "owner disabled or deleted").await;
    }
    let (token_id, role_id, permissions, group, owner_id) = (
        stored.id.clone(),
        stored.role_id.clone(),
        stored.permissions.clone(),
        stored.host_group_id.clone(),
        owner.as_ref().map(|u| u.id),
    );
    let touch = stored
        .last_used_at
        .is_none_or(|at| now.saturating_sub(at) >= LAST_USED_INTERVAL_MS);
    let ip = client.ip.clone();
    let grants = state
        .db
        .write("api token use", move |tx| {
            let own =
                super::roles::token_grants(tx, role_id.as_deref(), &permissions, group.as_deref())?;
            // Never more than its owner holds now.
            let grants = match owner_id {
                Some(user_id) => own.intersect(&super::roles::grants_of_user(tx, user_id)?),
                None => own,
            };
            if touch {
                identity_store::token_used(tx, &token_id, now, ip.as_deref())?;
            }
            Ok(grants)
        })
        .await
        .map_err(WebError::from)?;
    let actor = Actor::ApiToken(stored.id.clone());
    tracing::Span::current().record("actor", tracing::field::display(&actor));
    Ok(Caller {
        actor,
        user: owner,
        via: Via::Token { id: stored.id },
        grants,
        client,
        proof_at: None,
    })
}
