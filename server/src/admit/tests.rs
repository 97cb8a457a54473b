//! Admission checks, each refusal and the order they run in, with time as an input.

use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::protocol::{Grant, Param, Request};

use super::*;
use crate::policy::Policy;
use crate::replay::{Answer, Entry, State, Store, StoreSpec};

const NOW: u64 = 1_800_000_000;

const POLICY: &str = r#"
[roles.operator]
commands = ["ping", "echo", "svc"]
[roles.operator.restrict.svc]
name = ["nginx"]

[commands.svc]
program = "/bin/true"
args = ["restart", "{name}"]
[[commands.svc.params]]
name = "name"
type = "string"
required = true
"#;

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("valid")
}

async fn memory_store() -> Store {
    let opts = crate::replay::StoreOptions {
        max_ids: 100,
        fsync: false,
        server_id: "db1".into(),
        window: std::time::Duration::from_secs(60),
        clock_skew: std::time::Duration::ZERO,
        redis_replicas: 0,
    };
    Store::open(&StoreSpec::Memory, &opts, 0, Default::default())
        .await
        .expect("store")
}

struct Fixture(super::Fixture);

impl std::ops::Deref for Fixture {
    type Target = super::Fixture;
    fn deref(&self) -> &super::Fixture {
        &self.0
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut super::Fixture {
        &mut self.0
    }
}

impl Fixture {
    fn new() -> Self {
        Self(super::Fixture::new(
            Policy::parse(POLICY).expect("policy"),
            1,
        ))
    }

    /// A request that passes every check, signed for `alice`.
    fn request(&self) -> Request {
        let grant = Grant {
            role: ident("operator"),
            epoch: 0,
            expires: Some(NOW + 3600),
            servers: vec![ident("db1")],
        };
        self.signed(grant)
    }

    fn signed(&self, grant: Grant) -> Request {
        self.0.request(grant, "ping", NOW)
    }

