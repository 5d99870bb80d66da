//! The two floors issue 16 measures against, on this machine, in this run (`scripts/bench.sh`
//! calls it; nothing here is a test):
//!
//! - `fma-peak THREADS`: the f32 fused multiply-add rate of THREADS threads on independent
//!   register-resident accumulators (the widest SIMD pulp dispatches to: AVX-512, AVX2, NEON),
//!   in GFLOP/s (2 per FMA lane). A forward pass's GFLOP/s over this is its fraction of peak.
//! - `sha256 FILE`: SHA-256 of FILE's bytes, already in memory, in-process (the `sha2` crate
//!   that `convert` uses, SHA-NI when the CPU has it): the floor of a conversion that records
//!   the input's hash. Prints the median seconds of 7 runs.
//!
//! `cargo bench --bench floors -- fma-peak 2`, `cargo bench --bench floors -- sha256 CKPT`.

use std::hint::black_box;
use std::time::Instant;

use pulp::{Simd, WithSimd};
use sha2::{Digest, Sha256};

/// Independent accumulators: enough to cover FMA latency × ports on any current core.
const CHAINS: usize = 16;
const ROUNDS: usize = 1 << 22;

struct Fma;

impl WithSimd for Fma {
    type Output = (f32, usize);
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f32, usize) {
        let a = simd.splat_f32s(black_box(0.999_999));
        let b = simd.splat_f32s(black_box(1e-7));
        let mut acc = [simd.splat_f32s(1.0); CHAINS];
        for _ in 0..ROUNDS {
            for x in acc.iter_mut() {
                *x = simd.mul_add_e_f32s(*x, a, b);
            }
        }
        let lanes = std::mem::size_of::<S::f32s>() / 4;
        let sum = acc
            .iter()
            .fold(simd.splat_f32s(0.0), |s, &x| simd.add_f32s(s, x));
        (simd.reduce_sum_f32s(sum), lanes)
    }
}

fn fma_peak(threads: usize) -> f64 {
    let arch = pulp::Arch::new();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let lanes = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || arch.dispatch(Fma)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().map(|(v, lanes)| {
                        black_box(v);
                        lanes
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        });
        let secs = start.elapsed().as_secs_f64();
        let Ok(lanes) = lanes else {
            eprintln!("a thread panicked");
            std::process::exit(1);
        };
        let flops: f64 = lanes
            .iter()
            .map(|&l| 2.0 * (l * CHAINS * ROUNDS) as f64)
            .sum();
        best = best.max(flops / secs / 1e9);
    }
    best
}

fn sha256_seconds(path: &str) -> std::io::Result<f64> {
    let bytes = std::fs::read(path)?;
    black_box(Sha256::digest(&bytes));
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            black_box(Sha256::digest(black_box(&bytes)));
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fma-peak", threads] => {
            let Ok(t) = threads.parse::<usize>() else {
                eprintln!("fma-peak THREADS: a number");
                std::process::exit(2);
            };
            println!("{:.1}", fma_peak(t.max(1)));
        }
        ["sha256", path] => match sha256_seconds(path) {
            Ok(s) => println!("{s:.4}"),
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("usage: floors fma-peak THREADS | floors sha256 FILE");
            std::process::exit(2);
        }
    }
}
