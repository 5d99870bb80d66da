//! Corruption sweeps over every reader fixture and every Flax checkpoint (`fixtures/flax/`): each
//! file truncated at every byte offset (a dense sample for files over 64 KiB) and thousands of
//! seeded single-byte mutations, each through `open_bytes` + reading every listed tensor. Each case must return an error or a consistent
//! result — never panic, never allocate hugely (a counting allocator watches every request).
//! Panics are caught per case and reported with the file and offset.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use vit_convert::{open_bytes, ErrorKind, FileBytes};

/// Largest single allocation a corrupted (≤ 200 KB) fixture may cause: budgets allow an expanded
/// tensor of 64 MiB and a Vec may double once past it.
const HUGE: usize = 256 << 20;
/// Requests above this are refused outright (the process would abort, naming nothing).
const REFUSE: usize = 4 << 30;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, recording the largest request of each thread.
struct Watch;

// SAFETY: forwards to `System` unchanged; only records sizes in a const-initialised
// thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if layout.size() > REFUSE {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if layout.size() > REFUSE {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        if new_size > REFUSE {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

#[global_allocator]
static ALLOC: Watch = Watch;

/// What one case did: read everything, or failed with this error.
enum Outcome {
    AllRead,
    Failed(vit_convert::Error),
}

/// Opens `bytes` and reads every tensor; `Err` when a read broke the reader contract.
fn open_and_read(bytes: Vec<u8>) -> Result<Outcome, String> {
    let src = match open_bytes(FileBytes::from_vec(bytes)) {
        Ok(s) => s,
        Err(e) => return Ok(Outcome::Failed(e)),
    };
    let mut first = None;
    for info in src.tensors() {
        match src.read(&info.name) {
            Ok(t) => {
                if t.dtype != info.dtype || t.shape != info.shape || t.data.len() != info.byte_len()
                {
                    return Err(format!(
                        "tensor {} read as {:?} {:?} ({} bytes), listed {:?} {:?}",
                        info.name,
                        t.dtype,
                        t.shape,
                        t.data.len(),
                        info.dtype,
                        info.shape
                    ));
                }
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Ok(first.map_or(Outcome::AllRead, Outcome::Failed))
}

/// What went wrong with one case, if anything; and the error the case ended with.
fn run_case(bytes: Vec<u8>, must_fail: bool) -> (Option<String>, Option<vit_convert::Error>) {
    LARGEST.with(|l| l.set(0));
    IN_CASE.with(|c| c.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| open_and_read(bytes)));
    IN_CASE.with(|c| c.set(false));
    let largest = LARGEST.with(Cell::get);
    match r {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (Some(format!("panicked: {msg}")), None)
        }
        Ok(Err(contract)) => (Some(contract), None),
        Ok(Ok(Outcome::AllRead)) if must_fail => {
            (Some("a truncated file read without error".into()), None)
        }
        Ok(_) if largest > HUGE => (Some(format!("allocated {largest} bytes at once")), None),
        Ok(Ok(Outcome::AllRead)) => (None, None),
        Ok(Ok(Outcome::Failed(e))) => (None, Some(e)),
    }
}

/// Every reader fixture, and every Flax checkpoint: the `.msgpack` files of `fixtures/flax/`,
/// the `flax_model.msgpack` of its model folders and the Flax-layout safetensors.
fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("readers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "json"))
        .collect();
    for entry in std::fs::read_dir(root.join("flax")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "msgpack") {
            v.push(path);
        } else if path.is_dir() {
            v.extend(
                ["flax_model.msgpack", "model.safetensors"]
                    .iter()
                    .map(|f| path.join(f))
                    .filter(|p| p.is_file()),
            );
        }
    }
    v.sort();
    v
}

/// Every offset for files up to this size; a dense sample above it.
const FULL_SWEEP: usize = 64 << 10;
/// For larger files: every offset of the first and last this many bytes (where the structure
/// lives: pickles, headers, central directories) …
const EDGE: usize = 4 << 10;
/// … and this many evenly spaced offsets in between.
const MIDDLE_SAMPLES: usize = 1024;
/// Seeded single-byte mutations per file.
const MUTATIONS: usize = 500;

fn truncation_offsets(len: usize) -> Vec<usize> {
    if len <= FULL_SWEEP {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..EDGE).chain(len - EDGE..len).collect();
    let step = (len - 2 * EDGE) / MIDDLE_SAMPLES;
    v.extend((0..MIDDLE_SAMPLES).map(|i| EDGE + i * step));
    v.sort_unstable();
    v.dedup();
    v
}

/// xorshift64*: a fixed, dependency-free PRNG.
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Rng {
        // FNV-1a of the file name.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Byte values that matter to the parsers: opcodes, length bytes, signs, signatures.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x07, 0x08, 0x0a, 0x20, 0x28, 0x2e, 0x30, 0x39, 0x3c, 0x3e, 0x4b, 0x50, 0x51,
    0x52, 0x58, 0x5d, 0x61, 0x62, 0x63, 0x65, 0x68, 0x71, 0x73, 0x74, 0x75, 0x7b, 0x7d, 0x7f, 0x80,
    0x81, 0x85, 0x86, 0x87, 0x8a, 0x8c, 0x93, 0x94, 0x95, 0xfe, 0xff,
    // msgpack markers: fixarray/fixstr, nil, reserved, bin/ext/str/array/map of every width.
    0x90, 0xa0, 0xc0, 0xc1, 0xc3, 0xc4, 0xc6, 0xc7, 0xc9, 0xd4, 0xd8, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
];