    fn check(&self, req: &Request) -> Result<(), Refusal> {
        check(req, 1, &self.key, &self.rules(), NOW).map(|_| ())
    }
}

#[tokio::test]
async fn a_good_request_is_admitted_once() {
    let f = Fixture::new();
    let store = memory_store().await;
    let req = f.request();
    let Ok(Admission::Admitted(admitted)) = admit(&req, 1, &f.key, &f.rules(), &store, NOW).await
    else {
        panic!("not admitted")
    };
    assert_eq!(
        (admitted.client().as_str(), admitted.command()),
        ("alice", "ping")
    );
    assert!(matches!(admitted.action(), Action::Builtin(Builtin::Ping)));
    let again = admit(&req, 1, &f.key, &f.rules(), &store, NOW).await;
    assert!(
        matches!(again, Ok(Admission::Retry(..))),
        "not run a second time: {again:?}"
    );
}

#[test]
fn wrong_counter_is_refused_and_closes() {
    let f = Fixture::new();
    let mut req = f.request();
    req.counter = 2;
    let refusal = f.check(&req).expect_err("refused");
    assert_eq!(
        refusal,
        Refusal::BadCounter {
            expected: 1,
            got: 2
        }
    );
    assert!(refusal.closes_connection());
}

#[test]
fn an_edited_role_breaks_the_tag() {
    let f = Fixture::new();
    let mut req = f.request();
    req.grant.role = ident("admin");
    assert_eq!(f.check(&req), Err(Refusal::BadTag));
}

#[test]
fn another_clients_tag_does_not_verify_for_this_name() {
    let f = Fixture::new();
    let mut req = f.request();
    req.tag = f.tag_key.sign(&ident("bob"), &req.grant);
    assert_eq!(f.check(&req), Err(Refusal::BadTag));
}

#[test]
fn a_grant_for_another_epoch_than_the_key_is_refused() {
    let f = Fixture::new();
    let mut grant = f.request().grant;
    grant.epoch = 1;
    assert_eq!(
        f.check(&f.signed(grant)),
        Err(Refusal::EpochMismatch { grant: 1, key: 0 })
    );
}

#[test]
fn epochs_below_the_minimum_are_revoked() {
    let mut f = Fixture::new();
    f.revocations.min_epoch.insert(ident("alice"), 1);
    assert_eq!(
        f.check(&f.request()),
        Err(Refusal::Revoked { epoch: 0, min: 1 })
    );
}

#[test]
fn expiry_is_refused_from_the_expiry_second_on() {
    let f = Fixture::new();
    let mut grant = f.request().grant;
    grant.expires = Some(NOW + 1);
    assert!(f.check(&f.signed(grant.clone())).is_ok());
    grant.expires = Some(NOW);
    assert_eq!(f.check(&f.signed(grant)), Err(Refusal::Expired { at: NOW }));
}

#[test]
fn audience_is_bound_by_grant_and_target() {
    let f = Fixture::new();
    let mut grant = f.request().grant;
    grant.servers = vec![ident("db2")];
    assert_eq!(
        f.check(&f.signed(grant)),
        Err(Refusal::NotGranted {
            server: ident("db1")
        })
    );
    let mut req = f.request();
    req.target = ident("db2");
    assert_eq!(
        f.check(&req),
        Err(Refusal::WrongTarget {
            target: ident("db2"),
            server: ident("db1")
        })
    );
    let mut anywhere = f.request().grant;
    anywhere.servers.clear();
    assert!(f.check(&f.signed(anywhere)).is_ok());
}

#[test]
fn freshness_window_is_inclusive_on_both_sides() {
    let f = Fixture::new();
    for (issued_at, ok) in [
        (NOW - 60, true),
        (NOW + 60, true),
        (NOW - 61, false),
        (NOW + 61, false),
    ] {
        let mut req = f.request();
        req.issued_at = issued_at;
        assert_eq!(
            f.check(&req).is_ok(),
            ok,
            "issued at now{:+}",
            i128::from(issued_at) - i128::from(NOW)
        );
    }
}

#[test]
fn commands_are_checked_by_name_policy_and_arguments() {
    let f = Fixture::new();
    let mut req = f.request();
    req.command = "rm".into();
    assert_eq!(f.check(&req), Err(Refusal::UnknownCommand("rm".into())));
    req.command = "whoami".into();
    assert_eq!(
        f.check(&req),
        Err(Refusal::Forbidden {
            role: ident("operator"),
            command: "whoami".into()
        })
    );
    req.command = "ping".into();
    req.args = vec!["x".into()];
    assert!(matches!(f.check(&req), Err(Refusal::BadArguments(_))));
}

#[test]
fn the_first_failing_check_wins() {
    let f = Fixture::new();
    // Expired, stale and for another target at once: expiry comes first.
    let mut grant = f.request().grant;
    grant.expires = Some(NOW - 10);
    let mut req = f.signed(grant);
    req.issued_at = NOW - 1000;
    req.target = ident("elsewhere");
    assert_eq!(f.check(&req), Err(Refusal::Expired { at: NOW - 10 }));
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_id() {
    let f = Fixture::new();
    let store = memory_store().await;
    let mut req = f.request();
    req.command = "whoami".into();
    assert!(admit(&req, 1, &f.key, &f.rules(), &store, NOW)
        .await
        .is_err());
    assert!(store.is_empty());
}

#[tokio::test]
async fn an_id_is_forgotten_only_once_its_request_is_stale() {
    let f = Fixture::new();
    let store = memory_store().await;
    let req = f.request();
    admit(&req, 1, &f.key, &f.rules(), &store, NOW)
        .await
        .expect("first");
    // At the last second the request is fresh, the ID is still remembered.
    let last = admit(&req, 1, &f.key, &f.rules(), &store, NOW + 60).await;
    assert!(matches!(last, Ok(Admission::Retry(..))), "{last:?}");
    // One second later the request is stale, so forgetting the ID is safe.
    assert!(matches!(
        admit(&req, 1, &f.key, &f.rules(), &store, NOW + 61).await,
        Err(Refusal::Stale { .. })
    ));
}

#[test]
fn program_arguments_are_bound_checked_and_restricted_by_role() {
    let f = Fixture::new();
    let mut req = f.request();
    req.command = "svc".into();
    req.args = vec!["nginx".into()];
    let checked = check(&req, 1, &f.key, &f.rules(), NOW).expect("admitted");
    let Action::Run(program, inv) = checked.admitted.action() else {
        panic!("not a program")
    };
    assert_eq!(program.name, "svc");
    assert_eq!(inv.argv, ["restart", "nginx"]);
    req.args = vec!["apache".into()];
    assert!(matches!(f.check(&req), Err(Refusal::ForbiddenValue { .. })));
    req.args = vec!["nginx; reboot".into()];
    assert!(matches!(f.check(&req), Err(Refusal::ForbiddenValue { .. })));
    req.args = vec![];
    assert!(matches!(f.check(&req), Err(Refusal::BadArguments(_))));
    req.params = vec![Param {
        name: "other".into(),
        value: "x".into(),
    }];
    assert!(matches!(f.check(&req), Err(Refusal::BadArguments(_))));
}

#[tokio::test]
async fn over_the_execution_limit_is_busy_and_does_not_use_up_the_id() {
    let f = Fixture::new();
    let store = memory_store().await;
    let mut first = f.request();
    first.command = "svc".into();
    first.args = vec!["nginx".into()];
    let mut second = first.clone();
    second.id = [6; 16];
    let running = admit(&first, 1, &f.key, &f.rules(), &store, NOW)
        .await
        .expect("first runs");
    assert!(matches!(
        admit(&second, 1, &f.key, &f.rules(), &store, NOW).await,
        Err(Refusal::Busy(_))
    ));
    assert_eq!(store.len(), 1, "the busy request's ID was not recorded");
    drop(running);
    assert!(
        admit(&second, 1, &f.key, &f.rules(), &store, NOW)
            .await
            .is_ok(),
        "the slot is free again"
    );
}

#[tokio::test]
async fn the_same_clients_id_again_is_a_retry_and_another_clients_is_a_replay() {
    let f = Fixture::new();
    let store = memory_store().await;
    let req = f.request();
    admit(&req, 1, &f.key, &f.rules(), &store, NOW)
        .await
        .expect("first");
    let again = admit(&req, 1, &f.key, &f.rules(), &store, NOW).await;
    // A built-in keeps no answer: its retry runs it again.
    assert!(
        matches!(again, Ok(Admission::Retry(Entry { ref client, state: State::Done(Answer::Builtin), .. }, _))
            if client == "alice"),
        "{again:?}"
    );
    // The same client, the same ID, another request: not a retry.
    let mut other = req.clone();
    other.command = "echo".into();
    other.args = vec!["hi".into()];
    assert_eq!(
        admit(&other, 1, &f.key, &f.rules(), &store, NOW)
            .await
            .err(),
        Some(Refusal::Reused)
    );
    // Bob proves his own name and holds a valid tag, yet reuses alice's ID.
    let bob = PskIdentity {
        name: ident("bob"),
        epoch: 0,
    };
    let mut stolen = req.clone();
    stolen.tag = f.tag_key.sign(&bob.name, &stolen.grant);
    assert_eq!(
        admit(&stolen, 1, &bob, &f.rules(), &store, NOW).await.err(),
        Some(Refusal::Replay)
    );
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_when_to_come_back_and_its_id_is_not_used() {
    let f = Fixture::new();
    let store = memory_store().await;
    let mut rules = f.rules();
    rules.rate = (1.0, 1.0);
    let first = f.request();
    assert!(admit(&first, 1, &f.key, &rules, &store, NOW).await.is_ok());
    let mut second = f.request();
    second.id = [9; 16];
    let Err(refusal) = admit(&second, 1, &f.key, &rules, &store, NOW).await else {
        panic!("admitted")
    };
    assert!(
        matches!(refusal, Refusal::RateLimited { .. }),
        "{refusal:?}"
    );
    let failure = refusal.failure();
    assert_eq!(
        failure.code,
        cmdchan_common::protocol::ErrorCode::RateLimited
    );
    assert!(
        failure
            .retry_after_ms
            .is_some_and(|ms| ms > 900 && ms <= 1000),
        "{failure:?}"
    );
    assert_eq!(store.len(), 1, "the limited request's ID was not recorded");
}

#[test]
fn a_revoked_name_is_refused_whatever_its_epoch_and_the_connection_ends() {
    let mut f = Fixture::new();
    f.revocations.names.insert(ident("alice"));
    let refusal = f.check(&f.request()).expect_err("revoked");
    assert_eq!(refusal, Refusal::NameRevoked);
    assert!(refusal.closes_connection());
}
