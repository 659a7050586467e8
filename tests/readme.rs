//! The README as written: every ```sh block of README.md runs, in order, in bash
//! (`set -euo pipefail`), and the test fails on the first command that fails.
//!
//! README.md is read when the test runs, so the test follows the README as it changes.
//! Fences other than ```sh (```text, a bare ```) are not run: an illustration that
//! cannot run is marked that way in the README.
//!
//! Each block runs in a fresh `bash` with a clean environment; blocks share only the
//! file system (and files left by earlier blocks). Commands are sent one at a time: a
//! line ending in `\` continues on the next, and lines are joined until bash can parse
//! them (`bash -n`), so `for … do … done` over several lines is one command. Blank lines
//! and comment lines are skipped; a `# …` comment after a command is bash's to ignore.
//!
//! The only changes made to what the README says, all mechanical:
//!
//! - `olc` is the freshly built binary: the directory of `CARGO_BIN_EXE_olc` comes first
//!   on PATH.
//! - `cargo run --release -- ARGS` runs as `olc ARGS` (the top block's devnet), and
//!   `cargo test …` is skipped (it is what runs this test). Any other `cargo` command
//!   fails the test: it has no substitution.
//! - `COORD_IP` becomes 127.0.0.1, and the port 7000 (the number standing alone) a free
//!   port, free for both udp and tcp, that the test picks anew for each block.
//! - `/var/lib/olc` and `/tmp/` become `var/lib/olc` and `tmp/` inside a temporary
//!   directory (whose `var/lib` and `tmp` exist, as on a fresh machine); HOME,
//!   XDG_DATA_HOME and XDG_CONFIG_HOME point into it too, the working directory is a
//!   fresh directory inside it, and OLC_KEY, OLC_COORDINATOR and RUST_LOG are unset.
//!
//! A command that starts a daemon (`olc coordinator start …`, `olc worker start …`) runs
//! in the background, in its own process group, with its output in a log file, and the
//! next command is sent only once the daemon is ready: a coordinator when it has printed
//! a `listening on` address; a worker when the coordinator lists it in
//! `olc workers --json`. A block's daemons are stopped (SIGTERM to the group, then
//! SIGKILL) when the block ends, as a reader stops them before the next section; a guard
//! stops them as well when the test fails or panics. Every command, block, daemon start
//! and the whole test have a time bound. On failure the test prints the block, the
//! failing command as written and as run, its stdout and stderr, and the daemons' logs.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The whole test.
const TEST_BOUND: Duration = Duration::from_secs(300);
/// One ```sh block.
const BLOCK_BOUND: Duration = Duration::from_secs(180);
/// One command.
const COMMAND_BOUND: Duration = Duration::from_secs(120);
/// A daemon, from its start to ready.
const READY_BOUND: Duration = Duration::from_secs(30);
/// From SIGTERM to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How the harness's own lines on bash's stdout start (commands' output goes to files).
const MARK: &str = "@@olc-readme";
/// Lines of a command's output or a log shown.
const SHOW_LINES: usize = 40;

#[test]
fn readme_blocks_run_as_written() {
    let started = Instant::now();
    let test_deadline = started + TEST_BOUND;
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = sh_blocks(&readme);
    assert!(!blocks.is_empty(), "README.md has no ```sh block");

    let tmp = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(tmp.path());
    for (i, block) in blocks.iter().enumerate() {
        let t = Instant::now();
        println!(
            "\n=== block {} of {}: \"{}\" (README.md:{})",
            i + 1,
            blocks.len(),
            block.heading,
            block.fence_line
        );
        if let Err(report) = run_block(&ctx, i, block, test_deadline) {
            eprintln!("{report}");
            panic!(
                "README.md block {} (\"{}\", line {}) does not run as written; see above",
                i + 1,
                block.heading,
                block.fence_line
            );
        }
        println!("=== block {} ran in {:.1?}", i + 1, t.elapsed());
    }
    println!(
        "\nall {} blocks ran in {:.1?}",
        blocks.len(),
        started.elapsed()
    );
}

// ---- the README's blocks and commands ----

struct Block {
    /// The nearest `#` heading above the block.
    heading: String,
    /// The README line of the opening fence (1-based).
    fence_line: usize,
    /// The block's lines with their README line numbers.
    lines: Vec<(usize, String)>,
}

