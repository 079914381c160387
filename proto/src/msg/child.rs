//! Local IPC between the platform and its children.

use super::*;
use crate::upgrade::validate_command_output;

// ---------------------------------------------------------------------------
// Local IPC

/// The three child roles the platform supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Collector,
    Monitor,
    Control,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Collector, Role::Monitor, Role::Control];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Monitor => "monitor",
            Role::Control => "control",
        }
    }

    pub fn parse(s: &str) -> Result<Role, DecodeError> {
        match s {
            "collector" => Ok(Role::Collector),
            "monitor" => Ok(Role::Monitor),
            "control" => Ok(Role::Control),
            other => Err(invalid(
                "ChildHello",
                "role",
                format!("unknown role {other:?}"),
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message from the platform to a child.
#[derive(Debug, Clone, PartialEq)]
pub enum ToChild {
    Config {
        metrics_interval_ms: u64,
    },
    HealthCheck {
        nonce: u64,
    },
    CollectFacts,
    /// For control: a command exactly as the backend signed it.
    Execute(pb::SignedCommand),
    /// For the collector: the package inventory the backend holds (see
    /// [`Downlink::PackagesHeld`]).
    PackagesHeld(Option<[u8; 32]>),
}

impl From<ToChild> for pb::ToChild {
    fn from(m: ToChild) -> Self {
        let msg = match m {
            ToChild::Config {
                metrics_interval_ms,
            } => pb::to_child::Msg::Config(pb::ChildConfig {
                metrics_interval_ms,
            }),
            ToChild::HealthCheck { nonce } => {
                pb::to_child::Msg::HealthCheck(pb::HealthCheck { nonce })
            }
            ToChild::CollectFacts => pb::to_child::Msg::CollectFacts(pb::CollectFacts {}),
            ToChild::Execute(c) => pb::to_child::Msg::Execute(c),
            ToChild::PackagesHeld(d) => pb::to_child::Msg::PackagesHeld(packages_held_to_wire(d)),
        };
        pb::ToChild { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by the platform to a child.
pub fn decode_to_child(bytes: &[u8]) -> Result<ToChild, DecodeError> {
    let m = protobuf::<pb::ToChild>("ToChild", bytes)?;
    Ok(
        match m.msg.ok_or(DecodeError::Missing {
            message: "ToChild",
            field: "msg",
        })? {
            pb::to_child::Msg::Config(c) => {
                if c.metrics_interval_ms == 0 {
                    return Err(invalid(
                        "ChildConfig",
                        "metrics_interval_ms",
                        "must be positive",
                    ));
                }
                ToChild::Config {
                    metrics_interval_ms: c.metrics_interval_ms,
                }
            }
            pb::to_child::Msg::HealthCheck(h) => ToChild::HealthCheck { nonce: h.nonce },
            pb::to_child::Msg::CollectFacts(_) => ToChild::CollectFacts,
            pb::to_child::Msg::Execute(c) => {
                validate_signed_command(&c)?;
                ToChild::Execute(c)
            }
            pb::to_child::Msg::PackagesHeld(h) => {
                ToChild::PackagesHeld(packages_held("ToChild", &h)?)
            }
        },
    )
}

/// A message from a child to the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum FromChild {
    Hello {
        role: Role,
        pid: u32,
        version: String,
        sandbox: String,
    },
    Health {
        nonce: u64,
        ok: bool,
        detail: String,
    },
    Facts(pb::HostFacts),
    Metrics(pb::Metrics),
    CommandResult(pb::CommandResult),
    Packages(pb::PackageReport),
    CommandOutput(pb::CommandOutput),
}

impl From<FromChild> for pb::FromChild {
    fn from(m: FromChild) -> Self {
        let msg = match m {
            FromChild::Hello {
                role,
                pid,
                version,
                sandbox,
            } => pb::from_child::Msg::Hello(pb::ChildHello {
                role: role.as_str().to_owned(),
                pid,
                version,
                sandbox,
            }),
            FromChild::Health { nonce, ok, detail } => {
                pb::from_child::Msg::Health(pb::HealthReport { nonce, ok, detail })
            }
            FromChild::Facts(f) => pb::from_child::Msg::Facts(f),
            FromChild::Metrics(m) => pb::from_child::Msg::Metrics(m),
            FromChild::CommandResult(r) => pb::from_child::Msg::CommandResult(r),
            FromChild::Packages(p) => pb::from_child::Msg::Packages(p),
            FromChild::CommandOutput(o) => pb::from_child::Msg::CommandOutput(o),
        };
        pb::FromChild { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by a child to the platform.
pub fn decode_from_child(bytes: &[u8]) -> Result<FromChild, DecodeError> {
    let m = protobuf::<pb::FromChild>("FromChild", bytes)?;
    Ok(
        match m.msg.ok_or(DecodeError::Missing {
            message: "FromChild",
            field: "msg",
        })? {
            pb::from_child::Msg::Hello(h) => {
                check_str("ChildHello", "version", &h.version)?;
                check_str("ChildHello", "sandbox", &h.sandbox)?;
                FromChild::Hello {
                    role: Role::parse(&h.role)?,
                    pid: h.pid,
                    version: h.version,
                    sandbox: h.sandbox,
                }
            }
            pb::from_child::Msg::Health(h) => {
                check_str("HealthReport", "detail", &h.detail)?;
                FromChild::Health {
                    nonce: h.nonce,
                    ok: h.ok,
                    detail: h.detail,
                }
            }
            pb::from_child::Msg::Facts(f) => {
                validate_facts(&f)?;
                FromChild::Facts(f)
            }
            pb::from_child::Msg::Metrics(m) => {
                validate_metrics(&m)?;
                FromChild::Metrics(m)
            }
            pb::from_child::Msg::CommandResult(r) => {
                validate_command_result(&r)?;
                FromChild::CommandResult(r)
            }
            pb::from_child::Msg::Packages(p) => {
                validate_package_report(&p)?;
                FromChild::Packages(p)
            }
            pb::from_child::Msg::CommandOutput(o) => {
                validate_command_output(&o)?;
                FromChild::CommandOutput(o)
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_body;

    #[test]
    fn child_messages_round_trip() {
        let hello = FromChild::Hello {
            role: Role::Monitor,
            pid: 7,
            version: "0.1.0".into(),
            sandbox: "none".into(),
        };
        let pbm: pb::FromChild = hello.clone().into();
        assert_eq!(decode_from_child(&encode_body(&pbm)), Ok(hello));
        let check = ToChild::HealthCheck { nonce: 99 };
        let pbm: pb::ToChild = check.clone().into();
        assert_eq!(decode_to_child(&encode_body(&pbm)), Ok(check));
    }
}
