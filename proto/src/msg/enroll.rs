//! Enrollment bodies (HTTP, before an agent has an identity).

use super::*;

// ---------------------------------------------------------------------------
// Enrollment

/// Decodes an enrollment request body (received by the backend from anyone).
pub fn decode_enroll_request(bytes: &[u8]) -> Result<pb::EnrollRequest, DecodeError> {
    const M: &str = "EnrollRequest";
    let r = protobuf::<pb::EnrollRequest>(M, bytes)?;
    if r.token.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "token",
        });
    }
    check_str(M, "token", &r.token)?;
    check_str(M, "hostname", &r.hostname)?;
    if r.hostname.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "hostname",
        });
    }
    if r.csr_der.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "csr_der",
        });
    }
    if r.csr_der.len() > 16 * 1024 {
        return Err(invalid(M, "csr_der", "larger than 16 KiB"));
    }
    Ok(r)
}

/// Decodes the backend's enrollment answer (received by the agent).
pub fn decode_enroll_response(bytes: &[u8]) -> Result<pb::EnrollResponse, DecodeError> {
    const M: &str = "EnrollResponse";
    let r = protobuf::<pb::EnrollResponse>(M, bytes)?;
    check_str(M, "agent_id", &r.agent_id)?;
    if r.agent_id.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "agent_id",
        });
    }
    if r.certificate_der.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "certificate_der",
        });
    }
    if r.agent_ca_der.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "agent_ca_der",
        });
    }
    if r.command_signing_key.len() != 32 {
        return Err(invalid(
            M,
            "command_signing_key",
            "an Ed25519 public key has 32 bytes",
        ));
    }
    Ok(r)
}

/// Decodes the backend's enrollment refusal (received by the agent).
pub fn decode_enroll_error(bytes: &[u8]) -> Result<pb::EnrollError, DecodeError> {
    let e = protobuf::<pb::EnrollError>("EnrollError", bytes)?;
    check_str("EnrollError", "message", &e.message)?;
    Ok(e)
}
