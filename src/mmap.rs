//! Read-only file bytes: memory-mapped when possible, read into memory otherwise.
//!
//! This is the only module allowed `unsafe`. Mapping a file is unsafe because another process may
//! truncate or modify it while mapped; a truncation then raises SIGBUS and a modification changes
//! the bytes under us. We accept that contract for read-only inputs (as ripgrep and safetensors
//! do): the parsers never assume two reads of the same range agree beyond what they re-check,
//! hashes are computed on the bytes actually read, and [`FileBytes::read`] (what
//! `OpenOptions { mmap: false, .. }` and the CLI's `VIT_CONVERT_NO_MMAP=1` choose) reads the whole
//! file into memory instead (within the `read file bytes` budget).
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;

enum Inner {
    /// The map (shared with a [`FileBytes::prefetch`] thread while it runs), and the file it maps
    /// (kept open for kernel-side copies, see [`FileBytes::locate`]).
    Mapped(Arc<memmap2::Mmap>, File),
    Owned(Vec<u8>),
}

/// The bytes of an input file.
pub struct FileBytes {
    inner: Inner,
}

impl FileBytes {
    /// Maps `path` read-only (an empty file is read), within the default [`Limits`].
    ///
    /// Only regular files are opened, without blocking (a FIFO, socket, device or directory is
    /// refused, see `fsio::open_regular`); files over [`Limits::input_file_bytes`] are refused.
    ///
    /// # Errors
    /// [`ErrorKind::NotRegularFile`], [`ErrorKind::Io`] when the file cannot be opened or mapped,
    /// [`ErrorKind::BudgetExceeded`] (`input file bytes`); all carry `path`.
    ///
    /// [`Limits::input_file_bytes`]: crate::Limits::input_file_bytes
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_within(path, &Limits::DEFAULT)
    }

    /// [`FileBytes::open`] with the given limits.
    ///
    /// # Errors
    /// As [`FileBytes::open`].
    pub fn open_within(path: &Path, limits: &Limits) -> Result<Self> {
        let file = crate::fsio::open_regular(path)?;
        let len = file
            .metadata()
            .map_err(|e| Error::from(ErrorKind::io("stat", e)).with_path(path))?
            .len();
        let limit = limits.input_file_bytes;
        if u64::try_from(limit).is_ok_and(|l| len > l) {
            let limit = u64::try_from(limit).unwrap_or(u64::MAX);
            return Err(Error::from(ErrorKind::BudgetExceeded {
                budget: "input file bytes",
                limit,
                offset: limit,
            })
            .with_path(path));
        }
        if len == 0 {
            return Ok(FileBytes {
                inner: Inner::Owned(Vec::new()),
            });
        }
        // SAFETY: the map is read-only and private to this process. The file may still be changed
        // by another process while mapped (see the module docs); every parser bounds-checks each
        // access against the mapped length, which is fixed for the life of the map.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|e| Error::from(ErrorKind::io("mmap", e)).with_path(path))?;
        Ok(FileBytes {
            inner: Inner::Mapped(Arc::new(map), file),
        })
    }

    /// Reads the whole file into memory, within the default [`Limits`]: the same budget as a mapped file
    /// ([`Limits::input_file_bytes`]) and within [`Limits::read_file_bytes`], whichever is
    /// smaller: the size is checked before reading, and at most one byte past the limit is read
    /// (a file that grows, or whose size lies, is refused too).
    ///
    /// # Errors
    /// [`ErrorKind::NotRegularFile`], [`ErrorKind::Io`] when the file cannot be read,
    /// [`ErrorKind::BudgetExceeded`] (`input file bytes` or `read file bytes`); all carry `path`.
    ///
    /// [`Limits::input_file_bytes`]: crate::Limits::input_file_bytes
    /// [`Limits::read_file_bytes`]: crate::Limits::read_file_bytes
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_within(path, &Limits::DEFAULT)
    }

    /// [`FileBytes::read`] with the given limits.
    ///
    /// # Errors
    /// As [`FileBytes::read`].
    pub fn read_within(path: &Path, limits: &Limits) -> Result<Self> {
        let (limit, budget) = if limits.read_file_bytes < limits.input_file_bytes {
            (limits.read_file_bytes, "read file bytes")
        } else {
            (limits.input_file_bytes, "input file bytes")
        };
        let data = crate::fsio::read_regular(path, limit, budget)?;
        Ok(FileBytes {
            inner: Inner::Owned(data),
        })
    }

    /// Drops this process's resident pages of a mapped file: the bytes stay readable and are
    /// faulted back in from the page cache on the next access, but they no longer count towards
    /// the process's resident memory. Streaming writers call it after each tensor so that
    /// converting a model never holds the whole mapped input resident. A no-op for bytes read
    /// into memory and on platforms without `madvise`; failures are ignored (it is only a hint
    /// about memory, never about content).
    pub fn release(&self) {
        self.release_range(0, self.len());
    }

    /// A handle that can map every page of this mapped file into the process ahead of a reader
    /// (see [`Prefetch`]); `None` for bytes read into memory.
    pub(crate) fn prefetcher(&self) -> Option<Prefetch> {
        match &self.inner {
            Inner::Mapped(m, _) => Some(Prefetch(Arc::clone(m))),
            Inner::Owned(_) => None,
        }
    }

    /// The open file and byte offset that `part` was mapped from, when `part` lies wholly inside
    /// this mapping (for instance a tensor borrowed from it). Writers use it to copy those bytes
    /// file to file inside the kernel (`copy_file_range`, as `cp` does) instead of through the
    /// mapping. `None` for bytes read into memory and for slices from anywhere else.
    pub fn locate(&self, part: &[u8]) -> Option<(&File, u64)> {
        let Inner::Mapped(m, file) = &self.inner else {
            return None;
        };
        // Address arithmetic only (no pointer is dereferenced): `part` must start at or after the
        // map's first byte and end at or before its last.
        let base = m.as_ptr() as usize;
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(part.len())?;
        if end > m.len() {
            return None;
        }
        Some((file, u64::try_from(start).ok()?))
    }

    /// [`FileBytes::release`] for `len` bytes from `offset` (widened to whole pages; clamped to
    /// the file).
    fn release_range(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Inner::Mapped(m, _) = &self.inner {
            let offset = offset.min(m.len());
            let len = len.min(m.len() - offset);
            if len == 0 {
                return;
            }
            // SAFETY: `MADV_DONTNEED` is unsafe in general because it discards pages a process has
            // written to a private mapping. This mapping is read-only (`Mmap`, PROT_READ): no
            // page of it was ever written, so no copy-on-write page exists to be discarded, and
            // the kernel only drops page-table entries. The next access faults the same file
            // page back in from the page cache, so any slice still borrowed from the map reads
            // the same bytes as before (file modification by another process is the contract
            // the module docs already accept). The range is clamped to the mapping above.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    /// Wraps bytes already in memory.
    pub fn from_vec(data: Vec<u8>) -> Self {
        FileBytes {
            inner: Inner::Owned(data),
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped(m, _) => &m[..],
            Inner::Owned(v) => v,
        }
    }
}

/// Maps every page of a mapped file into this process on a thread of its own
/// (`MADV_POPULATE_READ`, Linux), for a reader about to touch the whole file: the forward pass
/// reads every weight. The pages are then found mapped instead of faulted in one 64 KiB step at
/// a time by the reader: populating ViT-B's 346 MB takes ~15 ms of another core (BENCHMARKS.md).
/// The thread holds the map, so the [`FileBytes`] may be dropped meanwhile; nothing is read
/// or changed (a hint about residency, like [`FileBytes::release`]).
pub(crate) struct Prefetch(Arc<memmap2::Mmap>);

impl Prefetch {
    /// Starts the thread and returns at once; `None` (nothing started) on other platforms and
    /// when no thread can be spawned.
    pub(crate) fn start(self) -> Option<std::thread::JoinHandle<()>> {
        #[cfg(target_os = "linux")]
        {
            let m = self.0;
            std::thread::Builder::new()
                .name("vit-prefetch".into())
                .spawn(move || {
                    // A failure (a kernel before 5.14) only loses the head start.
                    let _ = m.advise(memmap2::Advice::PopulateRead);
                })
                .ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = self;
            None
        }
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(data: &[u8]) -> (tempfile::TempDir, FileBytes) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, data).unwrap();
        let bytes = FileBytes::open(&path).unwrap();
        (dir, bytes)
    }

    /// The resident KiB of this process's mapping that starts at `start` (`/proc/self/smaps`):
    /// per mapping, so other tests running meanwhile do not disturb it.
    #[cfg(target_os = "linux")]
    fn resident_kib(start: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            let first = line.split('-').next().unwrap_or("");
            if usize::from_str_radix(first, 16).ok() == Some(start) && line.contains(' ') {
                let rss = lines.find(|l| l.starts_with("Rss:"))?;
                return rss.split_whitespace().nth(1)?.parse().ok();
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn prefetch_maps_every_page_in_without_changing_a_byte() {
        let data: Vec<u8> = (0..4usize << 20).map(|i| (i % 251) as u8).collect();
        let (_dir, bytes) = mapped(&data);
        let start = bytes.as_ptr() as usize;
        assert_eq!(resident_kib(start), Some(0), "nothing touched yet");
        let prefetch = bytes.prefetcher().expect("mapped");
        prefetch.start().expect("a thread").join().unwrap();
        assert_eq!(resident_kib(start), Some(4096), "every page mapped in");
        assert_eq!(&bytes[..], &data[..]);
    }

    #[test]
    fn prefetch_outlives_the_bytes_and_does_nothing_for_bytes_in_memory() {
        let (_dir, bytes) = mapped(&[7u8; 1 << 16]);
        let thread = bytes.prefetcher().and_then(Prefetch::start);
        drop(bytes);
        if let Some(t) = thread {
            t.join().unwrap();
        }
        assert!(FileBytes::from_vec(vec![1, 2, 3]).prefetcher().is_none());
    }

    #[test]
    fn reading_into_memory_is_bounded_by_both_file_budgets() {
        let data = vec![7u8; 1000];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, &data).unwrap();
        let budget = |r: Result<FileBytes>| match r.map_err(|e| (e.path().is_some(), e)) {
            Err((true, e)) => match e.kind() {
                ErrorKind::BudgetExceeded { budget, limit, .. } => (*budget, *limit),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        let mut limits = Limits::DEFAULT;
        limits.read_file_bytes = 999;
        assert_eq!(
            budget(FileBytes::read_within(&path, &limits)),
            ("read file bytes", 999)
        );
        limits.input_file_bytes = 500;
        assert_eq!(
            budget(FileBytes::read_within(&path, &limits)),
            ("input file bytes", 500)
        );
        limits = Limits::DEFAULT;
        limits.read_file_bytes = 1000;
        assert_eq!(
            &FileBytes::read_within(&path, &limits).unwrap()[..],
            &data[..]
        );
    }

    #[test]
    fn a_file_whose_size_lies_is_read_no_further_than_the_limit() {
        // procfs files report size 0 and hold more.
        let path = Path::new("/proc/self/status");
        if !path.exists() {
            return;
        }
        let mut limits = Limits::DEFAULT;
        limits.read_file_bytes = 16;
        let e = FileBytes::read_within(path, &limits).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::BudgetExceeded {
                    budget: "read file bytes",
                    limit: 16,
                    offset: 16
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn locate_gives_the_file_offset_of_a_slice_inside_the_map_only() {
        let data: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        let (_dir, bytes) = mapped(&data);
        let (_, at) = bytes.locate(&bytes[1234..5678]).unwrap();
        assert_eq!(at, 1234);
        assert_eq!(bytes.locate(&bytes[..]).map(|(_, at)| at), Some(0));
        assert!(bytes.locate(&data[10..20]).is_none());
        let owned = FileBytes::from_vec(data.clone());
        assert!(owned.locate(&owned[10..20]).is_none());
    }

    #[test]
    fn released_pages_read_back_the_same_bytes() {
        let data: Vec<u8> = (0..=255).cycle().take(3 * 4096 + 17).collect();
        let (_dir, bytes) = mapped(&data);
        let before: Vec<u8> = bytes.to_vec();
        bytes.release();
        bytes.release_range(4095, 2);
        bytes.release_range(usize::MAX, 10);
        assert_eq!(&bytes[..], &before[..]);
        assert_eq!(&bytes[..], &data[..]);
    }
}
