//! `cmdchan._native`: the Rust client library as Python sees it. Every call that waits on
//! the network gives up the GIL while it waits (the work runs on a tokio runtime of its
//! own), and every result comes back as the JSON text `cmdchan --json` prints, made by
//! the same code (`cmdchan::json`), so the Python package and the command cannot drift
//! apart. `cmdchan/__init__.py` turns it into objects and exceptions.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use cmdchan::approval::{ApprovalFile, Prepared};
use cmdchan::exit::Exit;
use cmdchan::fanout::{self, Event, Outcome, Plan, Rollout, Threshold};
use cmdchan::inventory::{Selector, Source};
use cmdchan::{
    AnswerSink, Connector, Credential, Error, Flow, Ident, Options, Output, Param, Reply,
    SharedInput, Stream,
};

/// The runtime every call runs on. One worker, as the `cmdchan` command has: a fan-out's
/// handshakes are CPU-bound, and a second worker on a small machine only contends with
/// the Python thread that reads the results.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<(u32, Result<tokio::runtime::Runtime, String>)> = OnceLock::new();
    let (pid, runtime) = RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cmdchan")
            .enable_all()
            .build()
            .map_err(|e| e.to_string());
        (std::process::id(), runtime)
    });
    // A forked child has the runtime's memory but not its thread: nothing would run.
    if *pid != std::process::id() {
        return Err(PyRuntimeError::new_err(
            "cmdchan was used before this process forked, and its threads did not come along: use it only in the child (multiprocessing's spawn start method), or create clients after forking",
        ));
    }
    runtime
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the cmdchan runtime: {e}")))
}

/// Runs `fut` to its end on the runtime without the GIL, looking for signals (Ctrl-C)
/// every 200 ms: an interrupt drops the call, which closes its connection (the server
/// then stops the program, as for any client that left).
fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let mut fut = Box::pin(fut);
    loop {
        let slice =
            py.detach(|| rt.block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await }));
        match slice {
            Ok(out) => return Ok(out),
            Err(_) => py.check_signals()?,
        }
    }
}

/// How long a wait goes before it looks for signals.
const SLICE: Duration = Duration::from_millis(200);

/// A client: one credential (its TLS context built once), the inventory sources, and
/// the settings every call uses.
#[pyclass(frozen, module = "cmdchan._native")]
struct Native {
    connector: Connector,
    options: Options,
    inventory: Vec<Source>,
    max_output: usize,
}

/// What one call sends.
struct Call {
    address: Option<String>,
    server_id: Option<Ident>,
    zone: Option<Ident>,
    command: String,
    args: Vec<String>,
    params: Vec<Param>,
    stdin: Stdin,
    detach: bool,
    approval: Option<Arc<ApprovalFile>>,
}

/// A program's stdin: none, bytes, or a file opened when the call is made (read as it
/// is sent).
enum Stdin {
    None,
    Bytes(Vec<u8>),
    File(std::fs::File),
}

impl Stdin {
    /// `data`, or the file at `path` (the caller's open file, by /proc/self/fd) from
    /// byte `offset` (a regular file's current position), opened now: the caller may
    /// close its own descriptor as soon as the call returns.
    fn of(data: Option<Vec<u8>>, path: Option<PathBuf>, offset: Option<u64>) -> PyResult<Stdin> {
        use std::io::{Seek, SeekFrom};
        let Some(path) = path.filter(|_| data.is_none()) else {
            return Ok(data.map_or(Stdin::None, Stdin::Bytes));
        };
        let opened = std::fs::File::open(&path).and_then(|mut file| {
            if let Some(offset) = offset {
                file.seek(SeekFrom::Start(offset))?;
            }
            Ok(file)
        });
        opened
            .map(Stdin::File)
            .map_err(|e| PyValueError::new_err(format!("stdin cannot be read: {e}")))
    }

    fn input(self) -> Option<cmdchan::Input> {
        match self {
            Stdin::None => None,
            Stdin::Bytes(b) => Some(Box::new(std::io::Cursor::new(b))),
            Stdin::File(f) => Some(Box::new(tokio::fs::File::from_std(f))),
        }
    }
}

fn ident(text: &str, what: &str) -> PyResult<Ident> {
    Ident::new(text).map_err(|e| PyValueError::new_err(format!("{what} {text:?}: {e}")))
}

