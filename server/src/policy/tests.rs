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
    assert_eq!(names, ["ping", "whoami", "echo", "commands", "describe"]);
}

#[test]
fn roles_get_the_default_plus_their_own() {
    let p = Policy::parse(POLICY).expect("parse");
    let names = |r: &str| {
        p.commands_for(&role(r))
            .into_iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names("web"), ["ping", "commands", "describe", "restart"]);
    assert_eq!(names("nobody"), ["ping"]);
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
