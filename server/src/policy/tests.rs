//! Policy files: programs, parameters, roles and their restrictions, and load-time errors.

use cmdchan_common::protocol::Param;

use super::*;

fn role(s: &str) -> Ident {
    Ident::new(s).expect("valid")
}

const POLICY: &str = r#"
[default]
commands = ["ping"]

[roles.web]
commands = ["restart", "commands", "describe"]
[roles.web.restrict.restart]
service = ["nginx", "php-fpm"]

[roles.admin]
commands = ["restart", "echo"]

[commands.restart]
description = "restart a service"
program = "/bin/echo"
args = ["restart", "{service}", "{now}"]
timeout = "5s"
[[commands.restart.params]]
name = "service"
type = "string"
regex = "[a-z-]+"
required = true
[[commands.restart.params]]
name = "now"
type = "flag"
arg = "--now"
"#;

#[test]
fn default_policy_allows_only_the_built_ins_to_every_role() {
    let p = Policy::builtin_default();
    let names: Vec<String> = p
        .commands_for(&role("anyone"))
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        [
            "ping",
            "whoami",
            "echo",
            "commands",
            "describe",
            "job.status",
            "job.list",
            "job.wait",
            "job.output",
            "job.attach",
            "revocations.status",
            "revocations.push"
        ]
    );
}

#[test]
fn roles_get_the_default_plus_their_own() {
    let p = Policy::parse(POLICY).expect("parse");
    // Every role may follow its own jobs and carry revocation lists, whatever the
    // policy says.
    let names = |r: &str| {
        p.commands_for(&role(r))
            .into_iter()
            .map(|c| c.name)
            .filter(|n| !n.starts_with("job.") && !n.starts_with("revocations."))
            .collect::<Vec<_>>()
    };
    assert_eq!(names("web"), ["ping", "commands", "describe", "restart"]);
    assert_eq!(names("nobody"), ["ping"]);
    assert!(p.allows(&role("nobody"), "job.status"));
    assert!(!p.allows(&role("web"), "echo"));
}

#[test]
fn describe_shows_the_role_restriction() {
    let p = Policy::parse(POLICY).expect("parse");
    let web = p.describe(&role("web"), "restart").expect("visible");
    assert_eq!(web.params[0].allowed, ["nginx", "php-fpm"]);
    let admin = p.describe(&role("admin"), "restart").expect("visible");
    assert!(admin.params[0].allowed.is_empty());
    assert!(
        p.describe(&role("nobody"), "restart").is_none(),
        "not shown to roles that may not run it"
    );
}

#[test]
fn each_value_becomes_exactly_one_argument() {
    let p = Policy::parse(POLICY).expect("parse");
    let Some(Command::Program(prog)) = p.lookup("restart") else {
        panic!("declared")
    };
    let named = [Param {
        name: "now".into(),
        value: "true".into(),
    }];
    let inv = prog.bind(&["nginx".into()], &named, None).expect("binds");
    assert_eq!(inv.argv, ["restart", "nginx", "--now"]);
    let inv = prog.bind(&["nginx".into()], &[], None).expect("binds");
    assert_eq!(inv.argv, ["restart", "nginx"], "a false flag adds nothing");
    for bad in ["nginx php", "-x", "a\nb", "$(id)", "`id`", "a|b", "a;b"] {
        assert!(prog.bind(&[bad.into()], &[], None).is_err(), "{bad:?}");
    }
}

#[test]
fn load_errors_name_the_problem() {
    let cases = [
        ("[roles.x]\ncommands = [\"rm\"]\n", "unknown command"),
        ("[roles.x]\ncommand = [\"ping\"]\n", "unknown field"),
        ("[commands.x]\nprogram = \"bin/true\"\n", "not an absolute path"),
        ("[commands.x]\nprogram = \"/nonexistent/x\"\n", "does not exist"),
        ("[commands.x]\nprogram = \"/bin/true\"\nargs = [\"{y}\"]\n", "names no declared parameter"),
        ("[commands.x]\nprogram = \"/bin/true\"\nargs = [\"--n={n}\"]\n[[commands.x.params]]\nname = \"n\"\ntype = \"integer\"\n", "whole argument"),
        ("[commands.x]\nprogram = \"/bin/true\"\n[[commands.x.params]]\nname = \"n\"\ntype = \"integer\"\n", "not used in args"),
        ("[commands.ping]\nprogram = \"/bin/true\"\n", "name of a built-in"),
        ("[roles.x]\ncommands = [\"ping\"]\n[roles.x.restrict.ping]\na = [\"b\"]\n", "not a declared program"),
    ];
    for (text, expected) in cases {
        let err = format!("{:#}", Policy::parse(text).expect_err(text));
        assert!(err.contains(expected), "{text}: {err}");
    }
}

