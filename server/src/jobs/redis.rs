//! Jobs in the shared Redis, for a pool of server processes that answer as one server ID:
//! any process of the pool answers for any job, whichever process runs it. The bounds
//! are the file store's: a job's output up to the per-job cap, all jobs' output up to the
//! total cap (the oldest ended jobs go first to make room), ended jobs for the retention.
//!
//! ```text
//! P = "cmdchan:{" SERVER_ID "}:jobs:"     one hash tag: a pool's jobs are one slot, so
//!                                          every script may touch all of its keys
//! P "job:" ID     hash    client command run started owner bytes kept
//!                         + once ended: state ended dout derr
//! P "out:" ID     stream  one entry per piece kept: entry ID "OFFSET-1" (OFFSET: where
//!                         the piece starts in the job's output), fields s (0 stdout,
//!                         1 stderr) and d (the bytes)
//! P "procs"       zset    process → the end of its lease (ms, Redis's own clock)
//! P "run:" PROC   set     the jobs that process runs
//! P "ended"       zset    job → ended (unix seconds)
//! P "by:" CLIENT  zset    job → started;  P "all": every client's
//! P "bytes"       string  output bytes kept, all jobs
//! P "gone:" ID    string  the client of a job dropped early or past the retention, kept
//!                         for the retention so its status reads `expired`
//! P "unaudited"   hash    job declared lost → until when a sweeper holds it (ms; 0:
//!                         none), until a process wrote its audit record
//! ```
//! IDs are in hex. Every change is one Lua script, so two processes never see half of
//! one. A process renews its lease every second (from the upkeep); a process whose
//! lease ran out (killed, frozen, cut off from Redis for [`LEASE`]) has its running jobs
//! declared `lost` by whichever process sweeps first, and that declaration is final: the
//! process, should it come back, can no longer append to or end those jobs. The lease is
//! timed on Redis's clock, so the servers' clocks may disagree.

use std::time::Duration;

use cmdchan_common::protocol::{CommandId, JobInfo, JobState, Stream};
use redis::Value;

use super::store::stream_byte;
use super::{Bounds, End, Meta};
use crate::redis_link::Conn;
use crate::replay::StoreError;

/// How long a process's jobs count as running without a sign of it.
pub const LEASE: Duration = Duration::from_secs(10);

/// Removes one job and returns the output bytes it held; the prelude of every script
/// that drops jobs. `P` is the prefix, `GONE_MS` how long its `gone` mark lives.
const DROP: &str = r"
local P = ARGV[1]
local function drop(id, gone_ms)
  local job = P .. 'job:' .. id
  local f = redis.call('HMGET', job, 'client', 'kept')
  local kept = tonumber(f[2] or '0')
  redis.call('DECRBY', P .. 'bytes', kept)
  redis.call('DEL', job, P .. 'out:' .. id)
  redis.call('ZREM', P .. 'ended', id)
  redis.call('ZREM', P .. 'all', id)
  redis.call('HDEL', P .. 'unaudited', id)
  if f[1] then
    redis.call('ZREM', P .. 'by:' .. f[1], id)
    redis.call('SET', P .. 'gone:' .. id, f[1], 'PX', gone_ms)
  end
  return kept
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if redis.replicate_commands then redis.replicate_commands() end
";

/// ARGV: P, id, client, command, run, started, proc, lease ms. 0 if the ID is taken
/// (by another process: this one's start offered again after a timeout is taken).
const START: &str = r"
local id, proc = ARGV[2], ARGV[7]
redis.call('ZADD', P .. 'procs', now_ms() + tonumber(ARGV[8]), proc)
local job = P .. 'job:' .. id
if redis.call('EXISTS', job) == 1 then
  if redis.call('HGET', job, 'owner') == proc then return 1 end
  return 0
end
redis.call('HSET', job, 'client', ARGV[3], 'command', ARGV[4], 'run', ARGV[5],
  'started', ARGV[6], 'owner', proc, 'bytes', 0, 'kept', 0)
redis.call('SADD', P .. 'run:' .. proc, id)
redis.call('ZADD', P .. 'by:' .. ARGV[3], ARGV[6], id)
redis.call('ZADD', P .. 'all', ARGV[6], id)
return 1
";

