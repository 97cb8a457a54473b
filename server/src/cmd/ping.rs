//! `ping`: proves the whole path (handshake, tag, admission) works, and does nothing else.

use cmdchan_common::protocol::Reply;

pub fn run() -> Reply {
    Reply::Pong
}
