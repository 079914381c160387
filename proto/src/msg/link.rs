//! The uplink's frames in both directions: agent to backend, backend to agent.

use super::*;
use crate::upgrade::validate_command_output;

// ---------------------------------------------------------------------------
// Uplink: agent -> backend

/// A frame from the agent to the backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    Hello(Hello),
    Record(Record),
    /// Liveness probe; answered with an [`Downlink::Ack`].
    Ping,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    /// Records the agent's spool dropped because it was full, since it was created.
    pub spool_dropped_total: u64,
}

/// One durable record. `seq` is at least 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub created_at_unix_ms: i64,
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    Facts(pb::HostFacts),
    Metrics(pb::Metrics),
    AgentHealth(pb::AgentHealth),
    CommandResult(pb::CommandResult),
    Packages(pb::PackageReport),
    CommandOutput(pb::CommandOutput),
}

impl RecordBody {
    /// A short name for logs and the backend's record ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordBody::Facts(_) => "facts",
            RecordBody::Metrics(_) => "metrics",
            RecordBody::AgentHealth(_) => "agent_health",
            RecordBody::CommandResult(_) => "command_result",
            RecordBody::Packages(_) => "packages",
            RecordBody::CommandOutput(_) => "command_output",
        }
    }
}

impl TryFrom<pb::Record> for Record {
    type Error = DecodeError;

    fn try_from(r: pb::Record) -> Result<Self, DecodeError> {
        const M: &str = "Record";
        if r.seq == 0 {
            return Err(invalid(M, "seq", "sequence numbers start at 1"));
        }
        let body = match r.body.ok_or(DecodeError::Missing {
            message: M,
            field: "body",
        })? {
            pb::record::Body::Facts(f) => {
                validate_facts(&f)?;
                RecordBody::Facts(f)
            }
            pb::record::Body::Metrics(m) => {
                validate_metrics(&m)?;
                RecordBody::Metrics(m)
            }
            pb::record::Body::AgentHealth(h) => {
                validate_agent_health(&h)?;
                RecordBody::AgentHealth(h)
            }
            pb::record::Body::CommandResult(c) => {
                validate_command_result(&c)?;
                RecordBody::CommandResult(c)
            }
            pb::record::Body::Packages(p) => {
                validate_package_report(&p)?;
                RecordBody::Packages(p)
            }
            pb::record::Body::CommandOutput(o) => {
                validate_command_output(&o)?;
                RecordBody::CommandOutput(o)
            }
        };
        Ok(Record {
            seq: r.seq,
            created_at_unix_ms: r.created_at_unix_ms,
            body,
        })
    }
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        let body = match r.body {
            RecordBody::Facts(f) => pb::record::Body::Facts(f),
            RecordBody::Metrics(m) => pb::record::Body::Metrics(m),
            RecordBody::AgentHealth(h) => pb::record::Body::AgentHealth(h),
            RecordBody::CommandResult(c) => pb::record::Body::CommandResult(c),
            RecordBody::Packages(p) => pb::record::Body::Packages(p),
            RecordBody::CommandOutput(o) => pb::record::Body::CommandOutput(o),
        };
        pb::Record {
            seq: r.seq,
            created_at_unix_ms: r.created_at_unix_ms,
            body: Some(body),
        }
    }
}

impl TryFrom<pb::UplinkFrame> for Uplink {
    type Error = DecodeError;

    fn try_from(f: pb::UplinkFrame) -> Result<Self, DecodeError> {
        match f.msg.ok_or(DecodeError::Missing {
            message: "UplinkFrame",
            field: "msg",
        })? {
            pb::uplink_frame::Msg::Hello(h) => {
                check_str("Hello", "agent_version", &h.agent_version)?;
                Ok(Uplink::Hello(Hello {
                    protocol_version: h.protocol_version,
                    agent_version: h.agent_version,
                    spool_dropped_total: h.spool_dropped_total,
                }))
            }
            pb::uplink_frame::Msg::Record(r) => Ok(Uplink::Record(r.try_into()?)),
            pb::uplink_frame::Msg::Heartbeat(_) => Ok(Uplink::Ping),
        }
    }
}

impl From<Uplink> for pb::UplinkFrame {
    fn from(u: Uplink) -> Self {
        let msg = match u {
            Uplink::Hello(h) => pb::uplink_frame::Msg::Hello(pb::Hello {
                protocol_version: h.protocol_version,
                agent_version: h.agent_version,
                spool_dropped_total: h.spool_dropped_total,
            }),
            Uplink::Record(r) => pb::uplink_frame::Msg::Record(r.into()),
            Uplink::Ping => pb::uplink_frame::Msg::Heartbeat(pb::Heartbeat {}),
        };
        pb::UplinkFrame { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by an agent.
pub fn decode_uplink(bytes: &[u8]) -> Result<Uplink, DecodeError> {
    protobuf::<pb::UplinkFrame>("UplinkFrame", bytes)?.try_into()
}

/// Decodes one spooled record (the agent's own spool holds `pb::Record` bodies).
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    protobuf::<pb::Record>("Record", bytes)?.try_into()
}

// ---------------------------------------------------------------------------
// Downlink: backend -> agent

/// A frame from the backend to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    HelloAck {
        protocol_version: u32,
        stored_up_to_seq: u64,
        server_time_unix_ms: i64,
    },
    Ack {
        up_to_seq: u64,
    },
    Refused(String),
    /// A signed command for control, passed on untouched.
    Command(pb::SignedCommand),
    /// The SHA-256 of the package inventory the backend holds for this
    /// agent; `None` when it holds none to build a change on.
    PackagesHeld(Option<[u8; 32]>),
}

