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
    /// Creates `.<name>.tmp-<pid>-<n>` next to `dest`.
    pub(crate) fn create(dest: &Path) -> Result<AtomicFile> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
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

    /// Flushes, syncs and renames into place.
    pub(crate) fn commit(mut self) -> Result<()> {
        let io = |op, e, p: &Path| Error::from(ErrorKind::io(op, e)).with_path(p);
        if let Some(w) = self.out.take() {
            let f = w
                .into_inner()
                .map_err(|e| io("write", e.into_error(), &self.dest))?;
            f.sync_all().map_err(|e| io("sync", e, &self.dest))?;
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io("rename", e, &self.dest))?;
        Ok(())
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

impl WriteItem {
    /// Every tensor of `src`, under its own name.
    ///
    /// ```
    /// let src = vit_convert::open("fixtures/convert/jax_vit/source.npz".as_ref())?;
    /// let items = vit_convert::WriteItem::all(src.as_ref());
    /// assert_eq!(items.len(), src.tensors().len());
    /// assert_eq!(items[0].name, items[0].source);
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    pub fn all(src: &dyn TensorSource) -> Vec<WriteItem> {
        src.tensors()
            .iter()
            .map(|t| WriteItem {
                name: t.name.clone(),
                source: t.name.clone(),
            })
            .collect()
    }
}

/// Writes a safetensors file, streaming one tensor at a time from `src`. Tensors are sorted by
/// name; the header is padded with spaces to a multiple of 8; the bytes are deterministic.
///
/// `dtype` converts floating-point tensors (integers are kept). Returns the file's size.
///
/// ```
/// use std::collections::BTreeMap;
/// use vit_convert::{write_safetensors, DType, MemorySource, TensorSource, WriteItem};
///
/// // Any source works: here, two tensors of a checkpoint renamed on the way out, as f16.
/// let src = vit_convert::open("fixtures/convert/timm_vit/source.pth".as_ref())?;
/// let items = [
///     WriteItem { name: "embeddings.cls_token".into(), source: "cls_token".into() },
///     WriteItem { name: "embeddings.position_embeddings".into(), source: "pos_embed".into() },
/// ];
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("part.safetensors");
/// let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
/// write_safetensors(&path, src.as_ref(), &items, Some(DType::F16), &meta)?;
///
/// let back = vit_convert::open(&path)?;
/// assert_eq!(back.tensors()[0].name, "embeddings.cls_token");
/// assert_eq!(back.tensors()[0].dtype, DType::F16);
///
/// // Tensors you computed yourself: a MemorySource.
/// let mut mine = MemorySource::new();
/// mine.insert("cls", back.read("embeddings.cls_token")?)?;
/// let items = [WriteItem { name: "cls".into(), source: "cls".into() }];
/// write_safetensors(&dir.path().join("mine.safetensors"), &mine, &items, None, &BTreeMap::new())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| ErrorKind::InvalidOption {
        reason: format!("json: {e}"),
    })?;
    text.push(b'\n');
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&text)?;
    out.commit()
}
