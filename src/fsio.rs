//! Opening the files a user names, and telling files apart.
//!
//! Every path that reaches the crate from the user or from a model folder — checkpoints, both
//! sides of `diff`, `--input`, `--expected`, `--config`, `--table`, images, a folder's
//! `config.json`, `preprocessor_config.json` and `model.safetensors` — is opened by
//! [`open_regular`], which refuses anything but a regular file (or a symlink to one) with
//! [`ErrorKind::NotRegularFile`] and never blocks: a FIFO with no writer, a socket, `/dev/zero`
//! or a directory is refused at once, before a byte is read.
//!
//! Files are told apart by device and inode ([`FileId`]), never by name: outputs that would
//! replace an input and two outputs naming one file are found by comparing identities, so
//! `./x`, `dir/../x` and symlinks are seen through.

use std::fs::{File, Metadata};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Opens `path` for reading if it is a regular file (symlinks are followed), without ever
/// blocking.
///
/// The path's metadata is checked first, so a device or FIFO is not even opened; the file is then
/// opened with `O_NONBLOCK` (a FIFO swapped in between cannot block `open()`) and the open
/// handle's own metadata decides. `O_NONBLOCK` has no effect on reads of regular files (open(2):
/// "this flag has no effect for regular files"), so the handle is returned as it is, and it can
/// be read and memory-mapped normally.
///
/// # Errors
/// [`ErrorKind::NotRegularFile`] naming what the path is, [`ErrorKind::Io`] (`open`, `stat`) when
/// it cannot be opened; both carry `path`.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let io = |op, e| Error::from(ErrorKind::io(op, e)).with_path(path);
    let meta = std::fs::metadata(path).map_err(|e| io("open", e))?;
    refuse_special(&meta).map_err(|e| e.with_path(path))?;
    let file = open_nonblocking(path).map_err(|e| io("open", e))?;
    // The path may have been replaced since it was checked: the open handle decides.
    let meta = file.metadata().map_err(|e| io("stat", e))?;
    refuse_special(&meta).map_err(|e| e.with_path(path))?;
    Ok(file)
}

/// Reads the whole of a regular file ([`open_regular`]), refusing it unread when its size is over
/// `limit`, and reading at most one byte past `limit` (a file that grows, or whose size lies,
/// cannot make it read more).
///
/// # Errors
/// As [`open_regular`]; [`ErrorKind::Io`] (`read`) and [`ErrorKind::BudgetExceeded`] (`budget`,
/// at the offset where the limit was passed); all carry `path`.
pub(crate) fn read_regular(path: &Path, limit: usize, budget: &'static str) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |op, e| Error::from(ErrorKind::io(op, e)).with_path(path);
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let too_large = || {
        Error::from(ErrorKind::BudgetExceeded {
            budget,
            limit: limit64,
            offset: limit64,
        })
        .with_path(path)
    };
    let file = open_regular(path)?;
    let declared = file.metadata().map_err(|e| io("stat", e))?.len();
    if declared > limit64 {
        return Err(too_large());
    }
    let mut data = Vec::new();
    data.try_reserve_exact(usize::try_from(declared).unwrap_or(limit))
        .map_err(|e| io("read", std::io::Error::other(e.to_string())))?;
    file.take(limit64.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| io("read", e))?;
    if data.len() > limit {
        return Err(too_large());
    }
    Ok(data)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// [`ErrorKind::NotRegularFile`] unless `meta` describes a regular file.
pub(crate) fn refuse_special(meta: &Metadata) -> Result<()> {
    match special_kind(meta) {
        None => Ok(()),
        Some(kind) => Err(ErrorKind::NotRegularFile { kind }.into()),
    }
}

/// What a non-regular file is (`None` for a regular file).
pub(crate) fn special_kind(meta: &Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() {
        return None;
    }
    if ft.is_dir() {
        return Some("directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("fifo");
        }
        if ft.is_socket() {
            return Some("socket");
        }
        if ft.is_char_device() {
            return Some("character device");
        }
        if ft.is_block_device() {
            return Some("block device");
        }
    }
    if ft.is_symlink() {
        return Some("symlink");
    }
    Some("other")
}

/// A file's identity: device and inode (Unix). Two paths with equal ids name the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity `meta` describes (`None` where the platform has none).
    pub(crate) fn of(meta: &Metadata) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }

    /// The identity of the file `path` names, following symlinks (`None` if it does not exist).
    pub(crate) fn of_path(path: &Path) -> Option<FileId> {
        FileId::of(&std::fs::metadata(path).ok()?)
    }
}

/// Reads a UTF-8 text file with [`read_regular`]: a side file (JSON, TOML) as untrusted as the
/// weights, refused unread when larger than `limit`.
///
/// # Errors
/// As [`read_regular`]; [`ErrorKind::Io`] when the text is not UTF-8; all carry `path`.
pub(crate) fn read_text(path: &Path, limit: usize, budget: &'static str) -> Result<String> {
    let bytes = read_regular(path, limit, budget)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::from(ErrorKind::io(
            "read",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        ))
        .with_path(path)
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn kind_of(path: &Path) -> Option<&'static str> {
        match open_regular(path)
            .map(drop)
            .map_err(|e| e.kind().to_string())
        {
            Ok(()) => None,
            Err(m) => {
                for k in ["fifo", "socket", "character device", "directory"] {
                    if m == format!("not a regular file (it is a {k})") {
                        return Some(k);
                    }
                }
                panic!("{m}")
            }
        }
    }

    #[test]
    fn special_files_are_refused_without_blocking_and_symlinks_followed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo_link = dir.path().join("fifo_link");
        std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();

        assert_eq!(kind_of(&fifo), Some("fifo"));
        assert_eq!(kind_of(&fifo_link), Some("fifo"));
        assert_eq!(kind_of(&sock), Some("socket"));
        assert_eq!(kind_of(Path::new("/dev/zero")), Some("character device"));
        assert_eq!(kind_of(Path::new("/dev/null")), Some("character device"));
        assert_eq!(kind_of(dir.path()), Some("directory"));
        assert_eq!(kind_of(&file), None);
        assert_eq!(kind_of(&link), None);
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(e.path(), Some(fifo.as_path()));
        assert!(matches!(
            e.kind(),
            ErrorKind::NotRegularFile { kind: "fifo" }
        ));
    }

    #[test]
    fn files_are_told_apart_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let id = |p: &Path| FileId::of_path(p).unwrap();
        assert_ne!(id(&a), id(&b));
        assert_eq!(FileId::of_path(&dir.path().join("./a")), Some(id(&a)));
        assert_eq!(FileId::of_path(&dir.path().join("c")), None);
    }
}