fn params_of(params: Vec<(String, String)>) -> Vec<Param> {
    params
        .into_iter()
        .map(|(name, value)| Param { name, value })
        .collect()
}

fn approval_of(path: Option<PathBuf>, cred: &Credential) -> PyResult<Option<Arc<ApprovalFile>>> {
    let Some(path) = path else { return Ok(None) };
    let file = ApprovalFile::load(&path).map_err(|e| PyValueError::new_err(e.to_string()))?;
    file.runnable_by(&cred.name)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Some(Arc::new(file)))
}

/// Output kept for the result, within a cap per stream.
#[derive(Default)]
struct Kept {
    out: Vec<u8>,
    err: Vec<u8>,
    out_cut: bool,
    err_cut: bool,
}

impl Kept {
    fn add(&mut self, stream: Stream, data: &[u8], cap: usize) {
        let (kept, cut) = match stream {
            Stream::Stdout => (&mut self.out, &mut self.out_cut),
            Stream::Stderr => (&mut self.err, &mut self.err_cut),
        };
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..data.len().min(room)]);
        *cut |= data.len() > room;
    }

    fn any(&self) -> bool {
        !self.out.is_empty() || !self.err.is_empty()
    }

    fn printed(&self) -> Value {
        cmdchan::json::printed_json(&self.out, self.out_cut, &self.err, self.err_cut)
    }
}

/// The object `cmdchan --json` prints for one server's result.
fn result_json(result: &Result<Reply, Error>, kept: &Kept) -> Value {
    match result {
        Ok(reply @ Reply::Exit(info)) => {
            let mut shown = kept.printed();
            shown["exit"] = cmdchan::json::exit_json(info);
            cmdchan::json::ok_json(cmdchan::json::reply_exit(reply, false), shown)
        }
        // A job's output (`job.output`, `job.attach`) comes before its state.
        Ok(reply @ Reply::Jobs(_)) if kept.any() => {
            let mut shown = kept.printed();
            shown["jobs"] = cmdchan::json::reply_json(reply)["jobs"].take();
            cmdchan::json::ok_json(Exit::Ok, shown)
        }
        Ok(reply) => cmdchan::json::ok_json(Exit::Ok, cmdchan::json::reply_json(reply)),
        Err(e) => cmdchan::json::failed_json(e),
    }
}

/// Where a call's output goes: kept for its result, and given to a stream's reader if
/// there is one (its queue makes a slow reader slow the server down, never fill memory).
struct Sink<'k> {
    kept: &'k mut Kept,
    cap: usize,
    tx: Option<mpsc::Sender<Item>>,
}

impl AnswerSink for Sink<'_> {
    async fn output(&mut self, out: Output) -> Flow {
        self.kept.add(out.stream, &out.data, self.cap);
        if let Some(tx) = &self.tx {
            if tx.send(Item::Output(out.stream, out.data)).await.is_err() {
                return Flow::Stop;
            }
        }
        Flow::Go
    }
}

/// A JSON value as the Python object `json.loads` would make of it (made here: a short
/// script then need not import json, and nothing is printed only to be parsed).
fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u), _) => u.into_pyobject(py)?.into_any(),
            (None, None, f) => f.unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// What a stream gives: output as it comes, then the result's JSON.
enum Item {
    Output(Stream, Vec<u8>),
    Done(Value),
}

impl Native {
    /// One request on one server, retried on a lost connection with the same command ID
    /// (as the command does); its result as JSON text.
    async fn call(&self, call: Call, tx: Option<mpsc::Sender<Item>>) -> Value {
        let mut kept = Kept::default();
        let result = self.exchange(call, &mut kept, tx).await;
        result_json(&result, &kept)
    }

    async fn exchange(
        &self,
        call: Call,
        kept: &mut Kept,
        tx: Option<mpsc::Sender<Item>>,
    ) -> Result<Reply, Error> {
        let options = Options {
            target: call.server_id.clone(),
            zone: call.zone.clone().or(self.options.zone.clone()),
            ..self.options.clone()
        };
        let mut client = self
            .connector
            .connect(call.address.as_deref(), options)
            .await?;
        if let Some(input) = call.stdin.input() {
            client.set_input(input);
        }
        let mut request = client.request(&call.command, &call.args)?;
        request.params = call.params;
        request.detach = call.detach;
        if let Some(file) = &call.approval {
            file.apply(&mut request);
        }
        let mut sink = Sink {
            kept,
            cap: self.max_output,
            tx,
        };
        let result = client.deliver(&mut request, &mut sink).await;
        client.close().await;
        result
    }
}

