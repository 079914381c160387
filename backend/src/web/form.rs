//! Reading HTML form bodies (`application/x-www-form-urlencoded`) whose
//! fields may repeat (checkboxes), which a struct cannot express.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use super::WebError;

/// The largest form body read.
const MAX_FORM: usize = 64 * 1024;

/// A form's fields in order, repeated ones included.
#[derive(Debug, Clone, Default)]
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    pub fn parse(body: &[u8]) -> FormFields {
        FormFields(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// The first value of `name`, or None when absent or empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for FormFields {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|_| WebError::BadRequest("cannot read the form".into()))?;
        if body.len() > MAX_FORM {
            return Err(WebError::BadRequest("the form is too large".into()));
        }
        Ok(FormFields::parse(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_kept() {
        let f = FormFields::parse(
            b"name=ops+team&permissions=hosts%3Aread&permissions=metrics%3Aread&empty=",
        );
        assert_eq!(f.get("name"), "ops team");
        assert_eq!(f.all("permissions"), ["hosts:read", "metrics:read"]);
        assert_eq!(f.opt("empty"), None);
        assert_eq!(f.get("absent"), "");
    }
}
