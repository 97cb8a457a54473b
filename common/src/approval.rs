//! Approvals: a second person's co-signature that lets one exact request run.
//!
//! An approver signs what a requester prepared (PROTOCOL.md §5.8) with a key only the
//! approver and the zone's servers can make: it is derived from the approver's PSK, which
//! a server derives again from its zone key, so no approval server is needed.
//!
//! ```text
//! approval key = HKDF-Expand(HKDF-Extract("cmdchan/v2", psk of the approver),
//!                            bytes("cmdchan/v3/approval-key") || bytes(ZONE) || bytes(APPROVER), 32)
//! tag          = HMAC-SHA256(approval key, approved bytes)
//! ```
//!
//! The approved bytes cover every field a second person decides on: the zone, the
//! requester, the approver, the command ID (which makes an approval single-use), the
//! command, its arguments, whether it runs as a job, the servers and the expiry.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::ZeroizeOnDrop;

use crate::encode::Canonical;
use crate::ident::Ident;
use crate::keys::{Psk, KEY_LEN};
pub use crate::protocol::{Approval, Approver};
use crate::protocol::{CommandId, Param};

const SALT: &[u8] = b"cmdchan/v2";
const KEY_LABEL: &[u8] = b"cmdchan/v3/approval-key";
const APPROVAL_LABEL: &[u8] = b"cmdchan/v3/approval";

/// What an approver approves: everything of the request but the counter, the issue time
/// (set when it runs) and the requester's own grant.
#[derive(Debug, Clone, Copy)]
pub struct Approved<'a> {
    pub zone: &'a Ident,
    pub requester: &'a Ident,
    pub id: &'a CommandId,
    pub command: &'a str,
    pub args: &'a [String],
    pub params: &'a [Param],
    pub detach: bool,
    pub servers: &'a [Ident],
    pub expires: u64,
}

impl Approved<'_> {
    /// The canonical encoding the tag is over (PROTOCOL.md §5.8).
    pub fn bytes(&self, approver: &Ident) -> Vec<u8> {
        let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let values: Vec<&str> = self.params.iter().map(|p| p.value.as_str()).collect();
        Canonical::new()
            .bytes(APPROVAL_LABEL)
            .bytes(self.zone.as_str().as_bytes())
            .bytes(self.requester.as_str().as_bytes())
            .bytes(approver.as_str().as_bytes())
            .bytes(self.id)
            .bytes(self.command.as_bytes())
            .list(self.args)
            .list(&names)
            .list(&values)
            .u64(u64::from(self.detach))
            .list(self.servers)
            .u64(self.expires)
            .finish()
    }
}

/// The key one approver's approvals are signed with (never stored; made from the PSK).
#[derive(ZeroizeOnDrop)]
pub struct ApprovalKey([u8; KEY_LEN]);

impl ApprovalKey {
    /// The approval key of `approver` in `zone`, whose PSK is `psk`.
    pub fn new(psk: &Psk, zone: &Ident, approver: &Ident) -> Self {
        let info = Canonical::new()
            .bytes(KEY_LABEL)
            .bytes(zone.as_str().as_bytes())
            .bytes(approver.as_str().as_bytes())
            .finish();
        let mut okm = [0u8; KEY_LEN];
        // 32 bytes of output is within HKDF-SHA256's limit.
        let _ = Hkdf::<Sha256>::new(Some(SALT), psk.expose()).expand(&info, &mut okm);
        Self(okm)
    }

    pub fn sign(&self, approved: &Approved<'_>, approver: &Ident) -> [u8; 32] {
        self.mac(approved, approver).finalize().into_bytes().into()
    }

    /// Checks `tag` in constant time.
    pub fn verify(&self, approved: &Approved<'_>, approver: &Ident, tag: &[u8; 32]) -> bool {
        self.mac(approved, approver).verify_slice(tag).is_ok()
    }

    fn mac(&self, approved: &Approved<'_>, approver: &Ident) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&approved.bytes(approver));
        mac
    }
}