fn mutations(bytes: &[u8], name: &str) -> Vec<(usize, u8)> {
    let mut rng = Rng::new(name);
    let len = bytes.len();
    (0..MUTATIONS)
        .map(|i| {
            // Half anywhere, half in the structural edges.
            let at = if i % 2 == 0 || len <= 2 * EDGE {
                rng.below(len)
            } else if rng.below(2) == 0 {
                rng.below(EDGE)
            } else {
                len - 1 - rng.below(EDGE)
            };
            let value = match rng.below(3) {
                0 => INTERESTING[rng.below(INTERESTING.len())],
                1 => bytes[at] ^ (1 << rng.below(8)),
                _ => rng.below(256) as u8,
            };
            (at, value)
        })
        .filter(|&(at, v)| bytes[at] != v)
        .collect()
}

/// Runs `work` over the fixtures on two threads; collects failures.
fn sweep(work: fn(&Path, &[u8]) -> (usize, Vec<String>)) -> (usize, Vec<String>) {
    let files = fixtures();
    assert!(files.len() >= 40, "{} fixtures", files.len());
    let (a, b): (Vec<&PathBuf>, Vec<&PathBuf>) = files
        .iter()
        .partition(|p| files.iter().position(|q| q == *p).unwrap_or(0) % 2 == 0);
    let run = |part: Vec<&PathBuf>| {
        let mut cases = 0;
        let mut failures = Vec::new();
        for path in part {
            let bytes = std::fs::read(path).unwrap();
            let (n, f) = work(path, &bytes);
            cases += n;
            failures.extend(f);
        }
        (cases, failures)
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| run(a));
        let (n2, f2) = run(b);
        let (n1, mut f1) = h.join().unwrap();
        f1.extend(f2);
        (n1 + n2, f1)
    })
}

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
}

/// Panics inside a case are caught and reported with the case; the default hook would print
/// each one. Panics elsewhere (the tests' own assertions) still print.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CASE.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// Truncates `bytes` at `offsets`, except that a cut inside the raw data of a legacy storage
/// record or of a msgpack payload (which the readers report by the data's own start and length)
/// skips ahead to the data's last bytes: every cut inside it takes the same path, after
/// re-parsing everything before it, which is what makes legacy and Flax files slow to sweep.
fn truncations(name: &str, bytes: &[u8], offsets: &[usize]) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut skip_to = 0;
    for &cut in offsets {
        if cut < skip_to {
            continue;
        }
        cases += 1;
        let (failure, error) = run_case(bytes[..cut].to_vec(), true);
        if let Some(why) = failure {
            failures.push(format!("{name} truncated at byte {cut}: {why}"));
        }
        // A zip (torch `.pth`, `.npz`) cut short says so, like every other container: its end
        // record is gone. (Cuts inside the 4-byte signature are no zip at all.)
        if bytes.starts_with(b"PK") && cut >= 4 {
            if let Some(e) = error
                .as_ref()
                .filter(|e| !matches!(e.kind(), ErrorKind::Truncated { .. }))
            {
                failures.push(format!(
                    "{name} truncated at byte {cut}: not Truncated: {e}"
                ));
            }
        }
        if let Some(ErrorKind::Truncated {
            what:
                "legacy storage data"
                | "msgpack extension payload"
                | "msgpack byte string"
                | "msgpack string",
            offset,
            needed,
            ..
        }) = error.as_ref().map(vit_convert::Error::kind)
        {
            let end = usize::try_from(offset + needed).unwrap_or(usize::MAX);
            skip_to = end.saturating_sub(2).max(cut + 1);
        }
    }
    (cases, failures)
}

#[test]
fn every_truncation_of_every_reader_fixture_errors_without_panic() {
    quiet_panics();
    let (cases, failures) = sweep(|path, bytes| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Flax files keep their structure between the arrays, all through the file: every
        // offset (the payloads themselves are skipped, see `truncations`).
        let offsets = if name.ends_with(".msgpack") {
            (0..bytes.len()).collect()
        } else {
            truncation_offsets(bytes.len())
        };
        truncations(&name, bytes, &offsets)
    });
    println!("{cases} truncations");
    assert!(cases > 200_000, "{cases} truncations");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn seeded_single_byte_mutations_error_or_read_consistently() {
    quiet_panics();
    let (cases, failures) = sweep(|path, bytes| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let muts = mutations(bytes, &name);
        let failures = muts
            .iter()
            .filter_map(|&(at, value)| {
                let mut b = bytes.to_vec();
                let old = b[at];
                b[at] = value;
                run_case(b, false)
                    .0
                    .map(|why| format!("{name} with byte {at} {old:#04x} -> {value:#04x}: {why}"))
            })
            .collect();
        (muts.len(), failures)
    });
    println!("{cases} mutations");
    assert!(cases > 20_000, "{cases} mutations");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
