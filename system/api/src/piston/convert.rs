//! Piston v2's shapes onto Wolf's job model and back: runtimes and their versions, the
//! execute request (files and their encodings, limits in ms and bytes), Piston's 400 messages,
//! and the stages of its answer.

use base64::Engine;
use serde_json::{Map, Value, json};
use wolf_core::{FileInput, JobRecord, LimitsInput, Submission, Verdict};

/// A runtime: a Wolf engine under its version as Piston writes them (`3.11.2`).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Wolf's engine name (Piston's `language`).
    pub language: String,
    /// The host's version of it, as `major.minor.patch`.
    pub version: String,
    /// Wolf's aliases.
    pub aliases: Vec<String>,
    /// The engine's source file name.
    pub source: String,
}

/// `x.y.z` from a version line (`Python 3.11.2`, `v18.19.0`, `javac 17.0.9`, `12`).
pub fn semver_of(line: &str) -> Option<String> {
    let start = line.find(|c: char| c.is_ascii_digit())?;
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts: Vec<&str> = digits.split('.').filter(|p| !p.is_empty()).take(3).collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    Some(parts.join("."))
}

/// Whether `version` (`x.y.z`) satisfies a selector: exact, `*`, `x`/`X` wildcards, or a prefix
/// (`3`, `3.11`), as npm semver reads these forms.
pub fn matches(selector: &str, version: &str) -> bool {
    let sel = selector.trim().trim_start_matches(['=', 'v']);
    if sel == "*" || sel.is_empty() {
        return true;
    }
    let want: Vec<&str> = sel.split('.').collect();
    let have: Vec<&str> = version.split('.').collect();
    want.len() <= 3
        && want
            .iter()
            .zip(&have)
            .all(|(w, h)| matches!(*w, "x" | "X" | "*") || w == h)
}

/// A Piston 400 message.
pub type Refused = String;

fn int(body: &Map<String, Value>, key: &str, cap: u64) -> Result<Option<u64>, Refused> {
    let v = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(_) => return Err(format!("If specified, {key} must be a number")),
    };
    // Piston: a falsy limit (0) means "use the default"; -1 is "no limit", which here is the
    // engine's default too (Wolf always has one).
    if v == 0.0 || v == -1.0 {
        return Ok(None);
    }
    if v < 0.0 {
        return Err(format!("{key} must be non-negative"));
    }
    if v > cap as f64 {
        return Err(format!("{key} cannot exceed the configured limit of {cap}"));
    }
    Ok(Some(v.ceil() as u64))
}

fn decode(encoding: &str, content: &str, at: usize) -> Result<Vec<u8>, Refused> {
    match encoding {
        "utf8" => Ok(content.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|_| format!("files[{at}].content is not valid base64")),
        "hex" => hex::decode(content.trim()).map_err(|_| format!("files[{at}].content is not valid hex")),
        other => Err(format!(
            "files[{at}].encoding {other:?} is not one of utf8, base64, hex"
        )),
    }
}