#[pymethods]
impl Native {
    #[new]
    #[pyo3(signature = (credential, zone=None, inventory=Vec::new(), connect_timeout=10.0, answer_timeout=30.0, retries=3, max_output=16 << 20))]
    fn new(
        credential: PathBuf,
        zone: Option<String>,
        inventory: Vec<String>,
        connect_timeout: f64,
        answer_timeout: f64,
        retries: u32,
        max_output: usize,
    ) -> PyResult<Self> {
        let cred =
            Credential::load(&credential).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let connector =
            Connector::new(Arc::new(cred)).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let zone = zone.map(|z| ident(&z, "zone")).transpose()?;
        let seconds = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err(format!("{what} {s} is not a duration in seconds"))
            })
        };
        let inventory = inventory
            .iter()
            .map(|s| s.parse::<Source>().map_err(PyValueError::new_err))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self {
            connector,
            options: Options {
                zone,
                timeout: seconds(connect_timeout, "connect_timeout")?,
                answer_timeout: seconds(answer_timeout, "answer_timeout")?,
                retries,
                ..Options::default()
            },
            inventory,
            max_output,
        })
    }

    /// The name of the credential's holder.
    #[getter]
    fn name(&self) -> String {
        self.connector.credential().name.to_string()
    }

    /// One command on one server; its `--json` object as text.
    #[pyo3(signature = (address, command, args, params, server_id=None, stdin=None, stdin_path=None, stdin_offset=None, detach=false, approval=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python keyword arguments, one each"
    )]
    fn run<'py>(
        &self,
        py: Python<'py>,
        address: Option<String>,
        command: String,
        args: Vec<String>,
        params: Vec<(String, String)>,
        server_id: Option<String>,
        stdin: Option<Vec<u8>>,
        stdin_path: Option<PathBuf>,
        stdin_offset: Option<u64>,
        detach: bool,
        approval: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Resolving a name may run an inventory command or ask DNS: without the GIL.
        let call = py.detach(|| {
            self.prepare(
                address,
                command,
                args,
                params,
                server_id,
                stdin,
                stdin_path,
                stdin_offset,
                detach,
                approval,
            )
        })?;
        let value = wait(py, self.call(call, None))?;
        to_python(py, &value)
    }

    /// As `run`, its output given as it comes (`Streamed.next`).
    #[pyo3(signature = (address, command, args, params, server_id=None, stdin=None, stdin_path=None, stdin_offset=None, approval=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python keyword arguments, one each"
    )]
    fn stream(
        slf: Py<Self>,
        py: Python<'_>,
        address: Option<String>,
        command: String,
        args: Vec<String>,
        params: Vec<(String, String)>,
        server_id: Option<String>,
        stdin: Option<Vec<u8>>,
        stdin_path: Option<PathBuf>,
        stdin_offset: Option<u64>,
        approval: Option<PathBuf>,
    ) -> PyResult<Streamed> {
        let native = slf.get();
        let call = py.detach(|| {
            native.prepare(
                address,
                command,
                args,
                params,
                server_id,
                stdin,
                stdin_path,
                stdin_offset,
                false,
                approval,
            )
        })?;
        let (tx, rx) = mpsc::channel(64);
        let native = slf.clone_ref(py);
        runtime()?.spawn(async move {
            // A Stream dropped before its end ends the call: its connection closes, and
            // the server stops the program, even one that prints nothing.
            let abandoned = tx.clone();
            tokio::select! {
                json = native.get().call(call, Some(tx.clone())) => {
                    let _ = tx.send(Item::Done(json)).await;
                }
                () = abandoned.closed() => {}
            }
        });
        Ok(Streamed { rx: Mutex::new(rx) })
    }

    /// One command on every server the selectors pick from the inventory; each
    /// server's object as it finishes, then the summary (`FanOut.next`).
    #[pyo3(signature = (selectors, command, args, params, stdin=None, stdin_path=None, stdin_offset=None, parallel=32, batch=None, canary=None, max_failures=None, deadline=None, per_server=60.0, approval=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python keyword arguments, one each"
    )]
    fn fanout(
        &self,
        py: Python<'_>,
        selectors: Vec<String>,
        command: String,
        args: Vec<String>,
        params: Vec<(String, String)>,
        stdin: Option<Vec<u8>>,
        stdin_path: Option<PathBuf>,
        stdin_offset: Option<u64>,
        parallel: usize,
        batch: Option<usize>,
        canary: Option<usize>,
        max_failures: Option<String>,
        deadline: Option<f64>,
        per_server: f64,
        approval: Option<PathBuf>,
    ) -> PyResult<FanOut> {
        let selectors = selectors
            .iter()
            .map(|s| s.parse::<Selector>().map_err(PyValueError::new_err))
            .collect::<PyResult<Vec<_>>>()?;
        let hosts = py
            .detach(|| cmdchan::inventory::load(&self.inventory).and_then(|i| i.select(&selectors)))
            .map_err(PyValueError::new_err)?;
        if hosts.is_empty() {
            return Err(PyValueError::new_err(
                "the selector picks no server of the inventory",
            ));
        }
        let approval = approval_of(approval, self.connector.credential())?;
        let mut cmd = fanout::Command::new(&command, args)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        cmd.params = params_of(params);
        if let Some(file) = &approval {
            cmd.name = file.command.clone();
            cmd.args = file.args.clone();
            cmd.params = file.params.clone();
            cmd.detach = file.detach;
        }
        let approval_zone = approval.as_ref().map(|f| f.zone.clone());
        cmd.approved = approval;
        let input = Stdin::of(stdin, stdin_path, stdin_offset)?;
        let rt = runtime()?;
        // The file becomes a tokio file inside the runtime, which reads it.
        cmd.stdin = rt
            .block_on(async { input.input() })
            .map(|i| SharedInput::new(i, cmdchan::input::SHARED_LIMIT));
        let seconds = |s: f64| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| PyValueError::new_err(format!("{s} is not a duration in seconds")))
        };
        let plan = Plan {
            rollout: Rollout {
                parallel: parallel.max(1),
                canary,
                batch,
                max_failures: max_failures.as_deref().map(threshold).transpose()?,
                pause: None,
            },
            per_server: seconds(per_server)?,
            deadline: deadline.map(seconds).transpose()?,
            check: None,
            options: Options {
                zone: self.options.zone.clone().or(approval_zone),
                ..self.options.clone()
            },
        };
        let (tx, rx) = mpsc::channel(64);
        let connector = self.connector.clone();
        let cap = self.max_output;
        runtime()?.spawn(async move {
            let names: Vec<(String, String)> = hosts
                .iter()
                .map(|h| (h.name.to_string(), h.address.clone()))
                .collect();
            let mut kept: Vec<Kept> = names.iter().map(|_| Kept::default()).collect();
            let mut summary = Summary::default();
            let mut events = fanout::fan_out(connector, hosts, cmd, plan);
            while let Some(event) = events.recv().await {
                match event {
                    Event::Output { host, output } => {
                        kept[host].add(output.stream, &output.data, cap)
                    }
                    Event::Done(done) => {
                        let (name, address) = &names[done.host];
                        let status = status_of(&done.outcome);
                        let line = cmdchan::json::host_json(
                            name,
                            address,
                            &done.outcome,
                            kept[done.host].printed(),
                            done.duration,
                            &status,
                        );
                        summary.add(name, &done.outcome);
                        kept[done.host] = Kept::default();
                        if tx.send(Item::Done(line)).await.is_err() {
                            return;
                        }
                    }
                    Event::Stopped(stop) => summary.stopped = Some(stop.to_string()),
                }
            }
            let _ = tx
                .send(Item::Done(json!({ "summary": summary.json(names.len()) })))
                .await;
        });
        Ok(FanOut { rx: Mutex::new(rx) })
    }
}

