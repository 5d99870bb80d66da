//! Test helpers: hand-assembling pickles, stored zips and legacy torch files.

use super::opcodes::*;

/// A pickle under construction (protocol 2 opcodes unless a test writes others).
pub(crate) struct P(pub(crate) Vec<u8>);

impl P {
    /// Starts with `PROTO proto`.
    pub(crate) fn new(proto: u8) -> Self {
        P(vec![PROTO, proto])
    }
    /// Raw opcode bytes.
    pub(crate) fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// Current length (offset of the next opcode).
    pub(crate) fn at(&self) -> usize {
        self.0.len()
    }
    /// `GLOBAL module\nname\n`.
    pub(crate) fn global(self, module: &str, name: &str) -> Self {
        self.op(&[GLOBAL])
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }
    /// BINUNICODE.
    pub(crate) fn str(self, s: &str) -> Self {
        let n = u32::try_from(s.len()).unwrap().to_le_bytes();
        self.op(&[BINUNICODE]).op(&n).op(s.as_bytes())
    }
    /// BININT / LONG1.
    pub(crate) fn int(self, v: i64) -> Self {
        match i32::try_from(v) {
            Ok(v) => self.op(&[BININT]).op(&v.to_le_bytes()),
            Err(_) => self.op(&[LONG1, 8]).op(&v.to_le_bytes()),
        }
    }
    /// A tuple of ints (MARK … TUPLE).
    pub(crate) fn ints(self, v: &[i64]) -> Self {
        let mut p = self.op(&[MARK]);
        for &x in v {
            p = p.int(x);
        }
        p.op(&[TUPLE])
    }
    /// `('storage', torch.<class>, key, 'cpu', numel[, None])` + BINPERSID.
    pub(crate) fn storage(self, class: &str, key: &str, numel: i64, legacy: bool) -> Self {
        let p = self
            .op(&[MARK])
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu")
            .int(numel);
        let p = if legacy { p.op(&[NONE]) } else { p };
        p.op(&[TUPLE, BINPERSID])
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    pub(crate) fn tensor(
        self,
        class: &str,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> Self {
        self.tensor_with(class, key, numel, offset, size, stride, false)
    }
    /// As [`P::tensor`], with a legacy six-field persistent id when `legacy`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tensor_with(
        self,
        class: &str,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
        legacy: bool,
    ) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(&[MARK])
            .storage(class, key, numel, legacy)
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[NEWFALSE])
            .global("collections", "OrderedDict")
            .op(&[EMPTY_TUPLE, REDUCE, TUPLE, REDUCE])
    }
    /// Appends STOP and returns the bytes.
    pub(crate) fn stop(self) -> Vec<u8> {
        self.op(&[STOP]).0
    }
}

/// One zip entry for [`zip_stored`]: name, data, compression method.
pub(crate) type Entry<'a> = (&'a str, &'a [u8], u16);

/// A minimal zip writer (no descriptors, no zip64), enough to build test archives by hand,
/// duplicates and odd methods included.
pub(crate) fn zip_stored(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, method) in entries {
        let offset = u32::try_from(out.len()).unwrap();
        let n = u16::try_from(name.len()).unwrap().to_le_bytes();
        let len = u32::try_from(data.len()).unwrap().to_le_bytes();
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0]);
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // time, date, crc
        out.extend_from_slice(&len);
        out.extend_from_slice(&len);
        out.extend_from_slice(&n);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
        central.extend_from_slice(&method.to_le_bytes());
        central.extend_from_slice(&[0; 8]);
        central.extend_from_slice(&len);
        central.extend_from_slice(&len);
        central.extend_from_slice(&n);
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = u32::try_from(out.len()).unwrap();
    let count = u16::try_from(entries.len()).unwrap().to_le_bytes();
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&count);
    out.extend_from_slice(&count);
    out.extend_from_slice(&u32::try_from(central.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Little-endian bytes of f32 values.
pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
