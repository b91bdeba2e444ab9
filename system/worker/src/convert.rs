//! Proto messages ↔ the sandbox's job frames (`JobSpec` + blobs, `JobReport` + blobs).

use wolf_proto::v1;
use wolf_sandbox::protocol::{FileSpec, JobReport, JobSpec, StepFacts, StepSpec};

/// A job frame into a request.
pub fn request(job_id: &str, spec: JobSpec, mut blobs: Vec<Vec<u8>>) -> v1::RunRequest {
    let mut take = |i: usize| blobs.get_mut(i).map(std::mem::take).unwrap_or_default();
    let files = spec
        .files
        .iter()
        .map(|f| v1::File {
            name: f.name.clone(),
            contents: take(f.blob),
            mode: f.mode,
        })
        .collect();
    let steps = spec
        .steps
        .iter()
        .map(|s| v1::Step {
            name: s.name.clone(),
            argv: s.argv.clone(),
            env: s.env.clone(),
            stdin: s.stdin_blob.map(&mut take),
            slot: s.slot as u32,
            cpu_time_ms: s.cpu_time_ms,
            wall_time_ms: s.wall_time_ms,
            output_bytes: s.output_bytes,
            file_bytes: s.file_bytes,
            open_files: s.open_files,
            stack_bytes: s.stack_bytes,
            cpu_millis: s.cpu_millis,
        })
        .collect();
    v1::RunRequest {
        job_id: job_id.to_string(),
        files,
        steps,
    }
}

/// A request into a job frame.
pub fn job(req: v1::RunRequest) -> (JobSpec, Vec<Vec<u8>>) {
    let mut blobs = Vec::new();
    let files = req
        .files
        .into_iter()
        .map(|f| {
            blobs.push(f.contents);
            FileSpec {
                name: f.name,
                mode: f.mode,
                blob: blobs.len() - 1,
            }
        })
        .collect();
    let steps = req
        .steps
        .into_iter()
        .map(|s| {
            let stdin_blob = s.stdin.map(|b| {
                blobs.push(b);
                blobs.len() - 1
            });
            StepSpec {
                name: s.name,
                argv: s.argv,
                env: s.env,
                slot: s.slot as usize,
                stdin_blob,
                cpu_time_ms: s.cpu_time_ms,
                wall_time_ms: s.wall_time_ms,
                output_bytes: s.output_bytes,
                file_bytes: s.file_bytes,
                open_files: s.open_files,
                stack_bytes: s.stack_bytes,
                cpu_millis: s.cpu_millis,
            }
        })
        .collect();
    (JobSpec { files, steps }, blobs)
}

/// A report frame into a reply.
pub fn reply(report: JobReport, mut blobs: Vec<Vec<u8>>) -> v1::RunReply {
    let mut take = |i: usize| blobs.get_mut(i).map(std::mem::take).unwrap_or_default();
    let steps = report
        .steps
        .into_iter()
        .map(|f| v1::StepFacts {
            exit_code: f.exit_code,
            signal: f.signal,
            cpu_time_us: f.cpu_time_us,
            wall_time_us: f.wall_time_us,
            memory_kb: f.memory_kb,
            oom_kills: f.oom_kills,
            cpu_limit_hit: f.cpu_limit_hit,
            wall_limit_hit: f.wall_limit_hit,
            output_limit_hit: f.output_limit_hit,
            truncated: f.truncated,
            start_error: f.start_error,
            stdout: take(f.stdout_blob),
            stderr: take(f.stderr_blob),
        })
        .collect();
    v1::RunReply {
        steps,
        error: report.error,
    }
}

/// A reply into a report frame.
pub fn report(reply: v1::RunReply) -> (JobReport, Vec<Vec<u8>>) {
    let mut blobs = Vec::new();
    let steps = reply
        .steps
        .into_iter()
        .map(|f| {
            blobs.push(f.stdout);
            blobs.push(f.stderr);
            StepFacts {
                exit_code: f.exit_code,
                signal: f.signal,
                cpu_time_ms: f.cpu_time_us / 1000,
                cpu_time_us: f.cpu_time_us,
                wall_time_ms: f.wall_time_us / 1000,
                wall_time_us: f.wall_time_us,
                memory_kb: f.memory_kb,
                oom_kills: f.oom_kills,
                cpu_limit_hit: f.cpu_limit_hit,
                wall_limit_hit: f.wall_limit_hit,
                output_limit_hit: f.output_limit_hit,
                truncated: f.truncated,
                start_error: f.start_error,
                stdout_blob: blobs.len() - 2,
                stderr_blob: blobs.len() - 1,
            }
        })
        .collect();
    (
        JobReport {
            steps,
            error: reply.error,
        },
        blobs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_the_round_trip_through_proto() {
        let spec = JobSpec {
            files: vec![FileSpec {
                name: "main.py".into(),
                mode: 0o644,
                blob: 0,
            }],
            steps: vec![StepSpec {
                name: "run".into(),
                argv: vec!["/usr/bin/python3".into()],
                env: vec!["PATH=/usr/bin".into()],
                slot: 1,
                stdin_blob: Some(1),
                cpu_time_ms: 1,
                wall_time_ms: 2,
                output_bytes: 3,
                file_bytes: 4,
                open_files: 5,
                stack_bytes: 6,
                cpu_millis: 7,
            }],
        };
        let (back, blobs) = job(request("j", spec.clone(), vec![b"code".to_vec(), b"in".to_vec()]));
        assert_eq!(blobs, vec![b"code".to_vec(), b"in".to_vec()]);
        assert_eq!(back.steps[0].argv, spec.steps[0].argv);
        assert_eq!(
            (back.steps[0].slot, back.steps[0].stdin_blob, back.steps[0].cpu_millis),
            (1, Some(1), 7)
        );
        let rep = JobReport {
            steps: vec![StepFacts {
                exit_code: Some(3),
                cpu_time_us: 2500,
                stdout_blob: 0,
                stderr_blob: 1,
                ..Default::default()
            }],
            error: None,
        };
        let (r, out) = report(reply(rep, vec![b"out".to_vec(), b"err".to_vec()]));
        assert_eq!(r.steps[0].exit_code, Some(3));
        assert_eq!(r.steps[0].cpu_time_ms, 2);
        assert_eq!(out[r.steps[0].stdout_blob], b"out");
        assert_eq!(out[r.steps[0].stderr_blob], b"err");
    }
}