impl Native {
    #[allow(clippy::too_many_arguments, reason = "one per keyword argument of run")]
    fn prepare(
        &self,
        address: Option<String>,
        command: String,
        args: Vec<String>,
        params: Vec<(String, String)>,
        server_id: Option<String>,
        stdin: Option<Vec<u8>>,
        stdin_path: Option<PathBuf>,
        stdin_offset: Option<u64>,
        detach: bool,
        approval: Option<PathBuf>,
    ) -> PyResult<Call> {
        let approval = approval_of(approval, self.connector.credential())?;
        let only = approval.as_ref().and_then(|f| match f.servers.as_slice() {
            [one] => Some(one.to_string()),
            _ => None,
        });
        let (address, server_id, zone) = self.resolve(address.or(only), server_id)?;
        let zone = zone.or_else(|| approval.as_ref().map(|f| f.zone.clone()));
        Ok(Call {
            address,
            server_id,
            zone,
            command,
            args,
            params: params_of(params),
            stdin: Stdin::of(stdin, stdin_path, stdin_offset)?,
            detach,
            approval,
        })
    }

    /// A name of the inventory is its address, ID and zone; anything else is an address
    /// (`HOST`, `HOST:PORT`; port 7433 unless given) and its server ID given or derived
    /// as the command derives it.
    fn resolve(
        &self,
        address: Option<String>,
        server_id: Option<String>,
    ) -> PyResult<(Option<String>, Option<Ident>, Option<Ident>)> {
        let server_id = server_id.map(|s| ident(&s, "server_id")).transpose()?;
        let Some(name) = address.clone().filter(|a| !a.contains([':', '['])) else {
            return Ok((address, server_id, None));
        };
        if self.inventory.is_empty() {
            return Ok((address, server_id, None));
        }
        let inventory = cmdchan::inventory::load(&self.inventory).map_err(PyValueError::new_err)?;
        Ok(match inventory.get(&name) {
            Some(host) => (
                Some(host.address.clone()),
                server_id.or(Some(host.name.clone())),
                host.zone.clone(),
            ),
            None => (address, server_id, None),
        })
    }
}