/// Every ```sh block, in order. Other fences are skipped, contents and all.
fn sh_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut heading = String::from("(top)");
    let mut open: Option<Block> = None;
    let mut in_other_fence = false;
    for (i, line) in readme.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        if let Some(block) = open.as_mut() {
            if fence.is_some() {
                blocks.push(open.take().unwrap());
            } else {
                block.lines.push((i + 1, line.to_string()));
            }
        } else if in_other_fence {
            in_other_fence = fence.is_none();
        } else if let Some(info) = fence {
            if info.trim() == "sh" {
                open = Some(Block {
                    heading: heading.clone(),
                    fence_line: i + 1,
                    lines: Vec::new(),
                });
            } else {
                in_other_fence = true;
            }
        } else if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
        }
    }
    assert!(open.is_none(), "README.md: a ```sh block is never closed");
    blocks
}

/// One command of a block, as the README writes it.
struct Cmd {
    line: usize,
    text: String,
}

/// Splits a block into commands: continuation lines and unfinished compound commands
/// are joined; blank and comment-only lines between commands are dropped.
fn commands(block: &Block) -> Vec<Cmd> {
    let mut out = Vec::new();
    let mut pending: Option<Cmd> = None;
    for (n, line) in &block.lines {
        if pending.is_none() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        let cmd = pending.get_or_insert_with(|| Cmd {
            line: *n,
            text: String::new(),
        });
        cmd.text.push_str(line);
        cmd.text.push('\n');
        if line.trim_end().ends_with('\\') || !bash_parses(&cmd.text) {
            continue;
        }
        out.push(pending.take().unwrap());
    }
    if let Some(cmd) = pending {
        panic!(
            "README.md:{}: the command is unfinished at the end of its block:\n{}",
            cmd.line, cmd.text
        );
    }
    out
}

