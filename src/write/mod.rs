//! Writers: canonical (and timm-layout) safetensors, JAX-layout npz, and JSON configs. Every
//! file is written to a temporary file in the destination folder and renamed into place, so a
//! failure never leaves a partial file and never touches an existing one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::source::TensorSource;
use crate::tensor::{cast_float, checked_byte_len, DType};

pub(crate) mod npz;

/// A file being written: a temp file beside its destination, removed unless committed.
pub(crate) struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates `.<name>.tmp-<pid>-<n>` next to `dest`, first removing such temp files left by
    /// processes that no longer exist (a killed conversion cannot clean up after itself).
    pub(crate) fn create(dest: &Path) -> Result<AtomicFile> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        remove_stale_temps(dir, name);
        let pid = std::process::id();
        for n in 0..1000u32 {
            let tmp = dir.join(format!(".{name}.tmp-{pid}-{n}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(AtomicFile {
                        tmp,
                        dest: dest.to_path_buf(),
                        out: Some(BufWriter::with_capacity(1 << 20, f)),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::from(ErrorKind::io("create", e)).with_path(tmp)),
            }
        }
        Err(Error::from(ErrorKind::io(
            "create",
            std::io::Error::other("no free temporary file name"),
        ))
        .with_path(dest))
    }

    /// Writes bytes.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(w) => w
                .write_all(bytes)
                .map_err(|e| Error::from(ErrorKind::io("write", e)).with_path(&self.dest)),
            None => Ok(()),
        }
    }

    /// Flushes and syncs the data to disk, so that only the rename remains: a full disk shows
    /// here, not at [`AtomicFile::commit`].
    pub(crate) fn sync(&mut self) -> Result<()> {
        let io = |op, e, p: &Path| Error::from(ErrorKind::io(op, e)).with_path(p);
        if let Some(w) = self.out.take() {
            let f = w
                .into_inner()
                .map_err(|e| io("write", e.into_error(), &self.dest))?;
            f.sync_all().map_err(|e| io("sync", e, &self.dest))?;
        }
        Ok(())
    }

    /// Flushes, syncs and renames into place.
    pub(crate) fn commit(mut self) -> Result<()> {
        self.sync()?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::from(ErrorKind::io("rename", e)).with_path(&self.dest))?;
        Ok(())
    }
}

/// Removes `.<name>.tmp-<pid>-<n>` files in `dir` whose process is gone. Only where `/proc`
/// tells which processes exist (Linux); a file of a live process — another conversion into the
/// same folder — is left alone. Best effort: errors are ignored.
fn remove_stale_temps(dir: &Path, name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if numeric(pid) && numeric(n) && !proc.join(pid).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// One tensor to write: its name in the output file and its name in the source.
#[derive(Clone, Debug)]
pub struct WriteItem {
    /// Name in the output.
    pub name: String,
    /// Name in the source.
    pub source: String,
}

/// Writes a safetensors file, streaming one tensor at a time from `src`. Tensors are sorted by
/// name; the header is padded with spaces to a multiple of 8; the bytes are deterministic.
///
/// `dtype` converts floating-point tensors (integers are kept).
///
/// # Errors
/// I/O errors, or a source error while reading a tensor; the destination is then untouched.
pub fn write_safetensors(
    dest: &Path,
    src: &dyn TensorSource,
    items: &[WriteItem],
    dtype: Option<DType>,
    metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let mut items: Vec<&WriteItem> = items.iter().collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = items.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(ErrorKind::Duplicate {
            what: "output tensor",
            name: w[0].name.clone(),
        }
        .into());
    }
    // Header.
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0u64;
    let mut plan = Vec::with_capacity(items.len());
    for it in &items {
        if it.name == "__metadata__" {
            return Err(ErrorKind::InvalidOption {
                reason: "`__metadata__` cannot be a tensor name".into(),
            }
            .into());
        }
        let info = src
            .info(&it.source)
            .ok_or_else(|| ErrorKind::TensorNotFound {
                name: it.source.clone(),
            })?;
        let out_dtype = match dtype {
            Some(d) if info.dtype.is_float() && d.is_float() => d,
            _ => info.dtype,
        };
        let len =
            checked_byte_len(out_dtype, &info.shape).ok_or_else(|| ErrorKind::InvalidLayout {
                reason: format!("{} shape {:?} overflows", it.name, info.shape),
            })? as u64;
        header.insert(
            it.name.clone(),
            serde_json::json!({
                "dtype": out_dtype.name(),
                "shape": info.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        plan.push((it, out_dtype, len));
        offset += len;
    }
    let mut text = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| {
        ErrorKind::InvalidOption {
            reason: format!("header: {e}"),
        }
    })?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(&text)?;
    for (it, out_dtype, len) in plan {
        let t = src
            .read(&it.source)
            .map_err(|e| e.with_tensor(it.source.clone()))?;
        let t = cast_float(t, out_dtype);
        if t.data.len() as u64 != len {
            return Err(Error::from(ErrorKind::InvalidLayout {
                reason: format!("read {} bytes, expected {len}", t.data.len()),
            })
            .with_tensor(it.source.clone()));
        }
        out.write_all(&t.data)?;
    }
    out.commit()?;
    Ok(8 + text.len() as u64 + offset)
}

/// Writes a JSON document (pretty, trailing newline) atomically.
///
/// # Errors
/// I/O errors.
pub fn write_json(dest: &Path, value: &serde_json::Value) -> Result<()> {
    prepare_json(dest, value)?.commit()
}

/// Writes pretty JSON to a synced temp file beside `dest`, to be committed (renamed) later, so
/// that several files can be written first and put in place together.
pub(crate) fn prepare_json(dest: &Path, value: &serde_json::Value) -> Result<AtomicFile> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| ErrorKind::InvalidOption {
        reason: format!("json: {e}"),
    })?;
    text.push(b'\n');
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&text)?;
    out.sync()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_files_of_dead_processes_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir
            .path()
            .join(format!(".model.safetensors.tmp-{}-7", std::process::id()));
        // Linux pids never exceed 2^22.
        let dead = dir.path().join(".model.safetensors.tmp-999999999-0");
        let other = dir.path().join(".config.json.tmp-999999999-0");
        for p in [&live, &dead, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        let f = AtomicFile::create(&dir.path().join("model.safetensors")).unwrap();
        drop(f);
        assert!(live.exists(), "a live process's temp file is kept");
        assert!(
            other.exists(),
            "only temp files of this output name are considered"
        );
        assert_eq!(dead.exists(), !Path::new("/proc/self").exists());
    }
}