/// The request as Wolf's submission, and the runtime it names.
pub fn submission(
    body: &Value,
    runtimes: &[Runtime],
    caps: &wolf_core::Caps,
) -> Result<(Submission, Runtime), Refused> {
    let body = body.as_object().ok_or("the body must be a JSON object")?;
    let language = body
        .get("language")
        .and_then(Value::as_str)
        .ok_or("language is required as a string")?;
    let version = body
        .get("version")
        .and_then(Value::as_str)
        .ok_or("version is required as a string")?;
    let files = body
        .get("files")
        .and_then(Value::as_array)
        .ok_or("files is required as an array")?;
    let lang = language.trim().to_ascii_lowercase();
    let rt = runtimes
        .iter()
        .filter(|r| r.language == lang || r.aliases.contains(&lang))
        .find(|r| matches(version, &r.version))
        .cloned()
        .ok_or_else(|| format!("{language}-{version} runtime is unknown"))?;
    let mut main: Option<String> = None;
    let mut extra = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let content = f
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("files[{i}].content is required as a string"))?;
        let encoding = f.get("encoding").and_then(Value::as_str).unwrap_or("utf8");
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("file{i}.code"));
        // Piston throws (a 500) on `..`; here every unsafe name is a plain 400.
        if !wolf_core::names::valid_file_path(&name) {
            return Err(format!(
                "files[{i}].name {name:?} is not a relative path of plain names"
            ));
        }
        let bytes = decode(encoding, content, i)?;
        if main.is_none() && encoding == "utf8" {
            main = Some(content.to_string());
            continue;
        }
        extra.push(FileInput {
            name,
            content: base64::engine::general_purpose::STANDARD.encode(bytes),
            encoding: Some(wolf_core::Encoding::Base64),
        });
    }
    let code = main.ok_or("files must include at least one utf8 encoded file")?;
    let mut stdin = match body.get("stdin") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("If specified, stdin must be a string".into()),
    };
    if !stdin.ends_with('\n') {
        stdin.push('\n'); // as Piston does
    }
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or("If specified, args must be an array of strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("If specified, args must be an array of strings".into()),
    };
    for (key, cap) in [
        ("compile_timeout", caps.compile.wall_time_ms),
        ("compile_cpu_time", caps.compile.cpu_time_ms),
        ("compile_memory_limit", caps.compile.memory_mb << 20),
    ] {
        // Checked as Piston checks them; Wolf's compile step keeps the engine's own limits.
        int(body, key, cap)?;
    }
    let limits = LimitsInput {
        cpu_time_ms: int(body, "run_cpu_time", caps.run.cpu_time_ms)?,
        wall_time_ms: int(body, "run_timeout", caps.run.wall_time_ms)?,
        memory_mb: int(body, "run_memory_limit", caps.run.memory_mb << 20)?.map(|b| b.div_ceil(1 << 20)),
        ..Default::default()
    };
    let sub = Submission {
        code,
        execution_engine: rt.language.clone(),
        stdin: Some(stdin),
        args,
        files: extra,
        limits: (limits != LimitsInput::default()).then_some(limits),
        expected_output: None,
        tags: Some(vec![format!("piston:{}-{}", rt.language, rt.version)]),
        tests: Vec::new(),
        stop_on_first_failure: false,
        checker: None,
        interactor: None,
        merge_stderr: false,
        compiler_options: Vec::new(),
        output_files: Vec::new(),
        callback_url: None,
    };
    Ok((sub, rt))
}

pub(crate) fn signal_name(n: i32) -> String {
    match n {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        3 => "SIGQUIT".into(),
        4 => "SIGILL".into(),
        5 => "SIGTRAP".into(),
        6 => "SIGABRT".into(),
        7 => "SIGBUS".into(),
        8 => "SIGFPE".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        13 => "SIGPIPE".into(),
        14 => "SIGALRM".into(),
        15 => "SIGTERM".into(),
        24 => "SIGXCPU".into(),
        25 => "SIGXFSZ".into(),
        31 => "SIGSYS".into(),
        n => format!("SIG{n}"),
    }
}

