//! The PyTorch zip container (`torch.save` since 1.6).
//!
//! ```text
//! <root>/data.pkl      the pickle; storages are persistent ids ('storage', class, key, loc, numel)
//! <root>/data/<key>    raw storage bytes, STORED (uncompressed), usually 64-byte aligned
//! <root>/byteorder     "little" | "big" (absent: little)
//! <root>/version, .format_version, .storage_alignment, .data/serialization_id   (informational)
//! ```
//!
//! The central directory is parsed here by hand (ZIP64 included) so that every check the format
//! needs is explicit: one archive root, no duplicate names, no overlapping entries, every local
//! header and its data inside the file. Storage records are sliced straight from the file bytes.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::mmap::FileBytes;
use crate::source::mapped::Mapped;
use crate::source::pickle::parse_pickle;
use crate::source::torch::{extract, Checkpoint, TorchIndex, TorchSource};
use crate::source::Format;

/// Largest small informational record (`byteorder`, `version`, …) that is read into metadata.
const MAX_INFO_RECORD: usize = 64;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
const MAX_COMMENT: usize = 0xffff;
const METHOD_STORED: u16 = 0;
const FLAG_ENCRYPTED: u16 = 0x0001;

/// One central-directory entry, its data located and bounds-checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ZipEntry {
    /// Entry name.
    pub(crate) name: String,
    /// Compression method (0 = stored).
    pub(crate) method: u16,
    /// General-purpose flags.
    pub(crate) flags: u16,
    /// Uncompressed size from the central directory.
    pub(crate) size: u64,
    /// Byte range of the local header.
    pub(crate) header: Range<usize>,
    /// Byte range of the (compressed) data.
    pub(crate) data: Range<usize>,
}

impl ZipEntry {
    /// The entry's bytes, when it is stored uncompressed and unencrypted.
    fn stored<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8]> {
        if self.method != METHOD_STORED || self.flags & FLAG_ENCRYPTED != 0 {
            return Err(malformed(
                Format::TorchZip,
                format!(
                    "entry {} is compressed (method {}) or encrypted; torch writes stored entries",
                    self.name, self.method
                ),
            ));
        }
        let len = self.data.end.saturating_sub(self.data.start);
        if u64::try_from(len).ok() != Some(self.size) {
            return Err(malformed(
                Format::TorchZip,
                format!(
                    "stored entry {} has {} data bytes but declares size {}",
                    self.name, len, self.size
                ),
            ));
        }
        bytes.get(self.data.clone()).ok_or_else(|| {
            malformed(
                Format::Zip,
                format!("entry {} data out of range", self.name),
            )
        })
    }
}

/// Little-endian field reader over a bounds-checked slice.
struct Fields<'a> {
    b: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], at: usize, len: usize, what: &'static str) -> Result<Self> {
        let b = at
            .checked_add(len)
            .and_then(|end| bytes.get(at..end))
            .ok_or_else(|| -> Error {
                ErrorKind::Truncated {
                    what,
                    offset: at as u64,
                    needed: len as u64,
                    available: bytes.len().saturating_sub(at) as u64,
                }
                .into()
            })?;
        Ok(Fields { b })
    }
    fn u16(&self, o: usize) -> u16 {
        let mut a = [0u8; 2];
        if let Some(s) = self.b.get(o..o + 2) {
            a.copy_from_slice(s);
        }
        u16::from_le_bytes(a)
    }
    fn u32(&self, o: usize) -> u32 {
        let mut a = [0u8; 4];
        if let Some(s) = self.b.get(o..o + 4) {
            a.copy_from_slice(s);
        }
        u32::from_le_bytes(a)
    }
    fn u64(&self, o: usize) -> u64 {
        let mut a = [0u8; 8];
        if let Some(s) = self.b.get(o..o + 8) {
            a.copy_from_slice(s);
        }
        u64::from_le_bytes(a)
    }
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| {
        malformed(
            Format::Zip,
            format!("{what} {v} does not fit this platform"),
        )
    })
}

/// Where the central directory is and how many entries it holds.
struct Directory {
    offset: usize,
    size: usize,
    entries: usize,
}

