//! `wolf session`: try sessions from a terminal against a running Wolf (`--url`, default
//! `http://127.0.0.1:8080`): `new` starts one, `exec` runs code or a command in it, `repl`
//! reads cells from the terminal (a blank line sends one), `rm` ends it.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Arguments of `wolf session`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The Wolf API.
    #[arg(long, env = "WOLF_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    #[command(subcommand)]
    command: SessionCommand,
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Start a session; prints its id.
    New {
        /// Engine of code without one (default python).
        #[arg(long)]
        engine: Option<String>,
        /// Keep one Python interpreter alive: each exec a cell.
        #[arg(long)]
        repl: bool,
        /// Seconds without an exec before it is reaped.
        #[arg(long)]
        idle_timeout_s: Option<u64>,
    },
    /// Run code (`--code`, or a file) or a shell `--command` in a session; prints the result.
    Exec {
        /// The session.
        id: String,
        /// Source code.
        #[arg(long, conflicts_with_all = ["command", "file"])]
        code: Option<String>,
        /// A bash command line.
        #[arg(long, conflicts_with = "file")]
        command: Option<String>,
        /// A file whose contents are the code.
        file: Option<std::path::PathBuf>,
    },
    /// An interactive loop on a new REPL session: type a cell, end it with a blank line.
    Repl,
    /// End a session.
    Rm {
        /// The session.
        id: String,
    },
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into()
}

/// A request's JSON answer; an error answer is an error with its message.
fn call(method: &str, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let a = agent();
    let resp = match (method, body) {
        ("POST", Some(b)) => a
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        ("DELETE", _) => a.delete(url).call(),
        _ => a.get(url).call(),
    };
    let mut r = resp.with_context(|| format!("{method} {url}"))?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        let m = v["error"]["message"].as_str().unwrap_or(&text).to_string();
        anyhow::bail!("{status}: {m}");
    }
    Ok(v)
}

/// Print a cell's or exec's answer as a terminal shows it.
fn show(r: &Value) {
    print!("{}", r["stdout"].as_str().unwrap_or(""));
    eprint!("{}", r["stderr"].as_str().unwrap_or(""));
    if let Some(tb) = r["traceback"].as_str() {
        eprint!("{tb}");
    } else if let Some(e) = r["error"].as_str() {
        eprintln!("{e}");
    }
    if let Some(v) = r["value"].as_str() {
        println!("{v}");
    }
    if r["verdict"] != "Accepted" {
        eprintln!("[{}]", r["verdict"].as_str().unwrap_or("?"));
    }
    let _ = std::io::stdout().flush();
}

pub fn main(args: SessionArgs) -> anyhow::Result<ExitCode> {
    let base = args.url.trim_end_matches('/');
    match args.command {
        SessionCommand::New {
            engine,
            repl,
            idle_timeout_s,
        } => {
            let mut spec = json!({});
            if let Some(e) = engine {
                spec["executionEngine"] = json!(e);
            }
            if repl {
                spec["mode"] = json!("repl");
            }
            if let Some(s) = idle_timeout_s {
                spec["idleTimeoutS"] = json!(s);
            }
            let info = call("POST", &format!("{base}/session"), Some(spec))?;
            println!("{}", info["id"].as_str().unwrap_or(""));
        }
        SessionCommand::Exec {
            id,
            code,
            command,
            file,
        } => {
            let req = match (code, command, file) {
                (Some(c), None, None) => json!({"code": c}),
                (None, Some(c), None) => json!({"command": c}),
                (None, None, Some(f)) => {
                    json!({"code": std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?})
                }
                _ => anyhow::bail!("give --code, --command or a file"),
            };
            let r = call("POST", &format!("{base}/session/{id}/exec"), Some(req))?;
            println!("{}", serde_json::to_string(&r)?);
        }
        SessionCommand::Repl => {
            let info = call("POST", &format!("{base}/session"), Some(json!({"mode": "repl"})))?;
            let id = info["id"].as_str().unwrap_or("").to_string();
            eprintln!("wolf session {id} (python; a blank line runs the cell, Ctrl-D ends)");
            let stdin = std::io::stdin();
            let mut cell = String::new();
            let mut lines = stdin.lock().lines();
            loop {
                eprint!("{}", if cell.is_empty() { ">>> " } else { "... " });
                let line = match lines.next() {
                    Some(l) => l?,
                    None => break,
                };
                if !line.trim().is_empty() {
                    cell.push_str(&line);
                    cell.push('\n');
                    // A single line that does not open a block runs at once.
                    if cell.lines().count() > 1 || line.trim_end().ends_with(':') {
                        continue;
                    }
                }
                if cell.trim().is_empty() {
                    continue;
                }
                match call(
                    "POST",
                    &format!("{base}/session/{id}/exec"),
                    Some(json!({"code": cell})),
                ) {
                    Ok(r) => show(&r),
                    Err(e) => {
                        eprintln!("{e}");
                        if e.to_string().starts_with("410") {
                            break;
                        }
                    }
                }
                cell.clear();
            }
            let _ = call("DELETE", &format!("{base}/session/{id}"), None);
        }
        SessionCommand::Rm { id } => {
            call("DELETE", &format!("{base}/session/{id}"), None)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
