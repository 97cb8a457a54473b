//! What cmdchan(1) says beyond the options clap knows: examples, the environment, the
//! files it reads, and the pages to read next (roff).

pub const SECTIONS: [(&str, &str); 4] = [
    ("EXAMPLES", EXAMPLES),
    ("ENVIRONMENT", ENVIRONMENT),
    ("FILES", FILES),
    ("SEE ALSO", SEE_ALSO),
];

const EXAMPLES: &str = r#"
.TP
.B cmdchan \-s web03 uptime
Run uptime on web03 of the inventory, as ssh web03 uptime would: its output as it is,
its exit status.
.TP
.B cmdchan \-\-server db1.example.net:7433 \-\-zone db whoami
A server by address, in zone db of a credential of several zones.
.TP
.B cmdchan \-\-on @web \-\-gather df
On every server of group web; identical results printed once under their names.
.TP
.B cmdchan \-\-on tier=app \-\-canary 1 \-\-batch 25% \-\-max\-failures 0 \-\-check health restart\-app
A rollout: one server first, then a quarter at a time, each batch checked with the
remote command health; the first failure stops it, and the summary says where and why.
.TP
.B id=$(cmdchan \-s db1 \-\-detach backup); cmdchan \-s db1 job wait $id
Start a long job, then wait for it (exit: its status).
.TP
.B cmdchan approval request \-\-on @db \-\-out f.toml failover; cmdchan \-\-approval f.toml
A command whose policy needs approvals: prepare it, have each approver run
.B cmdchan approval sign f.toml
with their own credential, then run it on the servers it names.
.TP
.B cmdchan \-\-inventory exec:./ec2.py\e \-\-list \-\-on @tag_web hosts
The servers an Ansible dynamic inventory script lists.
"#;

const ENVIRONMENT: &str = r#"
.TP
.B CMDCHAN_CRED
The credential file, for \-\-cred.
.TP
.B CMDCHAN_ZONE
The zone of the server, for \-\-zone.
.TP
.B CMDCHAN_INVENTORY
The inventory, for \-\-inventory (a file, or exec:COMMAND).
.TP
.BR XDG_CONFIG_HOME ", " HOME
Where the default inventory is.
"#;

const FILES: &str = r#"
.TP
.I ~/.config/cmdchan/inventory.toml
The inventory when none is given (under $XDG_CONFIG_HOME if it is set); see
.BR cmdchan\-inventory (5).
.TP
.I credential file
From cmdchan\-server admin provision; mode 0600, or it is refused.
"#;

const SEE_ALSO: &str = r#"
.BR cmdchan\-inventory (5),
.BR cmdchan\-scripting (7),
.BR cmdchan\-policy (5),
.BR cmdchan\-server (8),
.BR ssh (1)
"#;
