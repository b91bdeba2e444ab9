//! Criterion benchmark of sandbox overhead: bare spawn vs pre-warmed sandbox vs cold creation.
//! `cargo bench -p wolf-sandbox` (as root). The `wolf bench` command prints the full table
//! (with bubblewrap and python) from the same measurement code.

use criterion::{Criterion, criterion_group};
use wolf_sandbox::{SandboxConfig, Sandboxes, bench};

fn sandboxes() -> Sandboxes {
    Sandboxes::new(SandboxConfig {
        binds: ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]
            .iter()
            .map(|p| (p.into(), p.into()))
            .collect(),
        ..Default::default()
    })
    .expect("sandboxes (run as root)")
}

fn overhead(c: &mut Criterion) {
    let sb = sandboxes();
    let mut g = c.benchmark_group("spawn /bin/true");
    g.sample_size(50);
    g.bench_function("bare", |b| b.iter(|| bench::bare(&["/bin/true"])));
    g.bench_function("pre-warmed sandbox", |b| {
        b.iter_custom(|n| (0..n).map(|_| bench::sandboxed(&sb, &["/bin/true"]).1).sum())
    });
    g.bench_function("cold sandbox creation", |b| {
        b.iter_custom(|n| (0..n).map(|_| bench::sandboxed(&sb, &["/bin/true"]).0).sum())
    });
    if bench::bwrap(&["/bin/true"]).is_some() {
        g.bench_function("bubblewrap --unshare-all", |b| b.iter(|| bench::bwrap(&["/bin/true"])));
    }
    g.finish();
}

criterion_group!(benches, overhead);

fn main() {
    // This bench binary is also the sandbox's init executable (/proc/self/exe).
    wolf_sandbox::main_if_init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
