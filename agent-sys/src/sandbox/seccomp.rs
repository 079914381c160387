//! Turning a [`Policy`] into a BPF program (seccompiler) and installing it
//! on every thread of the process.
//!
//! The installation is done here rather than with seccompiler's helper,
//! which also sets `PR_SET_NO_NEW_PRIVS`: control and the launcher must not
//! have it (see `sandbox::Profile::no_new_privs`), and install their filter
//! with CAP_SYS_ADMIN instead.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::policy::{Arg, Cmp, Kind, Policy, When};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("this architecture ({0}) has no seccomp policy")]
    Arch(&'static str),
    #[error("cannot compile the {policy}: {reason}")]
    Compile {
        policy: &'static str,
        reason: String,
    },
    #[error("cannot install the {policy}: {source}")]
    Install {
        policy: &'static str,
        source: std::io::Error,
    },
    #[error("cannot install the {policy} on every thread: thread {tid} refused")]
    ThreadSync { policy: &'static str, tid: i64 },
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))
}

fn condition(arg: &Arg) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (op, value) = match arg.cmp {
        Cmp::Eq(value) => (SeccompCmpOp::Eq, value),
        Cmp::MaskedEq { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
    };
    SeccompCondition::new(arg.index, SeccompCmpArgLen::Dword, op, value)
}

/// Compiles `policy` for this architecture.
pub fn compile(policy: &Policy) -> Result<BpfProgram, SeccompError> {
    let fail = |reason: String| SeccompError::Compile {
        policy: policy.name,
        reason,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for syscall in policy.syscalls() {
        let Some(nr) = syscall.nr else { continue };
        match syscall.when {
            When::Always => {
                // An unconditional line wins over any conditional one.
                rules.insert(nr, Vec::new());
            }
            When::AnyOf(alternatives) => {
                if rules.get(&nr).is_some_and(Vec::is_empty) {
                    continue;
                }
                let entry = rules.entry(nr).or_default();
                for conditions in alternatives {
                    let conditions = conditions
                        .iter()
                        .map(condition)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| fail(format!("{}: {e}", syscall.name)))?;
                    entry.push(
                        SeccompRule::new(conditions)
                            .map_err(|e| fail(format!("{}: {e}", syscall.name)))?,
                    );
                }
            }
        }
    }
    let (mismatch, matched) = match policy.kind {
        Kind::Allowlist => (SeccompAction::KillProcess, SeccompAction::Allow),
        Kind::Denylist { errno } => (SeccompAction::Allow, SeccompAction::Errno(errno as u32)),
    };
    let arch = target_arch()?;
    let filter =
        SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| fail(e.to_string()))?;
    let mut program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| fail(e.to_string()))?;
    if arch == TargetArch::x86_64 {
        guard_x32(&mut program);
    }
    Ok(program)
}

/// The x32 ABI shares x86_64's audit architecture and numbers its calls
/// with bit 30 set: a deny-list keyed on x86_64 numbers would not see them.
/// Kernels built with x32 support would let `init_module | 0x40000000`
/// through, so any such number kills the process. (An allowlist does not
/// list them anyway; the guard costs two instructions.)
///
/// seccompiler's program starts with its architecture check (load arch,
/// compare, kill on mismatch: three instructions); the guard goes right
/// after it, before seccompiler loads the call number itself. Jumps in BPF
/// are relative and only forward, and none crosses the insertion point.
fn guard_x32(program: &mut BpfProgram) {
    const ARCH_CHECK_LEN: usize = 3;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let guard = [
        // seccomp_data.nr is at offset 0.
        seccompiler::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        seccompiler::sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        seccompiler::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        },
    ];
    let at = ARCH_CHECK_LEN.min(program.len());
    program.splice(at..at, guard);
}

/// Installs `program` on every thread of this process (TSYNC); new threads
/// inherit it. Needs `PR_SET_NO_NEW_PRIVS` or CAP_SYS_ADMIN.
pub fn install(policy: &Policy, program: &BpfProgram) -> Result<(), SeccompError> {
    let len = u16::try_from(program.len()).map_err(|_| SeccompError::Compile {
        policy: policy.name,
        reason: format!("{} instructions is too long", program.len()),
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `program`, a live, properly laid out array
    // of `len` BPF instructions (seccompiler's `sock_filter` is `repr(C)`
    // with the kernel's layout); the kernel copies the program during the
    // call and keeps no pointer to our memory. The call changes no memory of
    // this process.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        rc if rc < 0 => Err(SeccompError::Install {
            policy: policy.name,
            source: std::io::Error::last_os_error(),
        }),
        // With TSYNC, a positive answer is the id of a thread that could
        // not take the filter.
        tid => Err(SeccompError::ThreadSync {
            policy: policy.name,
            tid,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy;
    use super::*;

    #[test]
    fn every_policy_compiles() {
        for p in [
            policy::COLLECTOR,
            policy::MONITOR,
            policy::PLATFORM,
            policy::PRIVILEGED,
            policy::CLONE3_ENOSYS,
        ] {
            let program = compile(&p).expect("compiles");
            assert!(program.len() > 4, "{}", p.name);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_x32_guard_follows_the_architecture_check() {
        let program = compile(&policy::PRIVILEGED).expect("compiles");
        // The architecture check: load arch, compare with x86_64, kill.
        assert_eq!(program[0].k, 4, "loads seccomp_data.arch");
        assert_eq!(program[1].k, 0xC000_003E, "compares with AUDIT_ARCH_X86_64");
        assert_eq!(program[3].k, 0, "the guard loads the call number");
        assert_eq!(program[4].k, 0x4000_0000);
        assert_eq!(program[5].k, libc::SECCOMP_RET_KILL_PROCESS);
    }
}
