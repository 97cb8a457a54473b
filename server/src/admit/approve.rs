//! Admission's approval check (PROTOCOL.md §5.8): a command whose policy says
//! `approvals = N` runs only with N distinct approvers' co-signatures over this exact
//! request, each from a role in its `approvers`, none of them the requester.
//!
//! An approval is checked from the zone key alone: the approver's grant by its key-use
//! tag, the approval by a key derived from the approver's PSK, which the server derives
//! again. The checks run in a fixed order, so each tampering meets its own refusal.

use std::collections::BTreeSet;

use cmdchan_common::approval::{ApprovalKey, Approved, Approver};
use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::protocol::Request;

use super::{Refusal, Rules};
use crate::policy::{Program, MAX_APPROVERS};

/// The longest an approval may be valid: the server keeps a used approval's command ID
/// until it expires, and a request approved for weeks is not a two-person decision.
const MAX_LIFETIME: u64 = 7 * 24 * 3600;

/// How an admitted program came to be allowed to run, as far as approvals go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Approvals {
    /// Its policy needs none, and none were sent.
    #[default]
    None,
    /// Approved by these approvers (name and role, in the request's order).
    By(Vec<(Ident, Ident)>),
    /// Run without the approvals its policy asks for, by an emergency role.
    Emergency,
}

impl Approvals {
    /// The unix second until which the command ID must be kept: an approval is
    /// single-use for as long as it is valid, not only for the freshness window.
    pub fn keep_until(&self, req: &Request, fresh_until: u64) -> u64 {
        match (self, &req.approval) {
            (Approvals::By(_), Some(a)) => fresh_until.max(a.expires),
            _ => fresh_until,
        }
    }
}

/// Checks the approvals `req` carries against what `program` needs.
pub fn check(
    req: &Request,
    requester: &Ident,
    program: &Program,
    rules: &Rules<'_>,
    now: u64,
) -> Result<Approvals, Refusal> {
    let Some(approval) = &req.approval else {
        return match program.approvals {
            0 => Ok(Approvals::None),
            _ if rules.policy.is_emergency(&req.grant.role) => Ok(Approvals::Emergency),
            needed => Err(Refusal::ApprovalRequired { needed, have: 0 }),
        };
    };
    if program.approvals == 0 {
        return Err(Refusal::BadArguments(format!(
            "{} needs no approvals; send it without them",
            program.name
        )));
    }
    if now >= approval.expires {
        return Err(Refusal::ApprovalExpired {
            at: approval.expires,
        });
    }
    if approval.expires > now.saturating_add(MAX_LIFETIME) {
        return Err(Refusal::BadApproval {
            approver: requester.clone(),
            why: "is valid for longer than 7 days; prepare it with a shorter expiry",
        });
    }
    if approval.approvers.len() > MAX_APPROVERS {
        return Err(Refusal::BadApproval {
            approver: requester.clone(),
            why: "carries more than 32 approvals",
        });
    }
    if !approval.servers.contains(rules.server_id) {
        return Err(Refusal::NotApprovedHere {
            server: rules.server_id.clone(),
        });
    }
    let approved = Approved {
        zone: rules.zone,
        requester,
        id: &req.id,
        command: &req.command,
        args: &req.args,
        params: &req.params,
        detach: req.detach,
        servers: &approval.servers,
        expires: approval.expires,
    };
    let mut by = Vec::with_capacity(approval.approvers.len());
    let mut seen = BTreeSet::new();
    for approver in &approval.approvers {
        if !seen.insert(&approver.name) {
            return Err(Refusal::BadApproval {
                approver: approver.name.clone(),
                why: "appears twice; each approver signs once",
            });
        }
        one(approver, &approved, program, rules, now)?;
        by.push((approver.name.clone(), approver.grant.role.clone()));
    }
    if by.len() < program.approvals {
        return Err(Refusal::ApprovalRequired {
            needed: program.approvals,
            have: by.len(),
        });
    }
    Ok(Approvals::By(by))
}

/// One approver's co-signature: not the requester; a grant of this zone that verifies,
/// is not revoked or expired, and covers this server; a role that may approve the
/// command; a tag over exactly this request.
fn one(
    approver: &Approver,
    approved: &Approved<'_>,
    program: &Program,
    rules: &Rules<'_>,
    now: u64,
) -> Result<(), Refusal> {
    let name = &approver.name;
    if name == approved.requester {
        return Err(Refusal::SelfApproval);
    }
    let bad = |why: &'static str| Refusal::BadApproval {
        approver: name.clone(),
        why,
    };
    let zone_key = rules
        .zone_keys
        .get(&approver.generation)
        .ok_or(bad("is of a zone key generation this server does not hold"))?;
    if !zone_key
        .tag_key()
        .verify(name, &approver.grant, &approver.grant_tag)
    {
        return Err(bad("carries a grant that does not verify in this zone"));
    }
    let key = PskIdentity {
        name: name.clone(),
        epoch: approver.grant.epoch,
    };
    let revoked = rules.revocations.check(&key).is_err()
        || rules
            .revocations
            .retired(&zone_key.zone, approver.generation);
    let expired = approver.grant.expires.is_some_and(|at| now >= at);
    if revoked || expired {
        return Err(Refusal::ApproverRevoked {
            approver: name.clone(),
        });
    }
    let role = &approver.grant.role;
    let covers =
        approver.grant.servers.is_empty() || approver.grant.servers.contains(rules.server_id);
    if !covers || !program.approvers.contains(role) {
        return Err(Refusal::ApproverNotAllowed {
            approver: name.clone(),
            role: role.clone(),
            command: program.name.clone(),
        });
    }
    let psk = zone_key.psk(&key);
    let approval_key = ApprovalKey::new(&psk, &zone_key.zone, name);
    match approval_key.verify(approved, name, &approver.tag) {
        true => Ok(()),
        false => Err(bad(
            "does not match this request (its command, arguments, servers, ID or expiry differ from what was approved)",
        )),
    }
}