/// ARGV: P, id, stream, data, bytes printed before it, per-job cap, total cap, gone ms.
/// The bytes kept of `data` (-1: the job has ended or is gone). A piece offered again
/// after a timeout that had applied (the job's count already past it) is taken once;
/// a Redis behind the process (a failover lost pieces it had acknowledged) takes the
/// piece where the process is, rather than stop the job's output for good.
const OUTPUT: &str = r"
local id, data = ARGV[2], ARGV[4]
local job = P .. 'job:' .. id
if redis.call('EXISTS', job) == 0 or redis.call('HEXISTS', job, 'state') == 1 then
  return -1
end
local before, seen = tonumber(ARGV[5]), tonumber(redis.call('HGET', job, 'bytes'))
if seen == before + #data then return 0 end
redis.call('HSET', job, 'bytes', before + #data)
local kept = tonumber(redis.call('HGET', job, 'kept'))
local take = math.min(#data, tonumber(ARGV[6]) - kept)
if take <= 0 then return 0 end
local total, cap = tonumber(redis.call('GET', P .. 'bytes') or '0'), tonumber(ARGV[7])
while total + take > cap do
  local oldest = redis.call('ZRANGE', P .. 'ended', 0, 0)
  if #oldest == 0 then break end
  total = total - drop(oldest[1], tonumber(ARGV[8]))
end
take = math.min(take, cap - total)
if take <= 0 then return 0 end
redis.call('XADD', P .. 'out:' .. id, kept .. '-1', 's', ARGV[3], 'd', string.sub(data, 1, take))
redis.call('HINCRBY', job, 'kept', take)
redis.call('INCRBY', P .. 'bytes', take)
return take
";

/// ARGV: P, id, proc, state, ended, printed, dout, derr. 0 if the job is no longer this
/// process's (the pool declared it lost).
const END: &str = r"
local id = ARGV[2]
local job = P .. 'job:' .. id
if redis.call('SREM', P .. 'run:' .. ARGV[3], id) == 0 then
  -- Its own end, offered again after a timeout that applied; else the pool's 'lost'.
  if redis.call('HGET', job, 'owner') == ARGV[3] and
     redis.call('HGET', job, 'state') ~= 'lost' and
     redis.call('HEXISTS', job, 'state') == 1 then return 1 end
  return 0
end
redis.call('HSET', job, 'state', ARGV[4], 'ended', ARGV[5], 'bytes', ARGV[6],
  'dout', ARGV[7], 'derr', ARGV[8])
redis.call('ZADD', P .. 'ended', now_ms(), id)
return 1
";

/// ARGV: P, proc, lease ms, now (unix seconds), retention seconds, gone ms. Renews this
/// process's lease, declares the jobs of processes whose lease ran out lost, drops
/// ended jobs past the retention (at most 1000 a call); returns up to 100 jobs declared
/// lost that no process recorded yet, each held by this sweeper for 10 s (one that
/// dies before its audit record is written leaves them to the next).
/// A sweeper whose own lease ran out too was cut off like the others (Redis frozen,
/// failing over, the network down): it renews every lease instead, so an outage of
/// Redis itself loses no running job.
const SWEEP: &str = r"
local now = tonumber(ARGV[4])
local t = now_ms()
local lease = tonumber(ARGV[3])
local mine = redis.call('ZSCORE', P .. 'procs', ARGV[2])
if mine and tonumber(mine) <= t then
  for _, proc in ipairs(redis.call('ZRANGEBYSCORE', P .. 'procs', '-inf', t)) do
    redis.call('ZADD', P .. 'procs', t + lease, proc)
  end
end
redis.call('ZADD', P .. 'procs', t + lease, ARGV[2])
for _, proc in ipairs(redis.call('ZRANGEBYSCORE', P .. 'procs', '-inf', t)) do
  local run = P .. 'run:' .. proc
  for _, id in ipairs(redis.call('SMEMBERS', run)) do
    local job = P .. 'job:' .. id
    if redis.call('EXISTS', job) == 1 and redis.call('HEXISTS', job, 'state') == 0 then
      redis.call('HSET', job, 'state', 'lost', 'ended', now)
      redis.call('ZADD', P .. 'ended', t, id)
      redis.call('HSET', P .. 'unaudited', id, 0)
    end
  end
  redis.call('DEL', run)
  redis.call('ZREM', P .. 'procs', proc)
end
local old = redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf',
  t - tonumber(ARGV[5]) * 1000, 'LIMIT', 0, 1000)
for _, id in ipairs(old) do drop(id, tonumber(ARGV[6])) end
local lost = {}
local waiting = redis.call('HGETALL', P .. 'unaudited')
for i = 1, #waiting, 2 do
  if #lost < 100 and tonumber(waiting[i + 1]) <= t then
    redis.call('HSET', P .. 'unaudited', waiting[i], t + 10000)
    lost[#lost + 1] = waiting[i]
  end
end
return lost
";

/// ARGV: P, id…. Per job: its fields (as `info_of` reads them), then the client of a
/// dropped job. A job without an end is running until a sweep declares it lost.
const INFOS: &str = r"
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', P .. 'job:' .. id, 'client', 'command', 'run', 'started',
    'owner', 'state', 'ended', 'bytes', 'kept', 'dout', 'derr')
  f[12] = redis.call('GET', P .. 'gone:' .. id)
  out[#out + 1] = f
end
return out
";

/// ARGV: P, id, from, max. The pieces of the job's kept output from byte `from`, at
/// most `max` bytes: stream, then bytes, for each.
const READ: &str = r"
local out_key = P .. 'out:' .. ARGV[2]
local from, left = tonumber(ARGV[3]), tonumber(ARGV[4])
local prev = redis.call('XREVRANGE', out_key, ARGV[3] .. '-1', '-', 'COUNT', 1)
local start = '-'
if #prev > 0 then start = prev[1][1] end
local out = {}
while left > 0 do
  local batch = redis.call('XRANGE', out_key, start, '+', 'COUNT', 16)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local at = tonumber(string.match(e[1], '^(%d+)'))
    local s, d = e[2][2], e[2][4]
    if at + #d > from and left > 0 then
      local skip = math.max(0, from - at)
      local piece = string.sub(d, skip + 1, skip + math.min(#d - skip, left))
      out[#out + 1] = s
      out[#out + 1] = piece
      left = left - #piece
    end
    start = '(' .. e[1]
  end
end
return out
";

/// ARGV: P, id, dout, derr: a lost job's digests, if it is still kept.
const DIGESTS: &str = r"
local job = P .. 'job:' .. ARGV[2]
if redis.call('HGET', job, 'state') ~= 'lost' then return 0 end
redis.call('HSET', job, 'dout', ARGV[3], 'derr', ARGV[4])
return 1
";

/// ARGV: P, client or "" for all, max. The newest jobs' IDs.
const LIST: &str = r"
local key = P .. 'all'
if ARGV[2] ~= '' then key = P .. 'by:' .. ARGV[2] end
return redis.call('ZREVRANGE', key, 0, tonumber(ARGV[3]) - 1)
";

/// The jobs of one server ID in Redis, as one process of its pool sees them.
pub struct RedisJobs {
    conn: Conn,
    prefix: String,
    /// This process, for the lease: random, new at every start.
    process: String,
    bounds: Bounds,
}

impl std::fmt::Debug for RedisJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the namespace is shown.
        f.debug_struct("RedisJobs")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisJobs {
    /// Checks the URL; the connection is made on first use.
    pub fn open(url: &str, server_id: &str, bounds: Bounds) -> Result<Self, String> {
        let mut process = [0u8; 16];
        openssl::rand::rand_bytes(&mut process).map_err(|e| format!("no random bytes: {e}"))?;
        Ok(Self {
            conn: Conn::open(url)?,
            prefix: format!("cmdchan:{{{server_id}}}:jobs:"),
            process: hex::encode(process),
            bounds,
        })
    }

    pub async fn start(&self, meta: &Meta) -> Result<(), StoreError> {
        let run = meta.run.map(hex::encode).unwrap_or_default();
        let args = [
            hex::encode(meta.id).into_bytes(),
            meta.client.clone().into_bytes(),
            meta.command.clone().into_bytes(),
            run.into_bytes(),
            meta.started_at.to_string().into_bytes(),
            self.process.clone().into_bytes(),
            millis(LEASE).into_bytes(),
        ];
        let started: i64 = self.eval(START, &args).await?;
        match started {
            1 => Ok(()),
            _ => Err(StoreError::Unavailable(
                "a job of this ID is kept already".into(),
            )),
        }
    }

    /// A piece of a running job's output, `before` bytes into it: counted, and kept
    /// within the bounds.
    pub async fn output(
        &self,
        id: &CommandId,
        stream: Stream,
        data: &[u8],
        before: u64,
    ) -> Result<(), StoreError> {
        let args = [
            hex::encode(id).into_bytes(),
            vec![b'0' + stream_byte(stream)],
            data.to_vec(),
            before.to_string().into_bytes(),
            self.bounds.per_job.to_string().into_bytes(),
            self.bounds.total.to_string().into_bytes(),
            self.gone_ms().into_bytes(),
        ];
        let _kept: i64 = self.eval(OUTPUT, &args).await?;
        Ok(())
    }

    /// A job this process ran ended; false if the pool had declared it lost before.
    pub async fn end(&self, id: &CommandId, end: &End) -> Result<bool, StoreError> {
        let args = [
            hex::encode(id).into_bytes(),
            self.process.clone().into_bytes(),
            state_text(end.state).into_bytes(),
            end.ended_at.to_string().into_bytes(),
            end.output_bytes.to_string().into_bytes(),
            end.digests[0].to_vec(),
            end.digests[1].to_vec(),
        ];
        let ended: i64 = self.eval(END, &args).await?;
        Ok(ended == 1)
    }

    /// What `client` may see of these jobs (every client's with `all`).
    pub async fn infos(
        &self,
        ids: &[CommandId],
        client: &str,
        all: bool,
    ) -> Result<Vec<JobInfo>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<Vec<u8>> = ids.iter().map(|id| hex::encode(id).into_bytes()).collect();
        let rows: Vec<Vec<Value>> = self.eval(INFOS, &args).await?;
        if rows.len() != ids.len() {
            return Err(unreadable());
        }
        ids.iter()
            .zip(rows)
            .map(|(id, row)| info_of(id, &row, client, all))
            .collect()
    }

    /// This client's jobs (every client's with `all`), newest first, at most `max`.
    pub async fn list(
        &self,
        client: &str,
        all: bool,
        max: usize,
    ) -> Result<Vec<JobInfo>, StoreError> {
        let who = if all { "" } else { client };
        let args = [who.as_bytes().to_vec(), max.to_string().into_bytes()];
        let found: Vec<String> = self.eval(LIST, &args).await?;
        let ids: Vec<CommandId> = found.iter().filter_map(|h| parse_hex_id(h)).collect();
        self.infos(&ids, client, all).await
    }

    /// Job `id`'s kept output from payload byte `from`, at most `max` bytes.
    pub async fn read(
        &self,
        id: &CommandId,
        from: u64,
        max: usize,
    ) -> Result<Vec<(Stream, Vec<u8>)>, StoreError> {
        let args = [
            hex::encode(id).into_bytes(),
            from.to_string().into_bytes(),
            max.to_string().into_bytes(),
        ];
        let flat: Vec<Vec<u8>> = self.eval(READ, &args).await?;
        flat.chunks_exact(2)
            .map(|pair| Ok((stream_of(&pair[0]).ok_or_else(unreadable)?, pair[1].clone())))
            .collect()
    }

    /// Renews this process's lease, declares the jobs of processes gone quiet lost, and
    /// drops results past the retention; the lost jobs this process is to record now
    /// (see [`RedisJobs::lost`]). Quick: the upkeep that renews the lease must not wait
    /// for the lost jobs' digests.
    pub async fn sweep(&self, now: u64) -> Result<Vec<CommandId>, StoreError> {
        let args = [
            self.process.clone().into_bytes(),
            millis(LEASE).into_bytes(),
            now.to_string().into_bytes(),
            self.bounds.retention.to_string().into_bytes(),
            self.gone_ms().into_bytes(),
        ];
        let lost: Vec<String> = self.eval(SWEEP, &args).await?;
        Ok(lost.iter().filter_map(|h| parse_hex_id(h)).collect())
    }

    /// Lost jobs as the audit trail records them, with the digests of what they printed.
    pub async fn lost(&self, ids: &[CommandId]) -> Result<Vec<JobInfo>, StoreError> {
        for id in ids {
            // Best effort: the job is lost whatever, and its record must reach the
            // audit trail.
            if let Err(e) = self.digest_lost(id).await {
                tracing::warn!(id = %hex::encode(id), error = %e, "cannot record the digests of a lost job's output");
            }
        }
        self.infos(ids, "", true).await
    }

    /// The lost jobs [`RedisJobs::sweep`] returned are in the audit trail now.
    pub async fn audited(&self, lost: &[CommandId]) -> Result<(), StoreError> {
        if lost.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(format!("{}unaudited", self.prefix));
        for id in lost {
            cmd.arg(hex::encode(id));
        }
        let _: i64 = self.conn.query_at(&cmd, self.prefix.as_bytes()).await?;
        Ok(())
    }

    /// Records the digests of what a lost job printed (as kept).
    async fn digest_lost(&self, id: &CommandId) -> Result<(), StoreError> {
        use sha2::{Digest, Sha256};
        let mut hashes = [Sha256::new(), Sha256::new()];
        let mut from = 0u64;
        loop {
            let pieces = self.read(id, from, 1 << 20).await?;
            if pieces.is_empty() {
                break;
            }
            for (stream, data) in pieces {
                from += data.len() as u64;
                hashes[usize::from(stream_byte(stream))].update(&data);
            }
        }
        let [out, err] = hashes.map(|h| h.finalize().to_vec());
        let args = [hex::encode(id).into_bytes(), out, err];
        let _: i64 = self.eval(DIGESTS, &args).await?;
        Ok(())
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &str,
        args: &[Vec<u8>],
    ) -> Result<T, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg([DROP, script].concat()).arg(0).arg(&self.prefix);
        for arg in args {
            cmd.arg(arg.as_slice());
        }
        // No key is named: the prefix's hash tag routes it in a cluster.
        self.conn.query_at(&cmd, self.prefix.as_bytes()).await
    }

    fn gone_ms(&self) -> String {
        self.bounds
            .retention
            .saturating_mul(1000)
            .max(1)
            .to_string()
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

fn stream_of(bytes: &[u8]) -> Option<Stream> {
    match bytes {
        b"0" => Some(Stream::Stdout),
        b"1" => Some(Stream::Stderr),
        _ => None,
    }
}

fn state_text(state: JobState) -> String {
    match state {
        JobState::Exited(code) => format!("exited:{code}"),
        JobState::Signalled(signal) => format!("signalled:{signal}"),
        JobState::TimedOut => "timed out".into(),
        // Running, expired and unknown are never stored as an end.
        _ => "lost".into(),
    }
}

fn state_of(text: &str) -> Option<JobState> {
    match text.split_once(':') {
        Some(("exited", code)) => code.parse().ok().map(JobState::Exited),
        Some(("signalled", signal)) => signal.parse().ok().map(JobState::Signalled),
        None if text == "timed out" => Some(JobState::TimedOut),
        None if text == "lost" => Some(JobState::Lost),
        _ => None,
    }
}

fn parse_hex_id(text: &str) -> Option<CommandId> {
    hex::decode(text).ok()?.try_into().ok()
}

/// A job as [`INFOS`] returned it, as `client` may see it.
fn info_of(id: &CommandId, row: &[Value], client: &str, all: bool) -> Result<JobInfo, StoreError> {
    let text = |i: usize| -> Option<String> {
        match row.get(i)? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    };
    let number = |i: usize| text(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    let digest = |i: usize| -> [u8; 32] {
        match row.get(i) {
            Some(Value::BulkString(b)) => b.as_slice().try_into().unwrap_or([0; 32]),
            _ => [0; 32],
        }
    };
    let visible = |owner: &str| all || owner == client;
    let mut info = JobInfo::unknown(*id);
    let Some(owner) = text(0) else {
        if text(11).is_some_and(|gone| visible(&gone)) {
            info.state = JobState::Expired;
        }
        return Ok(info);
    };
    if !visible(&owner) {
        return Ok(info);
    }
    info.state = match text(5) {
        Some(state) => state_of(&state).ok_or_else(unreadable)?,
        None => JobState::Running,
    };
    info.client = owner;
    info.command = text(1).unwrap_or_default();
    info.run = text(2).and_then(|r| parse_hex_id(&r));
    info.started_at = number(3);
    info.ended_at = number(6);
    info.output_bytes = number(7);
    info.kept_bytes = number(8);
    info.stdout_sha256 = digest(9);
    info.stderr_sha256 = digest(10);
    Ok(info)
}

fn unreadable() -> StoreError {
    StoreError::Unavailable("unreadable job in Redis".into())
}