impl std::fmt::Debug for ApprovalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApprovalKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::PskIdentity;
    use crate::keys::tests::vector_zone;

    fn ident(s: &str) -> Ident {
        Ident::new(s).expect("valid")
    }

    fn fields() -> (Vec<String>, Vec<Param>, Vec<Ident>) {
        (
            vec!["nginx".to_owned()],
            vec![Param {
                name: "now".to_owned(),
                value: "true".to_owned(),
            }],
            vec![ident("web1"), ident("web2")],
        )
    }

    #[test]
    fn approval_bytes_and_tag_match_protocol_md_vectors() {
        let zone = vector_zone();
        let (args, params, servers) = fields();
        let approved = Approved {
            zone: &ident("prod"),
            requester: &ident("alice"),
            id: &[0x11; 16],
            command: "restart-service",
            args: &args,
            params: &params,
            detach: false,
            servers: &servers,
            expires: 1_893_456_000,
        };
        let bob = ident("bob");
        let psk = zone.psk(&PskIdentity {
            name: bob.clone(),
            epoch: 2,
        });
        let key = ApprovalKey::new(&psk, &ident("prod"), &bob);
        assert_eq!(
            hex::encode(approved.bytes(&bob)),
            "00000013636d646368616e2f76332f617070726f76616c0000000470726f6400000005616c69636500000003626f6200000010111111111111111111111111111111110000000f726573746172742d7365727669636500000001000000056e67696e7800000001000000036e6f77000000010000000474727565000000000000000000000002000000047765623100000004776562320000000070dbd880"
        );
        assert_eq!(
            hex::encode(key.sign(&approved, &bob)),
            "5e0becec5f8c95770b4bdd2834875035f2399010a335674022cb2a06d7e619c5"
        );
    }

    /// PROTOCOL.md §8's approved request frame, also produced by scripts/vectors.py.
    #[test]
    fn an_approved_request_frame_matches_protocol_md_vector() {
        use crate::frame::MsgCodec;
        use crate::protocol::{ClientMsg, Grant, Request};
        use tokio_util::codec::Encoder;
        let zone = vector_zone();
        let (args, params, servers) = fields();
        let (prod, alice, bob) = (ident("prod"), ident("alice"), ident("bob"));
        let approved = Approved {
            zone: &prod,
            requester: &alice,
            id: &[0x11; 16],
            command: "restart-service",
            args: &args,
            params: &params,
            detach: false,
            servers: &servers,
            expires: 1_893_456_000,
        };
        let psk = zone.psk(&PskIdentity {
            name: bob.clone(),
            epoch: 2,
        });
        let lead = Grant {
            role: ident("lead"),
            epoch: 2,
            expires: None,
            servers: vec![],
        };
        let operator = Grant {
            role: ident("operator"),
            epoch: 0,
            expires: None,
            servers: vec![],
        };
        let tags = zone.tag_key();
        let request = Request {
            counter: 1,
            id: [0x11; 16],
            issued_at: 1_893_455_990,
            target: ident("web1"),
            tag: tags.sign(&alice, &operator),
            grant: operator,
            command: "restart-service".into(),
            args: args.clone(),
            params: params.clone(),
            detach: false,
            run: None,
            approval: Some(Approval {
                servers: servers.clone(),
                expires: 1_893_456_000,
                approvers: vec![Approver {
                    name: bob.clone(),
                    generation: 1,
                    grant_tag: tags.sign(&bob, &lead),
                    grant: lead,
                    tag: ApprovalKey::new(&psk, &prod, &bob).sign(&approved, &bob),
                }],
            }),
        };
        let mut buf = bytes::BytesMut::new();
        let message = ClientMsg::Request(request);
        MsgCodec::<ClientMsg, ClientMsg>::new(1 << 20)
            .encode(&message, &mut buf)
            .expect("encode");
        assert_eq!(
            hex::encode(&buf),
            "000000cb03000111111111111111111111111111111111f6b0ef86070477656231086f70657261746f72000000\
             ef7665116093b84313dfeb9cecae0c341064f455d3f0ed7437272a1afea2c64e0f726573746172742d7365727669636501\
             056e67696e7801036e6f770474727565000001020477656231047765623280b1ef86070103626f6201046c65616402\
             00005d3043d07aa94121a65e069c8169c925c35062ba5d12dec702e43d7bc82f10245e0becec5f8c95770b4bdd28348750\
             35f2399010a335674022cb2a06d7e619c5"
        );
    }

    #[test]
    fn a_tag_verifies_only_for_what_was_approved() {
        let zone = vector_zone();
        let (args, params, servers) = fields();
        let prod = ident("prod");
        let alice = ident("alice");
        let approved = Approved {
            zone: &prod,
            requester: &alice,
            id: &[1; 16],
            command: "restart-service",
            args: &args,
            params: &params,
            detach: false,
            servers: &servers,
            expires: 100,
        };
        let bob = ident("bob");
        let psk = zone.psk(&PskIdentity {
            name: bob.clone(),
            epoch: 0,
        });
        let key = ApprovalKey::new(&psk, &prod, &bob);
        let tag = key.sign(&approved, &bob);
        assert!(key.verify(&approved, &bob, &tag));
        let other_args = vec!["apache2".to_owned()];
        let one_server = [ident("web1")];
        let carol = ident("carol");
        let changed = [
            Approved {
                args: &other_args,
                ..approved
            },
            Approved {
                servers: &one_server,
                ..approved
            },
            Approved {
                id: &[2; 16],
                ..approved
            },
            Approved {
                requester: &carol,
                ..approved
            },
            Approved {
                expires: 101,
                ..approved
            },
            Approved {
                detach: true,
                ..approved
            },
            Approved {
                params: &[],
                ..approved
            },
        ];
        for other in &changed {
            assert!(!key.verify(other, &bob, &tag), "{other:?}");
        }
        assert!(!key.verify(&approved, &carol, &tag));
    }
}
