//! Judge0 CE 1.13.1's shapes onto Wolf's job model and back: language ids, the submission's
//! fields and units, status ids, the fields of an answer, Ruby's base64.

use base64::Engine;
use serde_json::{Map, Value, json};
use wolf_core::{JobRecord, LimitsInput, Status, Submission, Verdict};

/// Judge0 1.13.1's ids and names for each Wolf engine (`db/languages/active.rb`): every GCC
/// variant of C and C++ runs on this host's one compiler.
pub const LANGUAGES: &[(u32, &str, &str)] = &[
    (46, "bash", "Bash"),
    (48, "c", "C (GCC 7.4.0)"),
    (49, "c", "C (GCC 8.3.0)"),
    (50, "c", "C (GCC 9.2.0)"),
    (52, "c++", "C++ (GCC 7.4.0)"),
    (53, "c++", "C++ (GCC 8.3.0)"),
    (54, "c++", "C++ (GCC 9.2.0)"),
    (62, "java", "Java (OpenJDK 13.0.1)"),
    (63, "javascript", "JavaScript (Node.js 12.14.0)"),
    (71, "python", "Python (3.8.1)"),
    (73, "rust", "Rust (1.40.0)"),
];

/// The 14 statuses of `enumerations/status.rb`.
pub const STATUSES: [(u32, &str); 14] = [
    (1, "In Queue"),
    (2, "Processing"),
    (3, "Accepted"),
    (4, "Wrong Answer"),
    (5, "Time Limit Exceeded"),
    (6, "Compilation Error"),
    (7, "Runtime Error (SIGSEGV)"),
    (8, "Runtime Error (SIGXFSZ)"),
    (9, "Runtime Error (SIGFPE)"),
    (10, "Runtime Error (SIGABRT)"),
    (11, "Runtime Error (NZEC)"),
    (12, "Runtime Error (Other)"),
    (13, "Internal Error"),
    (14, "Exec Format Error"),
];

/// The tag a Judge0 submission's record carries, so its language id survives.
pub const LANGUAGE_TAG: &str = "judge0-language-id:";
/// The tag of a Judge0 submission sent with `base64_encoded=true` and a `callback_url`.
pub const BASE64_TAG: &str = "judge0-base64";

/// Judge0's default fields of an answer.
pub const DEFAULT_FIELDS: &[&str] = &[
    "token",
    "time",
    "memory",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
];

/// Every field an answer may have (`fields=*`).
pub const ALL_FIELDS: &[&str] = &[
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
];

/// The engine of a Judge0 language id.
pub fn engine_of(id: u32) -> Option<&'static str> {
    LANGUAGES.iter().find(|(i, _, _)| *i == id).map(|(_, e, _)| *e)
}

/// A field error in Judge0's 422 shape: `{"<field>": ["<message>"]}`.
pub fn field_error(field: &str, message: impl Into<String>) -> Value {
    json!({ field: [message.into()] })
}

/// Decode Ruby's lenient base64 (`Base64.decode64`: line breaks and junk skipped).
pub fn decode64(text: &str) -> Result<String, String> {
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/'))
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(clean.trim_end_matches('='))
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 once decoded".into())
}

/// Ruby's `Base64.encode64`: a line break every 60 characters and one at the end.
pub fn encode64(data: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out
}

fn text(body: &Map<String, Value>, key: &str, b64: bool) -> Result<Option<String>, Value> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if b64 => decode64(s).map(Some).map_err(|e| field_error(key, e)),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_error(key, "must be a string")),
    }
}

/// A number (JSON number or numeric string, as Rails casts them).
fn number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, Value> {
    let v = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match v {
        Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
        _ => Err(field_error(key, "must be a number greater than 0")),
    }
}

fn flag(body: &Map<String, Value>, key: &str) -> Result<bool, Value> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "1" => Ok(true),
        Some(Value::String(s)) if s == "false" || s == "0" || s.is_empty() => Ok(false),
        Some(_) => Err(field_error(key, "must be a boolean")),
    }
}

/// Arguments from Judge0's one string: split on whitespace into argv, never given to a shell.
/// Judge0 strips `` $&;<>|` `` from it; here they are plain characters of an argument.
fn argv(body: &Map<String, Value>, key: &str) -> Result<Vec<String>, Value> {
    let s = text(body, key, false)?.unwrap_or_default();
    if s.chars().count() > 512 {
        return Err(field_error(key, "is too long (maximum is 512 characters)"));
    }
    Ok(s.split_whitespace().map(str::to_string).collect())
}