const OPTIONAL_TARGET: &str = r#"
[roles.limited]
commands = ["deploy"]
[roles.limited.restrict.deploy]
target = ["safe"]
verbose = ["false"]
token = ["s3cr3t-token"]

[roles.free]
commands = ["deploy"]

[commands.deploy]
program = "/bin/echo"
args = ["{target}", "{verbose}", "{token}"]
[[commands.deploy.params]]
name = "target"
type = "string"
[[commands.deploy.params]]
name = "verbose"
type = "flag"
arg = "-v"
[[commands.deploy.params]]
name = "token"
type = "string"
secret = true
default = "s3cr3t-token"
"#;

fn param(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: value.into(),
    }
}

/// The attack: a role restricted to `target = ["safe"]` leaves the optional `target`
/// out, hoping a restriction applies only to values given.
#[test]
fn leaving_out_a_restricted_optional_parameter_is_forbidden() {
    let p = Policy::parse(OPTIONAL_TARGET).expect("parse");
    let Some(Command::Program(deploy)) = p.lookup("deploy") else {
        panic!("no program")
    };
    let limited = p.restrictions(&role("limited"), "deploy");
    assert_eq!(
        deploy.bind(&[], &[], limited).err(),
        Some(BindError::Forbidden(
            "this role must give target (one of: safe)".into()
        ))
    );
    let ok = deploy
        .bind(&[], &[param("target", "safe")], limited)
        .expect("safe");
    assert_eq!(
        ok.argv,
        ["safe", "s3cr3t-token"],
        "absent flag = false, allowed"
    );
    assert!(
        deploy
            .bind(
                &[],
                &[param("target", "safe"), param("verbose", "true")],
                limited
            )
            .is_err(),
        "the flag is restricted to false"
    );
    assert!(
        deploy
            .bind(&[], &[], p.restrictions(&role("free"), "deploy"))
            .is_ok(),
        "an unrestricted role may leave it out"
    );
}

#[test]
fn a_refused_secret_value_is_never_quoted() {
    let p = Policy::parse(OPTIONAL_TARGET).expect("parse");
    let Some(Command::Program(deploy)) = p.lookup("deploy") else {
        panic!("no program")
    };
    let limited = p.restrictions(&role("limited"), "deploy");
    let refused = deploy
        .bind(
            &[],
            &[param("target", "safe"), param("token", "hunter2-guess")],
            limited,
        )
        .expect_err("not the allowed token");
    let BindError::Forbidden(why) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(why, "this role may not use token = (secret)");
    assert!(!why.contains("hunter2") && !why.contains("s3cr3t"));
}

#[test]
fn restricted_integers_compare_in_canonical_form() {
    let text = r#"
[roles.r]
commands = ["tail"]
[roles.r.restrict.tail]
lines = ["010"]
[commands.tail]
program = "/bin/echo"
args = ["{lines}"]
[[commands.tail.params]]
name = "lines"
type = "integer"
required = true
"#;
    let p = Policy::parse(text).expect("parse");
    let Some(Command::Program(tail)) = p.lookup("tail") else {
        panic!("no program")
    };
    let limited = p.restrictions(&role("r"), "tail");
    assert_eq!(
        tail.bind(&["10".into()], &[], limited).expect("10").argv,
        ["10"]
    );
    assert!(tail.bind(&["11".into()], &[], limited).is_err());
}

/// The sibling of the refusal leak: `describe` and `commands` must not list a secret
/// parameter's default or the values a role is limited to.
#[test]
fn describe_never_shows_a_secret_default_or_allowed_value() {
    let p = Policy::parse(OPTIONAL_TARGET).expect("parse");
    let info = p.describe(&role("limited"), "deploy").expect("described");
    let token = info
        .params
        .iter()
        .find(|i| i.name == "token")
        .expect("token");
    assert_eq!((token.default.as_deref(), token.allowed.len()), (None, 0));
    let shown = format!("{:?}", p.commands_for(&role("limited")));
    assert!(!shown.contains("s3cr3t-token"), "{shown}");
}

#[test]
fn a_command_that_needs_approvals_cannot_take_stdin() {
    let text = "[commands.apply]\nprogram = \"/bin/cat\"\nstdin = true\napprovals = 1\napprovers = [\"lead\"]\n";
    let err = Policy::parse(text).expect_err("refused").to_string();
    assert!(
        err.contains("approvals and stdin = true cannot go together"),
        "{err}"
    );
}
