//! The job mix: named jobs with their expected output (the server judges it: a job whose
//! output differs ends `WrongAnswer`, counted as an error here).

use serde_json::{Value, json};

/// One kind of job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Name in `--mix`.
    pub name: &'static str,
    /// The `POST /job` body.
    pub body: Value,
}

/// The jobs `--mix` can name.
pub fn catalog() -> Vec<Job> {
    let job = |name, engine: &str, code: &str, expected: &str| Job {
        name,
        body: json!({"code": code, "executionEngine": engine, "expectedOutput": expected}),
    };
    vec![
        // The seed's example: C++ hello world (bits/stdc++.h).
        job(
            "cpp",
            "c++",
            "#include <bits/stdc++.h>\nusing namespace std;\n\nint main() {\n    cout << \"Hello World\";\n    return 0;\n}",
            "Hello World",
        ),
        job("python", "python", "print(sum(range(1000)))", "499500\n"),
        job(
            "c",
            "c",
            "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 6 * 7); return 0; }",
            "42\n",
        ),
        job("bash", "bash", "echo $((6 * 7))", "42\n"),
        // Long enough for a chaos scenario to catch it running.
        job(
            "sleep",
            "python",
            "import time\ntime.sleep(0.4)\nprint('slept')",
            "slept\n",
        ),
    ]
}

/// Parse `name[=weight],...` (default weight 1) into a weighted list.
pub fn parse(spec: &str) -> anyhow::Result<Vec<(Job, u32)>> {
    let all = catalog();
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once('=') {
            Some((n, w)) => (
                n,
                w.parse::<u32>()
                    .map_err(|_| anyhow::anyhow!("bad weight in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let job = all.iter().find(|j| j.name == name).ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|j| j.name).collect();
            anyhow::anyhow!("unknown job {name:?} in --mix (known: {})", names.join(", "))
        })?;
        if weight > 0 {
            out.push((job.clone(), weight));
        }
    }
    anyhow::ensure!(!out.is_empty(), "--mix names no job");
    Ok(out)
}

/// The job of arrival `i`: weighted round robin, so the mix is exact over any window.
pub fn pick(mix: &[(Job, u32)], i: u64) -> &Job {
    let total: u64 = mix.iter().map(|(_, w)| *w as u64).sum();
    let mut k = i % total;
    for (job, w) in mix {
        if k < *w as u64 {
            return job;
        }
        k -= *w as u64;
    }
    &mix[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_errors() {
        let mix = parse("cpp=2, python").unwrap();
        let names: Vec<_> = (0..6).map(|i| pick(&mix, i).name).collect();
        assert_eq!(names, ["cpp", "cpp", "python", "cpp", "cpp", "python"]);
        assert!(parse("cobol").unwrap_err().to_string().contains("known: cpp"));
        assert!(parse("cpp=x").is_err());
        assert!(parse("cpp=0").is_err(), "nothing left to run");
    }
}