/// A Judge0 submission (its JSON body) as Wolf's; `Err` is Judge0's 422 body.
pub fn submission(body: &Value, b64: bool) -> Result<Submission, Value> {
    let Some(body) = body.as_object() else {
        return Err(field_error("submission", "must be a JSON object"));
    };
    let code = text(body, "source_code", b64)?.unwrap_or_default();
    if wolf_core::names::is_blank(&code) {
        return Err(field_error("source_code", "can't be blank"));
    }
    let id = match body.get("language_id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => return Err(field_error("language_id", "can't be blank")),
    };
    let engine = id
        .and_then(|i| u32::try_from(i).ok())
        .and_then(engine_of)
        .ok_or_else(|| {
            field_error(
                "language_id",
                format!("language with id {} doesn't exist", id.unwrap_or(0)),
            )
        })?;
    for (key, why) in [
        ("enable_network", "is not allowed: Wolf's sandbox has no network"),
        (
            "enable_per_process_and_thread_time_limit",
            "is not supported: Wolf's limits are per step",
        ),
        (
            "enable_per_process_and_thread_memory_limit",
            "is not supported: Wolf's limits are per step",
        ),
    ] {
        if flag(body, key)? {
            return Err(field_error(key, why));
        }
    }
    let callback_url = match body.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(field_error("callback_url", "must be a URL")),
    };
    let files = match body.get("additional_files") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(Value::String(s)) => unzip(s).map_err(|e| field_error("additional_files", e))?,
        Some(_) => return Err(field_error("additional_files", "must be a base64 encoded zip")),
    };
    if number(body, "number_of_runs")?.is_some_and(|n| n != 1.0) {
        return Err(field_error("number_of_runs", "must be 1 (Wolf runs a submission once)"));
    }
    let ms = |key| number(body, key).map(|x| x.map(|s| (s * 1000.0).round() as u64));
    // KB to MiB, rounded up: a limit is never made smaller than asked.
    let mib = |key| number(body, key).map(|x| x.map(|kb| (kb / 1024.0).ceil() as u64));
    let limits = LimitsInput {
        cpu_time_ms: ms("cpu_time_limit")?,
        wall_time_ms: ms("wall_time_limit")?,
        memory_mb: mib("memory_limit")?,
        pids: number(body, "max_processes_and_or_threads")?.map(|n| n.ceil() as u64),
        output_bytes: None,
        stack_mb: mib("stack_limit")?,
        file_size_mb: mib("max_file_size")?,
    };
    number(body, "cpu_extra_time")?; // Wolf's CPU limit is exact: no grace period to add.
    let compiler_options = argv(body, "compiler_options")?;
    let args = argv(body, "command_line_arguments")?;
    let mut tags = vec![format!("{LANGUAGE_TAG}{}", id.unwrap_or(0))];
    // The callback is PUT in Judge0's shape, its texts encoded as the submission's were.
    if callback_url.is_some() && b64 {
        tags.push(BASE64_TAG.to_string());
    }
    Ok(Submission {
        code,
        execution_engine: engine.to_string(),
        stdin: text(body, "stdin", b64)?,
        args,
        files,
        limits: (limits != LimitsInput::default()).then_some(limits),
        expected_output: text(body, "expected_output", b64)?,
        tags: Some(tags),
        tests: Vec::new(),
        stop_on_first_failure: false,
        checker: None,
        interactor: None,
        merge_stderr: flag(body, "redirect_stderr_to_stdout")?,
        compiler_options,
        output_files: Vec::new(),
        callback_url,
    })
}

/// Entries of an `additional_files` zip, at most.
const ZIP_ENTRIES: usize = 256;
/// Bytes of all its files together once unpacked, at most (whatever the zip claims).
const ZIP_BYTES: u64 = 16 << 20;

