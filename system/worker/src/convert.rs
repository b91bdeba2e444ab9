//! The job frame (header + blobs) in and out of the gRPC messages. The messages carry the
//! sandbox's own `JobSpec` and `JobReport` as their JSON headers: nothing is copied field by
//! field, and the header is bounded and parsed exactly as on the socketpair transport.

use std::io;

use wolf_proto::v1;
use wolf_sandbox::protocol::{self, JobReport, JobSpec, MAX_BLOBS};

/// A job frame into a request.
pub fn request(job_id: &str, spec: &JobSpec, blobs: Vec<Vec<u8>>) -> io::Result<v1::RunRequest> {
    Ok(v1::RunRequest {
        job_id: job_id.to_string(),
        spec: protocol::encode_header(spec)?,
        blobs,
    })
}

/// A request into a job frame.
pub fn job(req: v1::RunRequest) -> io::Result<(JobSpec, Vec<Vec<u8>>)> {
    Ok((protocol::decode_header(&req.spec)?, bounded(req.blobs)?))
}

/// A report frame into a reply.
pub fn reply(report: &JobReport, blobs: Vec<Vec<u8>>) -> io::Result<v1::RunReply> {
    Ok(v1::RunReply {
        report: protocol::encode_header(report)?,
        blobs,
    })
}

/// A reply into a report frame.
pub fn report(reply: v1::RunReply) -> io::Result<(JobReport, Vec<Vec<u8>>)> {
    Ok((protocol::decode_header(&reply.report)?, bounded(reply.blobs)?))
}

fn bounded(blobs: Vec<Vec<u8>>) -> io::Result<Vec<Vec<u8>>> {
    if blobs.len() > MAX_BLOBS {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many blobs"));
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wolf_sandbox::protocol::{FileSpec, StepFacts, StepSpec};

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
                live: Some(wolf_sandbox::protocol::Live::Client),
                merge_stderr: false,
                cpu_time_ms: 1,
                wall_time_ms: 2,
                output_bytes: 3,
                file_bytes: 4,
                open_files: 5,
                stack_bytes: 6,
                cpu_millis: 7,
            }],
            collect: Some(wolf_sandbox::protocol::Collect {
                max_files: 3,
                max_bytes: 10,
                patterns: vec!["out/*.csv".into()],
                max_file_bytes: 5,
            }),
        };
        let req = request("j", &spec, vec![b"code".to_vec(), b"in".to_vec()]).unwrap();
        let (back, blobs) = job(req).unwrap();
        assert_eq!(blobs, vec![b"code".to_vec(), b"in".to_vec()]);
        assert_eq!(back.steps[0].argv, spec.steps[0].argv);
        assert_eq!(
            back.collect, spec.collect,
            "a new field travels without a copy per transport"
        );
        assert_eq!(
            (
                back.steps[0].slot,
                back.steps[0].stdin_blob,
                back.steps[0].cpu_millis,
                back.steps[0].live
            ),
            (1, Some(1), 7, Some(wolf_sandbox::protocol::Live::Client))
        );
        let rep = JobReport {
            steps: vec![StepFacts {
                exit_code: Some(3),
                cpu_time_us: 2500,
                cpu_time_ms: 2,
                stdout_blob: 0,
                stderr_blob: 1,
                ..Default::default()
            }],
            error: None,
            ..Default::default()
        };
        let (r, out) = report(reply(&rep, vec![b"out".to_vec(), b"err".to_vec()]).unwrap()).unwrap();
        assert_eq!(r.steps[0], rep.steps[0]);
        assert_eq!(out[r.steps[0].stdout_blob], b"out");
        assert_eq!(out[r.steps[0].stderr_blob], b"err");
    }

    #[test]
    fn a_hostile_header_or_blob_count_is_refused_not_trusted() {
        let bad = v1::RunRequest {
            job_id: "j".into(),
            spec: b"{\"files\": 7}".to_vec(),
            blobs: Vec::new(),
        };
        assert!(job(bad).is_err(), "a header that is not a JobSpec");
        let huge = v1::RunRequest {
            job_id: "j".into(),
            spec: vec![b' '; (1 << 20) + 1],
            blobs: Vec::new(),
        };
        assert!(job(huge).is_err(), "a header past the bound");
        let many = v1::RunReply {
            report: b"{\"steps\": [], \"error\": null}".to_vec(),
            blobs: vec![Vec::new(); MAX_BLOBS + 1],
        };
        assert!(report(many).is_err(), "more blobs than a frame may hold");
    }
}
