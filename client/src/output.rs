//! How results are printed: text for people, one JSON object (`--json`) for programs.

use serde_json::{json, Value};

use cmdchan::{Error, Reply};
use cmdchan_common::time;

use crate::exit::Exit;

pub fn reply(as_json: bool, reply: &Reply) -> Exit {
    match as_json {
        true => println!("{}", json!({ "ok": true, "reply": reply_json(reply) })),
        false => print!("{}", reply_text(reply)),
    }
    Exit::Ok
}

pub fn error(as_json: bool, err: &Error) -> Exit {
    let exit = Exit::of(err);
    match (as_json, err) {
        (true, Error::Refused(f)) => {
            let e =
                json!({ "code": f.code.name(), "number": f.code.number(), "message": f.message });
            println!("{}", json!({ "ok": false, "exit": exit as u8, "error": e }));
        }
        (true, other) => println!(
            "{}",
            json!({ "ok": false, "exit": exit as u8, "error": { "message": other.to_string() } })
        ),
        (false, Error::Refused(f)) => eprintln!("cmdchan: refused ({}): {}", f.code, f.message),
        (false, other) => eprintln!("cmdchan: {other}"),
    }
    exit
}

pub fn local_error(as_json: bool, message: &str, exit: Exit) -> Exit {
    match as_json {
        true => println!(
            "{}",
            json!({ "ok": false, "exit": exit as u8, "error": { "message": message } })
        ),
        false => eprintln!("cmdchan: {message}"),
    }
    exit
}

fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Pong => "pong\n".into(),
        Reply::Echo(args) => format!("{}\n", args.join(" ")),
        Reply::Whoami(w) => {
            let servers: Vec<_> = w.grant.servers.iter().map(|s| s.as_str()).collect();
            format!(
                "name:    {}\nrole:    {}\nepoch:   {}\nexpires: {}\nservers: {}\nserver:  {}\n",
                w.name,
                w.grant.role,
                w.grant.epoch,
                w.grant.expires.map_or("never".into(), time::rfc3339),
                if servers.is_empty() {
                    "any".into()
                } else {
                    servers.join(", ")
                },
                w.server
            )
        }
        Reply::Commands(list) => {
            let width = list.iter().map(|c| c.name.len()).max().unwrap_or(0);
            list.iter()
                .map(|c| format!("{:width$}  {}\n", c.name, c.description))
                .collect()
        }
    }
}

fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Pong => json!("pong"),
        Reply::Echo(args) => json!({ "args": args }),
        Reply::Whoami(w) => json!({
            "name": w.name.as_str(),
            "role": w.grant.role.as_str(),
            "epoch": w.grant.epoch,
            "expires": w.grant.expires.map(time::rfc3339),
            "servers": w.grant.servers.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "server": w.server.as_str(),
        }),
        Reply::Commands(list) => {
            json!(list
                .iter()
                .map(|c| json!({ "name": c.name, "description": c.description }))
                .collect::<Vec<_>>())
        }
    }
}