/// The files of `additional_files` (base64 of a zip), for the work dir beside the program.
/// Nothing of the archive is trusted: each name must be a normal relative path (no absolute
/// path, no `..`, no component the file rules refuse), links and special files are refused,
/// directories are implied by their files, and the unpacked size is counted as it is read,
/// so a zip bomb stops at the cap instead of at the size it declares.
fn unzip(b64: &str) -> Result<Vec<wolf_core::FileInput>, String> {
    use std::io::Read;
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        b64.replace(['\r', '\n'], ""),
    )
    .map_err(|e| format!("is not valid base64: {e}"))?;
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("is not a zip archive: {e}"))?;
    if zip.len() > ZIP_ENTRIES {
        return Err(format!("has {} entries; at most {ZIP_ENTRIES} are allowed", zip.len()));
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        let kind = entry.unix_mode().map(|m| m & 0o170000);
        if entry.is_symlink() || kind.is_some_and(|k| k != 0 && k != 0o100000) {
            return Err(format!(
                "{name:?} is not a regular file (links and special files are refused)"
            ));
        }
        if !wolf_core::names::valid_file_path(&name) {
            return Err(format!("{name:?} is not a relative path of plain names"));
        }
        let mut data = Vec::new();
        let room = ZIP_BYTES - total;
        entry
            .by_ref()
            .take(room + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("{name:?}: {e}"))?;
        total += data.len() as u64;
        if total > ZIP_BYTES {
            return Err(format!("unpacks to more than {ZIP_BYTES} bytes"));
        }
        files.push(wolf_core::FileInput {
            name,
            content: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data),
            encoding: Some(wolf_core::Encoding::Base64),
        });
    }
    Ok(files)
}

/// The Judge0 status of a record.
pub fn status(rec: &JobRecord) -> (u32, &'static str) {
    let id = match (rec.status, rec.result.as_ref()) {
        (Status::Pending, _) => 1,
        (Status::Dispatched | Status::Running, _) => 2,
        (Status::Completed, Some(r)) => match r.verdict {
            Verdict::Accepted => 3,
            Verdict::WrongAnswer | Verdict::PresentationError => 4,
            Verdict::TimeLimitExceeded => 5,
            Verdict::CompileError => 6,
            Verdict::OutputLimitExceeded => 8,
            // Judge0 has no memory status: an OOM kill is a SIGKILL, "Other".
            Verdict::MemoryLimitExceeded => 12,
            Verdict::RuntimeError => match r.signal {
                Some(11) => 7,
                Some(25) => 8,
                Some(8) => 9,
                Some(6) => 10,
                Some(_) => 12,
                None => 11,
            },
            Verdict::InternalError => 13,
        },
        _ => 13,
    };
    STATUSES[id as usize - 1]
}