fn find_directory(bytes: &[u8], limits: &Limits) -> Result<Directory> {
    // A zip's end record is its last structure: without one the file was cut short (its
    // leading `PK` signature already said it is a zip).
    let cut_short = || -> Error {
        ErrorKind::Truncated {
            what: "zip end-of-central-directory record",
            offset: bytes.len() as u64,
            needed: EOCD_LEN as u64,
            available: 0,
        }
        .into()
    };
    if bytes.len() < EOCD_LEN {
        return Err(cut_short());
    }
    let last = bytes.len() - EOCD_LEN;
    let first = last.saturating_sub(MAX_COMMENT);
    // The record sits at the end unless a comment follows it: look for its signature from the
    // end, over at most 64 KiB.
    let sig = EOCD_SIG.to_le_bytes();
    let window = bytes.get(first..).unwrap_or_default();
    let eocd_at = memchr::memmem::rfind_iter(window, &sig)
        .map(|i| first + i)
        .find(|&p| {
            p <= last
                && Fields::new(bytes, p, EOCD_LEN, "zip end record")
                    .is_ok_and(|f| p + EOCD_LEN + usize::from(f.u16(20)) <= bytes.len())
        })
        .ok_or_else(cut_short)?;
    let e = Fields::new(bytes, eocd_at, EOCD_LEN, "zip end record")?;
    if e.u16(4) != 0 || e.u16(6) != 0 {
        return Err(malformed(
            Format::Zip,
            "multi-disk archives are not supported",
        ));
    }
    let mut dir = Directory {
        entries: usize::from(e.u16(10)),
        size: to_usize(u64::from(e.u32(12)), "central directory size")?,
        offset: to_usize(u64::from(e.u32(16)), "central directory offset")?,
    };
    // ZIP64: a locator right before the end record points at the ZIP64 end record.
    if let Some(loc_at) = eocd_at.checked_sub(ZIP64_LOCATOR_LEN) {
        let l = Fields::new(bytes, loc_at, ZIP64_LOCATOR_LEN, "zip64 locator")?;
        if l.u32(0) == ZIP64_LOCATOR_SIG {
            let at = to_usize(l.u64(8), "zip64 end record offset")?;
            let z = Fields::new(bytes, at, ZIP64_EOCD_LEN, "zip64 end record")?;
            if z.u32(0) != ZIP64_EOCD_SIG {
                return Err(malformed(
                    Format::Zip,
                    format!("no zip64 end record at byte {at}"),
                ));
            }
            if z.u32(16) != 0 || z.u32(20) != 0 {
                return Err(malformed(
                    Format::Zip,
                    "multi-disk archives are not supported",
                ));
            }
            dir.entries = to_usize(z.u64(32), "entry count")?;
            dir.size = to_usize(z.u64(40), "central directory size")?;
            dir.offset = to_usize(z.u64(48), "central directory offset")?;
        }
    }
    let max_entries = limits.zip_entries;
    if dir.entries > max_entries {
        return Err(ErrorKind::BudgetExceeded {
            budget: "zip entries",
            limit: max_entries as u64,
            offset: eocd_at as u64,
        }
        .into());
    }
    match dir.offset.checked_add(dir.size) {
        Some(end) if end <= eocd_at => Ok(dir),
        _ => Err(malformed(
            Format::Zip,
            format!(
                "central directory at {}+{} runs past its end record at {eocd_at}",
                dir.offset, dir.size
            ),
        )),
    }
}

/// Local headers read between two calls of `release` in [`read_zip_entries`].
const HEADERS_PER_RELEASE: usize = 8;