/// A `PackagesHeld` digest: empty for none, else exactly 32 bytes.
pub(super) fn packages_held(
    message: &'static str,
    h: &pb::PackagesHeld,
) -> Result<Option<[u8; 32]>, DecodeError> {
    if h.sha256.is_empty() {
        return Ok(None);
    }
    h.sha256
        .as_slice()
        .try_into()
        .map(Some)
        .map_err(|_| invalid(message, "packages_held.sha256", "not 32 bytes"))
}

pub(super) fn packages_held_to_wire(digest: Option<[u8; 32]>) -> pb::PackagesHeld {
    pb::PackagesHeld {
        sha256: digest.map(|d| d.to_vec()).unwrap_or_default(),
    }
}

impl TryFrom<pb::DownlinkFrame> for Downlink {
    type Error = DecodeError;

    fn try_from(f: pb::DownlinkFrame) -> Result<Self, DecodeError> {
        Ok(
            match f.msg.ok_or(DecodeError::Missing {
                message: "DownlinkFrame",
                field: "msg",
            })? {
                pb::downlink_frame::Msg::HelloAck(a) => Downlink::HelloAck {
                    protocol_version: a.protocol_version,
                    stored_up_to_seq: a.stored_up_to_seq,
                    server_time_unix_ms: a.server_time_unix_ms,
                },
                pb::downlink_frame::Msg::Ack(a) => Downlink::Ack {
                    up_to_seq: a.up_to_seq,
                },
                pb::downlink_frame::Msg::Refused(reason) => {
                    check_str("DownlinkFrame", "refused", &reason)?;
                    Downlink::Refused(reason)
                }
                pb::downlink_frame::Msg::Command(c) => {
                    validate_signed_command(&c)?;
                    Downlink::Command(c)
                }
                pb::downlink_frame::Msg::PackagesHeld(h) => {
                    Downlink::PackagesHeld(packages_held("DownlinkFrame", &h)?)
                }
            },
        )
    }
}

