//! Hand-assembling hostile files: pickles, stored zips, legacy torch files, npy, safetensors.
#![allow(dead_code)]

pub const MARK: u8 = b'(';
pub const STOP: u8 = b'.';
pub const POP: u8 = b'0';
pub const BININT: u8 = b'J';
pub const NONE: u8 = b'N';
pub const BINPERSID: u8 = b'Q';
pub const REDUCE: u8 = b'R';
pub const BINUNICODE: u8 = b'X';
pub const APPEND: u8 = b'a';
pub const BUILD: u8 = b'b';
pub const GLOBAL: u8 = b'c';
pub const EMPTY_DICT: u8 = b'}';
pub const APPENDS: u8 = b'e';
pub const BINGET: u8 = b'h';
pub const LONG_BINGET: u8 = b'j';
pub const EMPTY_LIST: u8 = b']';
pub const OBJ: u8 = b'o';
pub const BINPUT: u8 = b'q';
pub const LONG_BINPUT: u8 = b'r';
pub const SETITEM: u8 = b's';
pub const TUPLE: u8 = b't';
pub const EMPTY_TUPLE: u8 = b')';
pub const SETITEMS: u8 = b'u';
pub const PROTO: u8 = 0x80;
pub const NEWOBJ: u8 = 0x81;
pub const TUPLE2: u8 = 0x86;
pub const NEWFALSE: u8 = 0x89;
pub const LONG1: u8 = 0x8a;
pub const SHORT_BINUNICODE: u8 = 0x8c;
pub const STACK_GLOBAL: u8 = 0x93;

/// A pickle under construction.
#[derive(Clone)]
pub struct P(pub Vec<u8>);

impl P {
    /// Starts with `PROTO proto`.
    pub fn new(proto: u8) -> Self {
        P(vec![PROTO, proto])
    }
    /// Raw bytes.
    pub fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// Offset of the next opcode.
    pub fn at(&self) -> u64 {
        self.0.len() as u64
    }
    /// `GLOBAL module\nname\n`.
    pub fn global(self, module: &str, name: &str) -> Self {
        self.op(&[GLOBAL])
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }
    /// BINUNICODE.
    pub fn str(self, s: &str) -> Self {
        let n = u32::try_from(s.len()).unwrap().to_le_bytes();
        self.op(&[BINUNICODE]).op(&n).op(s.as_bytes())
    }
    /// BININT, or LONG1 with 8 bytes.
    pub fn int(self, v: i64) -> Self {
        match i32::try_from(v) {
            Ok(v) => self.op(&[BININT]).op(&v.to_le_bytes()),
            Err(_) => self.op(&[LONG1, 8]).op(&v.to_le_bytes()),
        }
    }
    /// A tuple of ints.
    pub fn ints(self, v: &[i64]) -> Self {
        let mut p = self.op(&[MARK]);
        for &x in v {
            p = p.int(x);
        }
        p.op(&[TUPLE])
    }
    /// LONG_BINPUT n.
    pub fn put(self, n: u32) -> Self {
        self.op(&[LONG_BINPUT]).op(&n.to_le_bytes())
    }
    /// LONG_BINGET n.
    pub fn get(self, n: u32) -> Self {
        self.op(&[LONG_BINGET]).op(&n.to_le_bytes())
    }
    /// `('storage', <module>.<class>, key, 'cpu', numel[, None])` + BINPERSID.
    pub fn storage_of(
        self,
        module: &str,
        class: &str,
        key: &str,
        numel: i64,
        legacy: bool,
    ) -> Self {
        let p = self
            .op(&[MARK])
            .str("storage")
            .global(module, class)
            .str(key)
            .str("cpu")
            .int(numel);
        let p = if legacy { p.op(&[NONE]) } else { p };
        p.op(&[TUPLE, BINPERSID])
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` over
    /// `torch.<class>` storage `key` of `numel` elements.
    pub fn tensor(
        self,
        class: &str,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> Self {
        self.tensor_of("torch", class, key, numel, offset, size, stride, false)
    }
    /// As [`P::tensor`], with the storage class's module and a legacy persistent id.
    #[allow(clippy::too_many_arguments)]
    pub fn tensor_of(
        self,
        module: &str,
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
            .storage_of(module, class, key, numel, legacy)
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[NEWFALSE])
            .global("collections", "OrderedDict")
            .op(&[EMPTY_TUPLE, REDUCE, TUPLE, REDUCE])
    }
    /// Appends STOP.
    pub fn stop(self) -> Vec<u8> {
        self.op(&[STOP]).0
    }
}

/// `{name: tensor}` over FloatStorage "0" of 6 elements.
pub fn one_tensor(name: &str, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    P::new(2)
        .op(&[EMPTY_DICT])
        .str(name)
        .tensor("FloatStorage", "0", 6, offset, size, stride)
        .op(&[SETITEM])
        .stop()
}

/// Little-endian f32 bytes.
pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Six f32 values 0..6.
pub fn six() -> Vec<u8> {
    f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
}

/// One entry of a stored zip: name, data, compression method (written as is).
pub type Entry<'a> = (&'a str, &'a [u8], u16);

/// A minimal zip writer (no descriptors, no zip64), duplicates and odd methods included.
pub fn zip_stored(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, method) in entries {
        let offset = u32::try_from(out.len()).unwrap();
        let crc = crc32(data).to_le_bytes();
        let n = u16::try_from(name.len()).unwrap().to_le_bytes();
        let len = u32::try_from(data.len()).unwrap().to_le_bytes();
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0]);
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // time, date
        out.extend_from_slice(&crc);
        out.extend_from_slice(&len);
        out.extend_from_slice(&len);
        out.extend_from_slice(&n);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
        central.extend_from_slice(&method.to_le_bytes());
        central.extend_from_slice(&[0; 4]);
        central.extend_from_slice(&crc);
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

/// CRC-32 (IEEE), bitwise.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A torch zip: `archive/data.pkl`, optional `archive/byteorder`, `archive/data/<key>`.
pub fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8])], byteorder: Option<&[u8]>) -> Vec<u8> {
    let names: Vec<String> = storages
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries: Vec<Entry<'_>> = vec![("archive/data.pkl", pkl, 0)];
    if let Some(b) = byteorder {
        entries.push(("archive/byteorder", b, 0));
    }
    for (n, (_, d)) in names.iter().zip(storages) {
        entries.push((n.as_str(), d, 0));
    }
    entries.push(("archive/version", b"3\n", 0));
    zip_stored(&entries)
}

/// A legacy torch file: magic, protocol 1001, sys_info, `object`, key list, then each
/// `(count, data)` as given.
pub fn legacy(object: &[u8], keys: &[&str], records: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = vec![
        PROTO, 2, LONG1, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, STOP,
    ];
    out.extend(P::new(2).int(1001).stop());
    out.extend(
        P::new(2)
            .op(&[EMPTY_DICT])
            .str("protocol_version")
            .int(1001)
            .op(&[SETITEM])
            .str("little_endian")
            .op(&[0x88, SETITEM])
            .stop(),
    );
    out.extend_from_slice(object);
    let mut k = P::new(2).op(&[EMPTY_LIST, MARK]);
    for key in keys {
        k = k.str(key);
    }
    out.extend(k.op(&[APPENDS]).stop());
    for (count, data) in records {
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// A version-1 `.npy` with the given header dict text (padded as numpy does).
pub fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(h.len()).unwrap().to_le_bytes());
    out.extend(h);
    out.extend_from_slice(data);
    out
}

/// A safetensors file from a header JSON text and data bytes.
pub fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}