/// Parses the central directory and every local header; checks names and ranges. Calls
/// `release` after every [`HEADERS_PER_RELEASE`] local headers: a mapped input passes
/// [`FileBytes::release`], so that visiting headers spread over the whole file (one per tensor)
/// keeps few pages mapped — the page cache may hold the file in 2 MiB folios, each mapped whole
/// by the first touch.
///
/// # Errors
/// `MalformedContainer` (zip), `Truncated`, `Duplicate { what: "zip entry" }`, `BudgetExceeded`.
pub(crate) fn read_zip_entries(
    bytes: &[u8],
    release: &dyn Fn(),
    limits: &Limits,
) -> Result<Vec<ZipEntry>> {
    let dir = find_directory(bytes, limits)?;
    let dir_end = dir.offset.saturating_add(dir.size);
    let mut entries: Vec<ZipEntry> = Vec::with_capacity(dir.entries.min(1024));
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut at = dir.offset;
    for k in 0..dir.entries {
        if k % HEADERS_PER_RELEASE == HEADERS_PER_RELEASE - 1 {
            release();
        }
        let c = Fields::new(bytes, at, CENTRAL_LEN, "zip central directory entry")?;
        if c.u32(0) != CENTRAL_SIG {
            return Err(malformed(
                Format::Zip,
                format!("bad central directory signature at byte {at}"),
            ));
        }
        let flags = c.u16(8);
        let method = c.u16(10);
        let mut csize = u64::from(c.u32(20));
        let mut size = u64::from(c.u32(24));
        let name_len = usize::from(c.u16(28));
        let extra_len = usize::from(c.u16(30));
        let comment_len = usize::from(c.u16(32));
        let mut local = u64::from(c.u32(42));
        let name_at = at + CENTRAL_LEN;
        let name_bytes = Fields::new(bytes, name_at, name_len, "zip entry name")?.b;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| {
                malformed(
                    Format::Zip,
                    format!("entry name at byte {name_at} is not UTF-8"),
                )
            })?
            .to_string();
        let extra = Fields::new(bytes, name_at + name_len, extra_len, "zip extra field")?.b;
        // ZIP64 extended information: the 0xFFFFFFFF fields, in order.
        let mut e = 0usize;
        while let Some(h) = extra.get(e..e + 4) {
            let id = u16::from_le_bytes([h[0], h[1]]);
            let len = usize::from(u16::from_le_bytes([h[2], h[3]]));
            let body = extra.get(e + 4..e + 4 + len).ok_or_else(|| {
                malformed(
                    Format::Zip,
                    format!("entry {name}: extra field runs past its end"),
                )
            })?;
            if id == ZIP64_EXTRA_ID {
                let mut k = 0usize;
                let mut next = |field: &mut u64| -> Result<()> {
                    if *field == u64::from(u32::MAX) {
                        let v = body.get(k..k + 8).ok_or_else(|| {
                            malformed(
                                Format::Zip,
                                format!("entry {name}: short zip64 extra field"),
                            )
                        })?;
                        let mut a = [0u8; 8];
                        a.copy_from_slice(v);
                        *field = u64::from_le_bytes(a);
                        k += 8;
                    }
                    Ok(())
                };
                next(&mut size)?;
                next(&mut csize)?;
                next(&mut local)?;
            }
            e += 4 + len;
        }
        at = name_at + name_len + extra_len + comment_len;
        if at > dir_end {
            return Err(malformed(
                Format::Zip,
                format!("entry {name} runs past the central directory"),
            ));
        }
        // Local header: its own name and extra lengths decide where the data starts.
        let header_at = to_usize(local, "local header offset")?;
        let l = Fields::new(bytes, header_at, LOCAL_LEN, "zip local header")?;
        if l.u32(0) != LOCAL_SIG {
            return Err(malformed(
                Format::Zip,
                format!("entry {name}: no local header at byte {header_at}"),
            ));
        }
        let local_name_len = usize::from(l.u16(26));
        let local_extra_len = usize::from(l.u16(28));
        let local_name = Fields::new(
            bytes,
            header_at + LOCAL_LEN,
            local_name_len,
            "zip local name",
        )?
        .b;
        if local_name != name.as_bytes() {
            return Err(malformed(
                Format::Zip,
                format!(
                    "entry {name}: local header names {:?}",
                    String::from_utf8_lossy(local_name)
                ),
            ));
        }
        let data_start = header_at + LOCAL_LEN + local_name_len + local_extra_len;
        let data_len = to_usize(csize, "entry size")?;
        let data_end = data_start
            .checked_add(data_len)
            .filter(|&end| end <= dir.offset)
            .ok_or_else(|| {
                malformed(
                    Format::Zip,
                    format!(
                    "entry {name}: data at {data_start}+{data_len} runs into the central directory"
                ),
                )
            })?;
        if names.insert(name.clone(), entries.len()).is_some() {
            return Err(ErrorKind::Duplicate {
                what: "zip entry",
                name,
            }
            .into());
        }
        entries.push(ZipEntry {
            name,
            method,
            flags,
            size,
            header: header_at..data_start,
            data: data_start..data_end,
        });
    }
    // No two entries may share bytes (a polyglot / zip-bomb shape).
    let mut spans: Vec<(usize, usize, &str)> = entries
        .iter()
        .map(|e| (e.header.start, e.data.end, e.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if let [a, b] = w {
            if a.1 > b.0 {
                return Err(malformed(
                    Format::Zip,
                    format!("entries {} and {} overlap", a.2, b.2),
                ));
            }
        }
    }
    Ok(entries)
}