/// Whether bash can parse `text` as it stands (`bash -n`).
fn bash_parses(text: &str) -> bool {
    let mut child = Command::new("bash")
        .args(["--noprofile", "--norc", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash is needed to run the README");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

enum Run {
    Skip(&'static str),
    Shell(String),
    Daemon(Role, String),
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Coordinator,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }
}

/// What the harness runs for `cmd`: the substitutions of the header, and how.
fn prepare(cmd: &Cmd, root: &Path, port: u16) -> Run {
    let text = cmd.text.trim_start();
    let text = if text.starts_with("cargo test") {
        return Run::Skip("`cargo test` is what runs this test");
    } else if let Some(rest) = text.strip_prefix("cargo run --release -- ") {
        format!("olc {rest}")
    } else if text.starts_with("cargo ") {
        panic!(
            "README.md:{}: no substitution for this cargo command:\n{}",
            cmd.line, cmd.text
        );
    } else {
        text.to_string()
    };
    let text = substitute(&text, root, port);
    if text.starts_with("olc coordinator start") {
        Run::Daemon(Role::Coordinator, text)
    } else if text.starts_with("olc worker start") {
        Run::Daemon(Role::Worker, text)
    } else {
        Run::Shell(text)
    }
}

/// `COORD_IP`, the port 7000, `/var/lib/olc` and `/tmp/`, replaced in one pass (so a
/// replacement is never replaced again).
fn substitute(text: &str, root: &Path, port: u16) -> String {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_-./~".contains(c);
    let var_lib = format!("{}/var/lib/olc", root.display());
    let tmp = format!("{}/tmp/", root.display());
    let port = port.to_string();
    let mut out = String::new();
    let mut prev: Option<char> = None;
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        let rest = &text[i..];
        let next_after = |n: usize| rest[n..].chars().next();
        let (pattern, replacement): (&str, &str) = if rest.starts_with("COORD_IP") {
            ("COORD_IP", "127.0.0.1")
        } else if rest.starts_with("7000")
            && !prev.is_some_and(|p| p.is_ascii_digit())
            && !next_after(4).is_some_and(|n| n.is_ascii_digit())
        {
            ("7000", &port)
        } else if rest.starts_with("/var/lib/olc")
            && !prev.is_some_and(path_char)
            && !next_after(12).is_some_and(|n| n != '/' && path_char(n))
        {
            ("/var/lib/olc", &var_lib)
        } else if rest.starts_with("/tmp/") && !prev.is_some_and(path_char) {
            ("/tmp/", &tmp)
        } else {
            out.push(c);
            prev = Some(c);
            i += c.len_utf8();
            continue;
        };
        out.push_str(replacement);
        prev = pattern.chars().last();
        i += pattern.len();
    }
    out
}

/// A port free for udp and tcp on every interface (the README listens on 0.0.0.0).
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no port is free for both udp and tcp");
}

// ---- the machine the README runs on ----

struct Ctx {
    root: PathBuf,
    work: PathBuf,
    logs: PathBuf,
    env: Vec<(String, String)>,
}

impl Ctx {
    fn new(root: &Path) -> Self {
        let home = root.join("home");
        let work = root.join("work");
        let logs = root.join("harness");
        for dir in [
            home.join(".local/share"),
            home.join(".config"),
            root.join("tmp"),
            root.join("var/lib"),
            work.clone(),
            logs.clone(),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_olc")).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        let s = |p: &Path| p.display().to_string();
        let env = vec![
            ("PATH".into(), path),
            ("HOME".into(), s(&home)),
            ("XDG_DATA_HOME".into(), s(&home.join(".local/share"))),
            ("XDG_CONFIG_HOME".into(), s(&home.join(".config"))),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        Self {
            root: root.to_path_buf(),
            work,
            logs,
            env,
        }
    }

    /// A command with the README's environment (no OLC_KEY, OLC_COORDINATOR, RUST_LOG).
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.work);
        cmd
    }
}

// ---- running a block ----

fn run_block(ctx: &Ctx, index: usize, block: &Block, test_deadline: Instant) -> Result<(), String> {
    let deadline = test_deadline.min(Instant::now() + BLOCK_BOUND);
    let port = free_port();
    let mut daemons = Daemons::default();
    let mut shell = Shell::start(ctx);
    shell.send("set -euo pipefail\n");
    let mut coordinator_addr: Option<String> = None;

    for (ci, cmd) in commands(block).iter().enumerate() {
        let run = prepare(cmd, &ctx.root, port);
        println!("README.md:{} $ {}", cmd.line, cmd.text.trim_end());
        let started = Instant::now();
        let tag = format!("b{}-c{}", index + 1, ci + 1);
        let fail = |why: String, as_run: &str, daemons: &Daemons, shell: &Shell| {
            failure(ctx, block, cmd, as_run, &tag, &why, daemons, shell)
        };
        match run {
            Run::Skip(why) => println!("  (skipped: {why})"),
            Run::Shell(text) => {
                let out = ctx.logs.join(format!("{tag}.out"));
                let err = ctx.logs.join(format!("{tag}.err"));
                shell.send(&format!(
                    "{{ {text}\n}} </dev/null >'{}' 2>'{}'\necho \"{MARK} done {ci} $?\"\n",
                    out.display(),
                    err.display()
                ));
                let bound = deadline.min(Instant::now() + COMMAND_BOUND);
                match shell.wait_mark("done", ci, bound) {
                    Ok(rc) if rc == "0" => {}
                    Ok(rc) => {
                        return Err(fail(
                            format!("it exited with status {rc}"),
                            &text,
                            &daemons,
                            &shell,
                        ));
                    }
                    Err(why) => return Err(fail(why, &text, &daemons, &shell)),
                }
                show("stdout", &out);
                show("stderr", &err);
            }
            Run::Daemon(role, text) => {
                let log = ctx.logs.join(format!("{tag}-{}.log", role.name()));
                shell.send(&format!(
                    "set -m\n{{ {text}\n}} </dev/null >'{}' 2>&1 &\nset +m\necho \"{MARK} daemon {ci} $!\"\n",
                    log.display()
                ));
                let bound = deadline.min(Instant::now() + READY_BOUND);
                let pgid = match shell.wait_mark("daemon", ci, bound) {
                    Ok(pid) => pid.parse::<u32>().unwrap(),
                    Err(why) => return Err(fail(why, &text, &daemons, &shell)),
                };
                daemons.0.push(Daemon {
                    name: format!("{} (README.md:{})", role.name(), cmd.line),
                    pgid,
                    log: log.clone(),
                });
                let daemon = daemons.0.last().unwrap();
                let ready = match role {
                    Role::Coordinator => coordinator_ready(daemon, bound).map(|addr| {
                        coordinator_addr = Some(addr);
                    }),
                    Role::Worker => {
                        let addr = coordinator_addr
                            .clone()
                            .or_else(|| flag_value(&text, "--coordinator"));
                        match addr {
                            None => Err("no coordinator to ask whether the worker joined".into()),
                            Some(addr) => worker_ready(ctx, daemon, &addr, bound),
                        }
                    }
                };
                if let Err(why) = ready {
                    return Err(fail(why, &text, &daemons, &shell));
                }
                println!("  ({} ready, log {})", role.name(), log.display());
            }
        }
        println!("  ({:.1?})", started.elapsed());
    }

    shell.send("exit 0\n");
    shell.stdin = None;
    let bound = deadline.min(Instant::now() + Duration::from_secs(10));
    while Instant::now() < bound {
        if shell.child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    daemons.stop_all();
    Ok(())
}

/// The failure report: the block, the command as written and as run, its output, the
/// daemons' logs and bash's own stderr.
#[allow(clippy::too_many_arguments)]
fn failure(
    ctx: &Ctx,
    block: &Block,
    cmd: &Cmd,
    as_run: &str,
    tag: &str,
    why: &str,
    daemons: &Daemons,
    shell: &Shell,
) -> String {
    let mut r = String::new();
    let mut add = |s: String| {
        r.push_str(&s);
        r.push('\n');
    };
    add(format!(
        "\n######## README.md: block \"{}\" (line {}) fails at line {}: {why}",
        block.heading, block.fence_line, cmd.line
    ));
    add("---- the block:".into());
    for (n, line) in &block.lines {
        let mark = if *n == cmd.line { ">>" } else { "  " };
        add(format!("{mark} {n:>4} | {line}"));
    }
    add(format!("---- the command as run:\n{}", as_run.trim_end()));
    for stream in ["out", "err"] {
        let path = ctx.logs.join(format!("{tag}.{stream}"));
        if path.exists() {
            add(format!("---- its std{stream}:\n{}", tail(&path, 200)));
        }
    }
    for d in &daemons.0 {
        add(format!("---- log of {}:\n{}", d.name, tail(&d.log, 200)));
    }
    let bash_err = shell.stderr.lock().unwrap();
    if !bash_err.trim().is_empty() {
        add(format!("---- bash's stderr:\n{}", bash_err.trim_end()));
    }
    add("########".into());
    r
}

/// Prints the first lines of a command's output, indented.
fn show(label: &str, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text.trim().is_empty() {
        return;
    }
    let lines: Vec<&str> = text.lines().collect();
    println!("  {label}:");
    for line in lines.iter().take(SHOW_LINES) {
        println!("    {line}");
    }
    if lines.len() > SHOW_LINES {
        println!("    … ({} more lines)", lines.len() - SHOW_LINES);
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("… ({skip} lines before)\n"));
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}

/// The value after `flag` in a command line, if it is a plain word.
fn flag_value(text: &str, flag: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == flag {
            return words.next().map(str::to_string);
        }
        if let Some(v) = w.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
            return Some(v.to_string());
        }
    }
    None
}

