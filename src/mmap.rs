//! Read-only file bytes: memory-mapped when possible, read into memory otherwise.
//!
//! This is the only module allowed `unsafe`. Mapping a file is unsafe because another process may
//! truncate or modify it while mapped; a truncation then raises SIGBUS and a modification changes
//! the bytes under us. We accept that contract for read-only inputs (as ripgrep and safetensors
//! do): the parsers never assume two reads of the same range agree beyond what they re-check,
//! hashes are computed on the bytes actually read, and `VIT_CONVERT_NO_MMAP=1` (or
//! [`FileBytes::read`]) switches to reading the whole file into memory.
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

enum Inner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// The bytes of an input file.
pub struct FileBytes {
    inner: Inner,
}

impl FileBytes {
    /// Maps `path` read-only (or reads it, for empty files and when `VIT_CONVERT_NO_MMAP` is set).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be opened or mapped.
    pub fn open(path: &Path) -> Result<Self> {
        if std::env::var_os("VIT_CONVERT_NO_MMAP").is_some_and(|v| v != "0") {
            return Self::read(path);
        }
        let file =
            File::open(path).map_err(|e| Error::from(ErrorKind::io("open", e)).with_path(path))?;
        let len = file
            .metadata()
            .map_err(|e| Error::from(ErrorKind::io("stat", e)).with_path(path))?
            .len();
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
            inner: Inner::Mapped(map),
        })
    }

    /// Reads the whole file into memory.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be read.
    pub fn read(path: &Path) -> Result<Self> {
        let data = std::fs::read(path)
            .map_err(|e| Error::from(ErrorKind::io("read", e)).with_path(path))?;
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

    /// [`FileBytes::release`] for `len` bytes from `offset` (widened to whole pages; clamped to
    /// the file).
    pub fn release_range(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Inner::Mapped(m) = &self.inner {
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

    /// Hints that the bytes will be read once, front to back (larger readahead; pages behind
    /// the reader may be dropped early). A no-op for bytes in memory.
    pub fn advise_sequential(&self) {
        #[cfg(unix)]
        if let Inner::Mapped(m) = &self.inner {
            let _ = m.advise(memmap2::Advice::Sequential);
        }
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
            Inner::Mapped(m) => m,
            Inner::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.len())
    }
}