/// The archive root (folder of the first entry) when every entry lives under it.
fn archive_root(entries: &[ZipEntry]) -> Result<&str> {
    let first = entries
        .first()
        .ok_or_else(|| malformed(Format::TorchZip, "empty archive"))?;
    let (root, _) = first.name.split_once('/').ok_or_else(|| {
        malformed(
            Format::TorchZip,
            format!("first entry {} is not inside an archive folder", first.name),
        )
    })?;
    for e in entries {
        let other = e.name.split_once('/').map_or(e.name.as_str(), |(r, _)| r);
        if other != root || !e.name.contains('/') {
            return Err(malformed(
                Format::TorchZip,
                format!(
                    "entry {} has root {other:?}, but the archive root is {root:?} (from {})",
                    e.name, first.name
                ),
            ));
        }
    }
    Ok(root)
}

/// True when the zip is a torch checkpoint (`<root>/data.pkl`, root = first entry's folder);
/// `release` as in [`read_zip_entries`].
///
/// # Errors
/// The zip's own structural errors.
pub(crate) fn is_torch_zip(bytes: &[u8], release: &dyn Fn(), limits: &Limits) -> Result<bool> {
    let entries = read_zip_entries(bytes, release, limits)?;
    release();
    let Some((root, _)) = entries.first().and_then(|e| e.name.split_once('/')) else {
        return Ok(false);
    };
    let pkl = format!("{root}/data.pkl");
    Ok(entries.iter().any(|e| e.name == pkl))
}

/// Opens a `torch.save` zip checkpoint: [`parse`]s it and keeps its bytes.
///
/// # Errors
/// As [`parse`].
pub(crate) fn open(bytes: FileBytes, limits: &Limits) -> Result<TorchSource> {
    let index = parse(&bytes, &|| bytes.release(), limits)?;
    Ok(Mapped::new(Arc::new(bytes), index))
}

/// Parses and validates the whole archive: directory, pickle, every tensor against its record.
/// `release` drops the resident pages of `bytes` (the zip walk calls it as it goes).
///
/// # Errors
/// Zip and pickle errors; `MissingStorage`, `StorageSizeMismatch`, `StorageOutOfBounds`,
/// `InvalidLayout`, `UnsupportedDType`, `Duplicate`.
pub(crate) fn parse(bytes: &[u8], release: &dyn Fn(), limits: &Limits) -> Result<TorchIndex> {
    let entries = read_zip_entries(bytes, release, limits)?;
    release();
    let root = archive_root(&entries)?.to_string();
    let by_name: HashMap<&str, &ZipEntry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let record = |rel: &str| by_name.get(format!("{root}/{rel}").as_str()).copied();

    let mut metadata = BTreeMap::new();
    metadata.insert("archive_root".to_string(), root.clone());
    let big_endian = match record("byteorder") {
        None => false,
        Some(e) => match e.stored(bytes)? {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(malformed(
                    Format::TorchZip,
                    format!(
                        "byteorder record is {:?}, expected \"little\" or \"big\"",
                        String::from_utf8_lossy(other.get(..MAX_INFO_RECORD).unwrap_or(other))
                    ),
                ))
            }
        },
    };
    metadata.insert(
        "byteorder".to_string(),
        if big_endian { "big" } else { "little" }.to_string(),
    );
    for (rel, key) in [
        ("version", "archive_version"),
        (".format_version", "format_version"),
        (".storage_alignment", "storage_alignment"),
    ] {
        if let Some(Ok(v)) = record(rel).map(|e| e.stored(bytes)) {
            if let Ok(s) = std::str::from_utf8(v) {
                if s.len() <= MAX_INFO_RECORD {
                    metadata.insert(key.to_string(), s.trim().to_string());
                }
            }
        }
    }

    let pkl = record("data.pkl").ok_or_else(|| {
        malformed(
            Format::TorchZip,
            format!("no {root}/data.pkl in the archive"),
        )
    })?;
    let parsed = parse_pickle(pkl.stored(bytes)?, 0, limits)?;
    if let Some(p) = parsed.protocol {
        metadata.insert("pickle_protocol".to_string(), p.to_string());
    }
    let extracted = extract(&parsed)?;
    drop(parsed);

    let mut records: Vec<Range<usize>> = Vec::with_capacity(extracted.storages.len());
    for s in &extracted.storages {
        let e = record(&format!("data/{}", s.key))
            .ok_or_else(|| ErrorKind::MissingStorage { key: s.key.clone() })?;
        e.stored(bytes)?;
        records.push(e.data.clone());
    }
    let notes = extracted.notes.clone();
    let checkpoint = Checkpoint::bind(extracted, records, bytes.len(), big_endian)?;
    Ok(TorchIndex {
        format: Format::TorchZip,
        checkpoint,
        metadata,
        notes,
    })
}