/// Judge0's timestamps: `2024-04-18T10:00:00.123Z` (the SDK's strptime needs the fraction and Z).
fn stamp(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(|t| json!(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
        .unwrap_or(Value::Null)
}

/// What an answer needs beyond the record, read from the stores.
#[derive(Debug, Default)]
pub struct Extra {
    /// The program's stdout.
    pub stdout: Option<Vec<u8>>,
    /// The submission as Wolf stored it.
    pub submission: Option<Submission>,
}

/// The answer for `rec` with `fields` (`Err` when a text field is not UTF-8 and base64 is off).
pub fn answer(rec: &JobRecord, extra: &Extra, fields: &[&str], b64: bool) -> Result<Value, String> {
    let r = rec.result.as_ref();
    let sub = extra.submission.as_ref();
    let (status_id, description) = status(rec);
    let language_id: Option<u32> = rec
        .tags
        .iter()
        .flatten()
        .find_map(|t| t.strip_prefix(LANGUAGE_TAG)?.parse().ok());
    let seconds = |ms: Option<u64>| {
        ms.map(|m| json!(format!("{:.3}", m as f64 / 1000.0)))
            .unwrap_or(Value::Null)
    };
    let bytes = |d: Option<&[u8]>| -> Result<Value, String> {
        match d {
            None => Ok(Value::Null),
            Some(d) if b64 => Ok(json!(encode64(d))),
            Some(d) => std::str::from_utf8(d).map(|s| json!(s)).map_err(|_| {
                "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter"
                    .to_string()
            }),
        }
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.as_bytes().to_vec());
    let limits = sub.and_then(|s| s.limits).unwrap_or_default();
    let message = r
        .and_then(|r| r.error.clone())
        .or_else(|| (rec.status == Status::Failed).then(|| "the job could not be run".to_string()));
    let mut out = Map::new();
    for &f in fields {
        let v = match f {
            "token" => json!(rec.id),
            "time" => seconds(r.map(|r| r.cpu_time_ms)),
            "wall_time" => seconds(r.map(|r| r.wall_time_ms)),
            "memory" => r.map(|r| json!(r.memory_kb)).unwrap_or(Value::Null),
            "stdout" => bytes(extra.stdout.as_deref())?,
            "stderr" => bytes(r.and_then(|r| nonempty(&r.stderr)).as_deref())?,
            "compile_output" => bytes(r.and_then(|r| nonempty(&r.compile_output)).as_deref())?,
            "message" => bytes(message.as_deref().map(str::as_bytes))?,
            "status" => json!({"id": status_id, "description": description}),
            "status_id" => json!(status_id),
            "exit_code" => r.map(|r| json!(r.exit_code.unwrap_or(0))).unwrap_or(Value::Null),
            "exit_signal" => r.and_then(|r| r.signal).map(|s| json!(s)).unwrap_or(Value::Null),
            "created_at" => stamp(Some(rec.creation_time)),
            "finished_at" => stamp(rec.end_time),
            "language_id" => language_id.map(|i| json!(i)).unwrap_or(Value::Null),
            "language" => language_id
                .and_then(|i| LANGUAGES.iter().find(|(x, _, _)| *x == i))
                .map(|(i, _, n)| json!({"id": i, "name": n}))
                .unwrap_or(Value::Null),
            "source_code" => bytes(sub.map(|s| s.code.as_bytes()))?,
            "stdin" => bytes(sub.and_then(|s| s.stdin.as_deref()).map(str::as_bytes))?,
            "expected_output" => bytes(sub.and_then(|s| s.expected_output.as_deref()).map(str::as_bytes))?,
            "cpu_time_limit" => seconds(limits.cpu_time_ms),
            "wall_time_limit" => seconds(limits.wall_time_ms),
            "memory_limit" => limits.memory_mb.map(|m| json!(m * 1024)).unwrap_or(Value::Null),
            "stack_limit" => limits.stack_mb.map(|m| json!(m * 1024)).unwrap_or(Value::Null),
            "max_file_size" => limits.file_size_mb.map(|m| json!(m * 1024)).unwrap_or(Value::Null),
            "max_processes_and_or_threads" => limits.pids.map(|p| json!(p)).unwrap_or(Value::Null),
            "cpu_extra_time" => json!("0.0"),
            "number_of_runs" => json!(1),
            "compiler_options" => sub
                .filter(|s| !s.compiler_options.is_empty())
                .map(|s| json!(s.compiler_options.join(" ")))
                .unwrap_or(Value::Null),
            "command_line_arguments" => sub
                .filter(|s| !s.args.is_empty())
                .map(|s| json!(s.args.join(" ")))
                .unwrap_or(Value::Null),
            "redirect_stderr_to_stdout" => json!(sub.is_some_and(|s| s.merge_stderr)),
            "callback_url" => sub
                .and_then(|s| s.callback_url.as_deref())
                .map(|u| json!(u))
                .unwrap_or(Value::Null),
            "enable_per_process_and_thread_time_limit"
            | "enable_per_process_and_thread_memory_limit"
            | "enable_network" => json!(false),
            // additional_files: unpacked, not echoed.
            _ => Value::Null,
        };
        out.insert(f.to_string(), v);
    }
    Ok(Value::Object(out))
}

/// The fields a `fields` parameter names (`*` for all); `Err` is Judge0's 400 message.
pub fn fields(param: Option<&str>) -> Result<Vec<&'static str>, String> {
    let Some(p) = param.filter(|p| !p.trim().is_empty()) else {
        return Ok(DEFAULT_FIELDS.to_vec());
    };
    if p.trim() == "*" {
        return Ok(ALL_FIELDS.to_vec());
    }
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for f in p.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match ALL_FIELDS.iter().find(|a| **a == f) {
            Some(a) => out.push(*a),
            None => bad.push(f.to_string()),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(format!("invalid fields: [{}]", bad.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_base64_round_trips_and_wraps_at_60() {
        let long = vec![b'x'; 100];
        let e = encode64(&long);
        assert!(e.lines().all(|l| l.len() <= 60) && e.ends_with('\n'));
        assert_eq!(decode64(&e).unwrap().as_bytes(), &long[..]);
        assert_eq!(decode64("aGk=").unwrap(), "hi");
        assert_eq!(decode64("aGk").unwrap(), "hi", "padding is optional for Ruby");
        assert!(decode64("/w==").is_err(), "not UTF-8");
    }

    #[test]
    fn a_submission_maps_units_and_refuses_what_wolf_does_not_do() {
        let s = submission(
            &json!({"source_code": "print(1)", "language_id": 71, "cpu_time_limit": "1.5",
                "memory_limit": 128000, "stack_limit": 64000, "command_line_arguments": "a  b;c",
                "max_file_size": 1024}),
            false,
        )
        .unwrap();
        assert_eq!(s.execution_engine, "python");
        let l = s.limits.unwrap();
        assert_eq!(
            (l.cpu_time_ms, l.memory_mb, l.stack_mb, l.file_size_mb),
            (Some(1500), Some(125), Some(63), Some(1))
        );
        assert_eq!(s.args, ["a", "b;c"]);
        let b = submission(&json!({"source_code": "cHJpbnQoMSk=\n", "language_id": "54"}), true).unwrap();
        assert_eq!((b.code.as_str(), b.execution_engine.as_str()), ("print(1)", "c++"));
        for (bad, field) in [
            (json!({"language_id": 71}), "source_code"),
            (json!({"source_code": "x", "language_id": 9}), "language_id"),
            (json!({"source_code": "x"}), "language_id"),
            (
                json!({"source_code": "x", "language_id": 71, "enable_network": true}),
                "enable_network",
            ),
            (
                json!({"source_code": "x", "language_id": 71, "cpu_time_limit": -1}),
                "cpu_time_limit",
            ),
            (
                json!({"source_code": "x", "language_id": 71, "number_of_runs": 3}),
                "number_of_runs",
            ),
            (
                json!({"source_code": "x", "language_id": 71, "callback_url": 7}),
                "callback_url",
            ),
        ] {
            let e = submission(&bad, false).unwrap_err();
            assert!(e.get(field).is_some(), "{bad} → {e}");
        }
    }

    /// A zip of `entries` (name, contents, unix mode), base64.
    fn zipped(entries: &[(&str, &[u8], u32)], method: zip::CompressionMethod) -> String {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(method)
                .unix_permissions(*mode);
            if *mode & 0o170000 == 0o120000 {
                w.add_symlink(*name, std::str::from_utf8(data).unwrap(), o).unwrap();
            } else {
                w.start_file(*name, o).unwrap();
                w.write_all(data).unwrap();
            }
        }
        let bytes = w.finish().unwrap().into_inner();
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    }

    #[test]
    fn additional_files_unpack_into_the_work_dir_and_nothing_escapes() {
        let stored = zip::CompressionMethod::Stored;
        let z = zipped(&[("data.txt", b"hi", 0o644), ("lib/util.py", b"X = 1", 0o644)], stored);
        let sub = submission(
            &json!({"source_code": "x", "language_id": 71, "additional_files": z}),
            false,
        )
        .unwrap();
        let got: Vec<(String, Vec<u8>)> = sub.files.iter().map(|f| (f.name.clone(), f.bytes().unwrap())).collect();
        assert_eq!(
            got,
            [
                ("data.txt".to_string(), b"hi".to_vec()),
                ("lib/util.py".to_string(), b"X = 1".to_vec())
            ]
        );
        for (entries, says) in [
            (vec![("../evil", &b"x"[..], 0o644)], "relative path"),
            (vec![("/etc/cron.d/x", &b"x"[..], 0o644)], "relative path"),
            (vec![("a/./b", &b"x"[..], 0o644)], "relative path"),
            (vec![("link", &b"/etc/passwd"[..], 0o120777)], "not a regular file"),
        ] {
            let z = zipped(&entries, stored);
            let e = submission(
                &json!({"source_code": "x", "language_id": 71, "additional_files": z}),
                false,
            )
            .unwrap_err();
            let msg = e["additional_files"][0].as_str().unwrap_or("");
            assert!(msg.contains(says), "{entries:?}: {e}");
        }
        // 17 MiB of zeros deflate to a few KiB: stopped at the cap while reading.
        let zeros = vec![0u8; 17 << 20];
        let bomb = zipped(&[("zeros", &zeros, 0o644)], zip::CompressionMethod::Deflated);
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let e = submission(
            &json!({"source_code": "x", "language_id": 71, "additional_files": bomb}),
            false,
        )
        .unwrap_err();
        assert!(e["additional_files"][0].as_str().unwrap().contains("more than"), "{e}");
        for junk in ["not base64!", "aGVsbG8="] {
            let e = submission(
                &json!({"source_code": "x", "language_id": 71, "additional_files": junk}),
                false,
            )
            .unwrap_err();
            assert!(e.get("additional_files").is_some(), "{junk}: {e}");
        }
    }

    #[test]
    fn fields_are_the_defaults_all_or_named_and_unknown_ones_are_refused() {
        assert_eq!(fields(None).unwrap(), DEFAULT_FIELDS);
        assert_eq!(fields(Some("*")).unwrap().len(), ALL_FIELDS.len());
        assert_eq!(fields(Some("token, stdout")).unwrap(), ["token", "stdout"]);
        assert_eq!(fields(Some("token,nope")).unwrap_err(), "invalid fields: [nope]");
    }
}