/// `N` servers or `P%` of them.
fn threshold(text: &str) -> PyResult<Threshold> {
    let bad = || {
        PyValueError::new_err(format!(
            "max_failures {text:?}: a number of servers or a percentage (10%)"
        ))
    };
    match text.strip_suffix('%') {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .map(Threshold::Percent)
            .ok_or_else(bad),
        None => text.parse().map(Threshold::Servers).map_err(|_| bad()),
    }
}

fn status_of(outcome: &Outcome) -> String {
    match outcome {
        Outcome::TimedOut => "no answer within the time for one server".into(),
        Outcome::NotStarted(why) => match why {
            fanout::NotStarted::Deadline => "not started: the deadline passed".into(),
            fanout::NotStarted::Stopped(stop) => format!("not started: {stop}"),
        },
        _ => String::new(),
    }
}

/// Which servers succeeded and which did not.
#[derive(Default)]
struct Summary {
    succeeded: Vec<String>,
    failed: Vec<String>,
    not_started: Vec<String>,
    stopped: Option<String>,
}

impl Summary {
    fn add(&mut self, name: &str, outcome: &Outcome) {
        let list = match outcome {
            o if o.succeeded() => &mut self.succeeded,
            Outcome::NotStarted(_) => &mut self.not_started,
            _ => &mut self.failed,
        };
        list.push(name.to_owned());
    }

    fn json(&mut self, servers: usize) -> Value {
        for list in [&mut self.succeeded, &mut self.failed, &mut self.not_started] {
            list.sort();
        }
        json!({
            "servers": servers,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "not_started": self.not_started,
            "stopped": self.stopped,
        })
    }
}

/// The next item of `rx` (none at its end), waiting without the GIL and looking for
/// signals between slices.
fn recv(py: Python<'_>, rx: &Mutex<mpsc::Receiver<Item>>) -> PyResult<Option<Item>> {
    let mut rx = rx
        .lock()
        .map_err(|_| PyRuntimeError::new_err("a previous read of this result failed"))?;
    wait(py, rx.recv())
}

/// A running call's output, then its result.
#[pyclass(module = "cmdchan._native")]
struct Streamed {
    rx: Mutex<mpsc::Receiver<Item>>,
}