/// Piston's answer: `{language, version, run, compile?}`; `stdout` is the program's output.
pub fn answer(rec: &JobRecord, rt: &Runtime, compiled: bool, stdout: &[u8]) -> Value {
    let Some(r) = rec.result.as_ref() else {
        let failed = json!({"stdout": "", "stderr": "", "output": "", "code": null, "signal": null,
            "message": "the job could not be run", "status": "XX", "cpu_time": 0, "wall_time": 0, "memory": 0});
        return json!({"language": rt.language, "version": rt.version, "run": failed});
    };
    let stdout = String::from_utf8_lossy(stdout).into_owned();
    let (status, message) = match r.verdict {
        Verdict::Accepted | Verdict::WrongAnswer | Verdict::PresentationError => (Value::Null, Value::Null),
        Verdict::RuntimeError if r.signal.is_some() => (json!("SG"), Value::Null),
        Verdict::RuntimeError => (json!("RE"), Value::Null),
        Verdict::TimeLimitExceeded => (json!("TO"), json!("Time limit exceeded")),
        Verdict::OutputLimitExceeded => (json!("OL"), json!("Output limit exceeded")),
        Verdict::MemoryLimitExceeded => (json!("SG"), json!("Memory limit exceeded")),
        Verdict::InternalError | Verdict::CompileError => (json!("XX"), json!(r.error.clone())),
    };
    let killed = matches!(r.verdict, Verdict::TimeLimitExceeded | Verdict::OutputLimitExceeded);
    let signal = if killed {
        json!("SIGKILL")
    } else {
        r.signal.map(|s| json!(signal_name(s))).unwrap_or(Value::Null)
    };
    let run = json!({"stdout": stdout, "stderr": r.stderr, "output": format!("{stdout}{}", r.stderr),
        "code": if r.signal.is_some() || killed { Value::Null } else { json!(r.exit_code) },
        "signal": signal, "message": message, "status": status,
        "cpu_time": r.cpu_time_ms, "wall_time": r.wall_time_ms, "memory": r.memory_kb * 1024});
    let mut out = json!({"language": rt.language, "version": rt.version, "run": run});
    if compiled {
        let failed = r.verdict == Verdict::CompileError;
        let compile = json!({"stdout": "", "stderr": r.compile_output, "output": r.compile_output,
            "code": if failed { json!(r.exit_code.unwrap_or(1)) } else { json!(0) },
            "signal": null, "message": null, "status": if failed { json!("RE") } else { Value::Null },
            "cpu_time": 0, "wall_time": rec.timings.map(|t| t.compile.round() as u64).unwrap_or(0), "memory": 0});
        if failed {
            // As Piston: when compilation fails, run is a copy of compile.
            out["run"] = compile.clone();
        }
        out["compile"] = compile;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_selectors() {
        assert_eq!(semver_of("Python 3.11.2").as_deref(), Some("3.11.2"));
        assert_eq!(semver_of("v18.19.0").as_deref(), Some("18.19.0"));
        assert_eq!(semver_of("12").as_deref(), Some("12.0.0"));
        assert_eq!(semver_of("no digits"), None);
        for (sel, ok) in [
            ("3.11.2", true),
            ("3.x", true),
            ("3.11.x", true),
            ("*", true),
            ("3", true),
            ("3.10.x", false),
            ("4", false),
        ] {
            assert_eq!(matches(sel, "3.11.2"), ok, "{sel}");
        }
    }

    #[test]
    fn requests_are_refused_with_pistons_messages() {
        let rts = vec![Runtime {
            language: "python".into(),
            version: "3.11.2".into(),
            aliases: vec!["py".into()],
            source: "main.py".into(),
        }];
        let caps = wolf_core::Caps::default();
        let refuse = |b: Value| submission(&b, &rts, &caps).unwrap_err();
        assert_eq!(refuse(json!({})), "language is required as a string");
        assert_eq!(refuse(json!({"language": "py"})), "version is required as a string");
        assert_eq!(
            refuse(json!({"language": "py", "version": "3"})),
            "files is required as an array"
        );
        assert_eq!(
            refuse(json!({"language": "py", "version": "3", "files": [{}]})),
            "files[0].content is required as a string"
        );
        assert_eq!(
            refuse(json!({"language": "cobol", "version": "1", "files": [{"content": "x"}]})),
            "cobol-1 runtime is unknown"
        );
        assert_eq!(
            refuse(json!({"language": "py", "version": "3", "files": [{"content": "eA==", "encoding": "base64"}]})),
            "files must include at least one utf8 encoded file"
        );
        assert!(
            refuse(
                json!({"language": "py", "version": "3", "files": [{"content": "x"}, {"name": "../x", "content": ""}]})
            )
            .contains("relative path")
        );
        assert_eq!(
            refuse(json!({"language": "py", "version": "3", "files": [{"content": "x"}], "run_timeout": "1"})),
            "If specified, run_timeout must be a number"
        );
        assert_eq!(
            refuse(json!({"language": "py", "version": "3", "files": [{"content": "x"}], "run_timeout": -5})),
            "run_timeout must be non-negative"
        );
        assert!(
            refuse(json!({"language": "py", "version": "3", "files": [{"content": "x"}], "run_timeout": 1e12}))
                .contains("cannot exceed")
        );
        let (s, rt) = submission(
            &json!({"language": "py", "version": "3.x", "files": [{"content": "print(1)"}, {"name": "d.bin", "content": "00ff", "encoding": "hex"}],
                "stdin": "a", "args": ["1", "2", "3"], "compile_memory_limit": -1, "run_memory_limit": 10_000_000}),
            &rts,
            &caps,
        )
        .unwrap();
        assert_eq!(
            (s.code.as_str(), s.stdin.as_deref(), rt.version.as_str()),
            ("print(1)", Some("a\n"), "3.11.2")
        );
        assert_eq!(s.files[0].bytes().unwrap(), [0, 255]);
        assert_eq!(s.limits.unwrap().memory_mb, Some(10));
    }
}
