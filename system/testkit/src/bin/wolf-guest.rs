//! `wolf-guest [--timeout SECS] [--quiet] -- SCRIPT`: run a shell script as root in a fresh
//! boot of Debian's kernel under qemu (cgroup v2, AppArmor, the host's root read-only under a
//! tmpfs overlay); print its output and exit with its status (125: no status, the guest died or
//! timed out; 124 with a reason on stderr: no guest can be booted here).

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut timeout = Duration::from_secs(600);
    let mut echo = true;
    let mut script = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--timeout" => {
                let Some(s) = args.next().and_then(|s| s.parse().ok()) else {
                    eprintln!("wolf-guest: --timeout takes seconds");
                    return ExitCode::from(2);
                };
                timeout = Duration::from_secs(s);
            }
            "--quiet" => echo = false,
            "--" => {
                script = Some(args.collect::<Vec<_>>().join(" "));
                break;
            }
            other => {
                eprintln!(
                    "wolf-guest: unknown argument {other:?}; usage: wolf-guest [--timeout SECS] [--quiet] -- SCRIPT"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(script) = script.filter(|s| !s.trim().is_empty()) else {
        eprintln!("wolf-guest: nothing to run; usage: wolf-guest [--timeout SECS] [--quiet] -- SCRIPT");
        return ExitCode::from(2);
    };
    let work = std::env::current_dir().unwrap_or_default().join("target").join("guest");
    let guest = match wolf_testkit::guest::Guest::prepare(&work) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("wolf-guest: no guest: {e:#}");
            return ExitCode::from(124);
        }
    };
    eprintln!("wolf-guest: booting Linux {} (TCG)", guest.release);
    let run = match guest.run(
        &format!(
            "cd {}\n{script}\n",
            shell_quote(&std::env::current_dir().unwrap_or_default().display().to_string())
        ),
        timeout,
        echo,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wolf-guest: {e:#}");
            return ExitCode::from(125);
        }
    };
    if !echo {
        print!("{}", run.output);
    }
    eprintln!(
        "wolf-guest: status {:?} after {:.1} s",
        run.status,
        run.elapsed.as_secs_f64()
    );
    match run.status {
        Some(s) => ExitCode::from(s.clamp(0, 255) as u8),
        None => ExitCode::from(125),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