impl From<Downlink> for pb::DownlinkFrame {
    fn from(d: Downlink) -> Self {
        let msg = match d {
            Downlink::HelloAck {
                protocol_version,
                stored_up_to_seq,
                server_time_unix_ms,
            } => pb::downlink_frame::Msg::HelloAck(pb::HelloAck {
                protocol_version,
                stored_up_to_seq,
                server_time_unix_ms,
            }),
            Downlink::Ack { up_to_seq } => pb::downlink_frame::Msg::Ack(pb::Ack { up_to_seq }),
            Downlink::Refused(reason) => pb::downlink_frame::Msg::Refused(reason),
            Downlink::Command(c) => pb::downlink_frame::Msg::Command(c),
            Downlink::PackagesHeld(d) => {
                pb::downlink_frame::Msg::PackagesHeld(packages_held_to_wire(d))
            }
        };
        pb::DownlinkFrame { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by the backend.
pub fn decode_downlink(bytes: &[u8]) -> Result<Downlink, DecodeError> {
    protobuf::<pb::DownlinkFrame>("DownlinkFrame", bytes)?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_body;

    fn metrics() -> pb::Metrics {
        pb::Metrics {
            collected_at_unix_ms: 1,
            cpu_percent: 12.5,
            memory_total_bytes: 100,
            memory_available_bytes: 40,
            swap_total_bytes: 10,
            swap_free_bytes: 10,
            load_1: 0.5,
            load_5: 0.4,
            load_15: 0.3,
            filesystems: vec![pb::FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 10,
                used_bytes: 5,
                available_bytes: 5,
            }],
            network: vec![],
            uptime_seconds: 3,
            process_count: 4,
        }
    }

    #[test]
    fn record_round_trip() {
        let rec = Record {
            seq: 9,
            created_at_unix_ms: 5,
            body: RecordBody::Metrics(metrics()),
        };
        let frame: pb::UplinkFrame = Uplink::Record(rec.clone()).into();
        assert_eq!(decode_uplink(&encode_body(&frame)), Ok(Uplink::Record(rec)));
    }

    #[test]
    fn hello_round_trip_carries_the_spool_drop_count() {
        let hello = Hello {
            protocol_version: 1,
            agent_version: "0.1.0".to_owned(),
            spool_dropped_total: 12_345,
        };
        let frame: pb::UplinkFrame = Uplink::Hello(hello.clone()).into();
        assert_eq!(
            decode_uplink(&encode_body(&frame)),
            Ok(Uplink::Hello(hello))
        );
    }

    #[test]
    fn missing_oneof_is_a_typed_error() {
        let frame = pb::UplinkFrame { msg: None };
        assert_eq!(
            decode_uplink(&encode_body(&frame)),
            Err(DecodeError::Missing {
                message: "UplinkFrame",
                field: "msg"
            })
        );
        let rec = pb::UplinkFrame {
            msg: Some(pb::uplink_frame::Msg::Record(pb::Record {
                seq: 1,
                created_at_unix_ms: 0,
                body: None,
            })),
        };
        assert_eq!(
            decode_uplink(&encode_body(&rec)),
            Err(DecodeError::Missing {
                message: "Record",
                field: "body"
            })
        );
    }

    fn package_report(change: pb::package_report::Change) -> pb::Record {
        pb::Record {
            seq: 7,
            created_at_unix_ms: 1,
            body: Some(pb::record::Body::Packages(pb::PackageReport {
                collected_at_unix_ms: 1,
                lists_updated_at_unix_ms: 0,
                reboot_required: false,
                reboot_reasons: Vec::new(),
                change: Some(change),
            })),
        }
    }

    fn openssl() -> pb::InstalledPackage {
        pb::InstalledPackage {
            name: "openssl".into(),
            arch: "amd64".into(),
            version: "3.0.11-1~deb12u2".into(),
            source: "openssl".into(),
            held: false,
        }
    }

    #[test]
    fn package_reports_are_checked_before_anything_uses_them() {
        use pb::package_report::Change;
        let whole = |manager: i32, installed: Vec<pb::InstalledPackage>, status: i32| {
            Change::Whole(pb::PackageInventory {
                manager,
                installed,
                updates: vec![pb::PackageUpdate {
                    name: "bash".into(),
                    arch: "amd64".into(),
                    installed: "5.2.15-2".into(),
                    candidate: "5.2.15-2+b7".into(),
                    status,
                    ..Default::default()
                }],
            })
        };
        let decode = |change| decode_record(&encode_body(&package_report(change)));
        let ok = decode(whole(1, vec![openssl()], 1)).expect("a whole inventory");
        assert_eq!(ok.body.kind(), "packages");
        let refused = |change, field: &str| match decode(change) {
            Err(DecodeError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected {field} to be refused, got {other:?}"),
        };
        refused(whole(0, vec![openssl()], 1), "whole.manager");
        refused(whole(9, vec![openssl()], 1), "whole.manager");
        refused(whole(1, vec![openssl()], 0), "updates.status");
        let mut nameless = openssl();
        nameless.name.clear();
        refused(whole(1, vec![nameless], 1), "package name");
        let mut versionless = openssl();
        versionless.version.clear();
        refused(whole(1, vec![versionless], 1), "package version");
        let mut control = openssl();
        control.source = "a\u{7}b".into();
        refused(whole(1, vec![control], 1), "installed.source");
        refused(whole(1, vec![openssl(); MAX_PACKAGES + 1], 1), "installed");

        let delta = |base: Vec<u8>, removed_update_version: &str| {
            Change::Delta(pb::PackageDelta {
                base_sha256: base,
                result_sha256: vec![2; 32],
                installed_set: vec![openssl()],
                installed_removed: Vec::new(),
                updates_set: Vec::new(),
                updates_removed: vec![pb::PackageKey {
                    name: "openssl".into(),
                    arch: "amd64".into(),
                    version: removed_update_version.into(),
                }],
            })
        };
        assert!(decode(delta(vec![1; 32], "")).is_ok());
        refused(delta(vec![1; 31], ""), "delta.base_sha256");
        refused(delta(vec![1; 32], "3.0"), "package version");
        assert!(matches!(
            decode_record(&encode_body(&pb::Record {
                body: Some(pb::record::Body::Packages(pb::PackageReport::default())),
                ..package_report(whole(1, Vec::new(), 1))
            })),
            Err(DecodeError::Missing {
                field: "change",
                ..
            })
        ));
    }

    #[test]
    fn seq_zero_and_bad_values_are_refused() {
        let rec = pb::Record {
            seq: 0,
            created_at_unix_ms: 0,
            body: Some(pb::record::Body::Metrics(metrics())),
        };
        assert!(matches!(
            decode_record(&encode_body(&rec)),
            Err(DecodeError::Invalid { field: "seq", .. })
        ));
        let mut m = metrics();
        m.cpu_percent = f64::NAN;
        assert!(matches!(
            validate_metrics(&m),
            Err(DecodeError::Invalid {
                field: "cpu_percent",
                ..
            })
        ));
        let mut m = metrics();
        m.memory_available_bytes = 1000;
        assert!(validate_metrics(&m).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            decode_uplink(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf { .. })
        ));
        assert!(decode_from_child(&[0x0a, 0x05, 0x01]).is_err());
        assert!(decode_enroll_request(&[]).is_err());
    }
}