#[pymethods]
impl Streamed {
    /// `("stdout"|"stderr", bytes)` as output comes, then `("result", dict)`, then None.
    /// Waits without the GIL.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Option<(&'static str, Bound<'py, PyAny>)>> {
        let item = recv(py, &self.rx)?;
        item.map(|item| {
            Ok(match item {
                Item::Output(Stream::Stdout, data) => {
                    ("stdout", PyBytes::new(py, &data).into_any())
                }
                Item::Output(Stream::Stderr, data) => {
                    ("stderr", PyBytes::new(py, &data).into_any())
                }
                Item::Done(value) => ("result", to_python(py, &value)?),
            })
        })
        .transpose()
    }
}

/// A fan-out's results as each server finishes, then the summary.
#[pyclass(module = "cmdchan._native")]
struct FanOut {
    rx: Mutex<mpsc::Receiver<Item>>,
}

#[pymethods]
impl FanOut {
    /// The next server's object (or, last, the summary); None at the end. Waits
    /// without the GIL.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        loop {
            match recv(py, &self.rx)? {
                Some(Item::Done(value)) => return to_python(py, &value).map(Some),
                Some(Item::Output(..)) => continue,
                None => return Ok(None),
            }
        }
    }
}

/// `cmdchan approval request`: writes the request file; its plain words.
#[pyfunction]
#[pyo3(signature = (credential, out, command, args, params, servers, zone=None, detach=false, expires_in=4.0 * 3600.0))]
#[allow(
    clippy::too_many_arguments,
    reason = "the Python keyword arguments, one each"
)]
fn approval_request(
    credential: PathBuf,
    out: PathBuf,
    command: String,
    args: Vec<String>,
    params: Vec<(String, String)>,
    servers: Vec<String>,
    zone: Option<String>,
    detach: bool,
    expires_in: f64,
) -> PyResult<String> {
    let cred = Credential::load(&credential).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let zone = match zone {
        Some(z) => ident(&z, "zone")?,
        None => cred
            .zone(None)
            .map(|(z, _)| z.clone())
            .map_err(|e| PyValueError::new_err(e.to_string()))?,
    };
    let servers = servers
        .iter()
        .map(|s| ident(s, "server"))
        .collect::<PyResult<Vec<_>>>()?;
    let prepared = Prepared {
        zone,
        command,
        args,
        params: params_of(params),
        detach,
        servers,
        expires: cmdchan_common::time::now().saturating_add(expires_in.max(0.0) as u64),
    };
    let file =
        ApprovalFile::prepare(&cred, prepared).map_err(|e| PyValueError::new_err(e.to_string()))?;
    file.save(&out)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(file.describe())
}

/// `cmdchan approval sign`: co-signs the file with this credential; its plain words.
#[pyfunction]
fn approval_sign(credential: PathBuf, path: PathBuf) -> PyResult<String> {
    let cred = Credential::load(&credential).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut file = ApprovalFile::load(&path).map_err(|e| PyValueError::new_err(e.to_string()))?;
    file.sign(&cred, cmdchan_common::time::now())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    file.save(&path)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(file.describe())
}

/// `cmdchan approval show`: the request and its approvals in plain words.
#[pyfunction]
fn approval_show(path: PathBuf) -> PyResult<String> {
    ApprovalFile::load(&path)
        .map(|f| f.describe())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The job ID of a fan-out run's job on one server.
#[pyfunction]
fn job_id(run: &str, server: &str) -> PyResult<String> {
    let run = cmdchan::protocol::parse_id(run)
        .ok_or_else(|| PyValueError::new_err(format!("{run:?} is not a run ID (32 hex digits)")))?;
    Ok(hex::encode(cmdchan::protocol::job_id(
        &run,
        &ident(server, "server")?,
    )))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Native>()?;
    m.add_class::<Streamed>()?;
    m.add_class::<FanOut>()?;
    m.add_function(wrap_pyfunction!(approval_request, m)?)?;
    m.add_function(wrap_pyfunction!(approval_sign, m)?)?;
    m.add_function(wrap_pyfunction!(approval_show, m)?)?;
    m.add_function(wrap_pyfunction!(job_id, m)?)?;
    m.add("PROTOCOL", cmdchan_common::protocol::VERSION_LINE)?;
    Ok(())
}