// ---- bash ----

/// One block's bash, fed a command at a time on stdin; killed with its process group
/// when dropped.
struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    marks: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Shell {
    fn start(ctx: &Ctx) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = ctx
            .command("bash")
            .args(["--noprofile", "--norc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("bash is needed to run the README");
        let stdin = child.stdin.take();
        let (tx, marks) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stdin,
            marks,
            stderr,
        }
    }

    fn send(&mut self, script: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            // A bash that has exited (set -e) is reported by `wait_mark`.
            let _ = stdin
                .write_all(script.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Waits for `MARK kind id VALUE` and returns VALUE.
    fn wait_mark(&mut self, kind: &str, id: usize, until: Instant) -> Result<String, String> {
        let prefix = format!("{MARK} {kind} {id} ");
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.marks.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = line.strip_prefix(&prefix) {
                        return Ok(value.trim().to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "it did not finish within its time bound ({:.0?} for a command, {:.0?} \
                         for a block, {:.0?} for the test)",
                        COMMAND_BOUND, BLOCK_BOUND, TEST_BOUND
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    return Err(format!("it failed: bash stopped ({status})"));
                }
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.stdin = None;
        signal_group(self.child.id(), "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- daemons ----

struct Daemon {
    name: String,
    /// The process group the daemon runs in (bash's `set -m` gives each background job
    /// its own).
    pgid: u32,
    log: PathBuf,
}

/// A block's daemons: stopped when the block ends, and by `Drop` on every other way out.
#[derive(Default)]
struct Daemons(Vec<Daemon>);

impl Daemons {
    fn stop_all(&mut self) {
        if self.0.is_empty() {
            return;
        }
        for d in &self.0 {
            signal_group(d.pgid, "TERM");
        }
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until && self.0.iter().any(|d| group_alive(d.pgid)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for d in &self.0 {
            if group_alive(d.pgid) {
                eprintln!(
                    "{} did not stop within {STOP_GRACE:?} of SIGTERM: SIGKILL",
                    d.name
                );
                signal_group(d.pgid, "KILL");
            }
        }
        self.0.clear();
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a process of the group still runs (zombies, which an orphan may stay as, do
/// not count).
fn group_alive(pgid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return false;
        };
        dir.filter_map(Result::ok).any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Waits for the coordinator's first `listening on` line; returns an address to reach it
/// on loopback.
fn coordinator_ready(d: &Daemon, until: Instant) -> Result<String, String> {
    loop {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        let addrs: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("listening on "))
            .map(str::trim)
            .collect();
        if let Some(first) = addrs.first() {
            let addr = addrs
                .iter()
                .find(|a| a.starts_with("/ip4/127.0.0.1/"))
                .map_or_else(
                    || first.replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/"),
                    |a| a.to_string(),
                );
            return Ok(addr);
        }
        if !group_alive(d.pgid) {
            return Err("the coordinator exited before it listened".into());
        }
        if Instant::now() > until {
            return Err(format!(
                "the coordinator did not listen within {READY_BOUND:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the coordinator at `coordinator` lists the worker in `olc workers --json`:
/// an entry whose `peer_id` or `public_key` is what the worker printed (`worker …`,
/// `peer id …`).
fn worker_ready(ctx: &Ctx, d: &Daemon, coordinator: &str, until: Instant) -> Result<(), String> {
    let mut last = String::from("the worker printed no id");
    loop {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        let ids: Vec<&str> = log
            .lines()
            .filter_map(|l| {
                l.strip_prefix("worker ")
                    .or_else(|| l.strip_prefix("peer id "))
            })
            .map(str::trim)
            .collect();
        if !ids.is_empty() {
            let out = ctx
                .command(env!("CARGO_BIN_EXE_olc"))
                .args([
                    "workers",
                    "--coordinator",
                    coordinator,
                    "--json",
                    "--timeout",
                    "5s",
                ])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                let list: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let listed = |w: &serde_json::Value| {
                    ["peer_id", "public_key"]
                        .iter()
                        .any(|k| w[k].as_str().is_some_and(|v| ids.contains(&v)))
                };
                if list.iter().any(listed) {
                    return Ok(());
                }
                last = format!(
                    "{} workers listed, not this one ({})",
                    list.len(),
                    ids.join(", ")
                );
            } else {
                last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
        }
        if !group_alive(d.pgid) {
            return Err("the worker exited".into());
        }
        if Instant::now() > until {
            return Err(format!(
                "`olc workers --coordinator {coordinator} --json` did not list the worker \
                 within {READY_BOUND:?} (last: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn substitutions_are_mechanical() {
    let root = Path::new("/x/r");
    assert_eq!(
        substitute(
            "olc worker start --coordinator /ip4/COORD_IP/udp/7000/quic-v1 --data /var/lib/olc/w",
            root,
            4242
        ),
        "olc worker start --coordinator /ip4/127.0.0.1/udp/4242/quic-v1 --data /x/r/var/lib/olc/w"
    );
    assert_eq!(
        substitute(
            "olc account deposit 70000 --out /tmp/tiny; ls x/tmp/y /var/lib/olcx",
            root,
            1
        ),
        "olc account deposit 70000 --out /x/r/tmp/tiny; ls x/tmp/y /var/lib/olcx"
    );
    let block = Block {
        heading: "h".into(),
        fence_line: 1,
        lines: vec![
            (2, "# a comment".into()),
            (3, "echo a \\".into()),
            (4, "    b   # trailing".into()),
            (5, "for i in 1 2; do".into()),
            (6, "  echo $i".into()),
            (7, "done".into()),
        ],
    };
    let cmds = commands(&block);
    assert_eq!(cmds.len(), 2);
    assert_eq!((cmds[0].line, cmds[1].line), (3, 5));
}
