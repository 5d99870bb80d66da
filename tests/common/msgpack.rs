//! Hand-built msgpack for the Flax reader's tests (`tests/flax.rs`, `tests/hostile/`).
#![allow(dead_code)] // each test binary uses a different subset

/// A msgpack byte string under construction.
#[derive(Default)]
pub struct Mp(pub Vec<u8>);

impl Mp {
    /// A map header of `n` entries.
    pub fn map(mut self, n: u32) -> Self {
        rmp::encode::write_map_len(&mut self.0, n).unwrap();
        self
    }
    /// An array header of `n` items.
    pub fn arr(mut self, n: u32) -> Self {
        rmp::encode::write_array_len(&mut self.0, n).unwrap();
        self
    }
    /// A string.
    pub fn s(mut self, s: &str) -> Self {
        rmp::encode::write_str(&mut self.0, s).unwrap();
        self
    }
    /// An unsigned integer, in its shortest encoding.
    pub fn uint(mut self, v: u64) -> Self {
        rmp::encode::write_uint(&mut self.0, v).unwrap();
        self
    }
    /// Raw bytes.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A byte string.
    pub fn bin(mut self, b: &[u8]) -> Self {
        rmp::encode::write_bin(&mut self.0, b).unwrap();
        self
    }
    /// An extension value.
    pub fn ext(mut self, code: i8, payload: &[u8]) -> Self {
        rmp::encode::write_ext_meta(&mut self.0, payload.len() as u32, code).unwrap();
        self.0.extend_from_slice(payload);
        self
    }
    /// An ndarray payload `(shape, dtype, data)`.
    pub fn payload(shape: &[u64], dtype: &str, data: &[u8]) -> Vec<u8> {
        let mut p = Mp::default().arr(3).arr(shape.len() as u32);
        for &d in shape {
            p = p.uint(d);
        }
        p.s(dtype).bin(data).0
    }
    /// An ndarray (extension type 1).
    pub fn array(self, shape: &[u64], dtype: &str, data: &[u8]) -> Self {
        self.ext(1, &Mp::payload(shape, dtype, data))
    }
    /// A chunked array as flax writes it: `marker` (msgpack `true` is `0xc3`), the shape as a
    /// map `{"0": d0, …}` and the chunks as a map `{"0": chunk, …}`.
    pub fn chunked(self, marker: &[u8], shape: &[u64], chunks: Vec<Mp>) -> Self {
        let mut m = self
            .map(3)
            .s("__msgpack_chunked_array__")
            .raw(marker)
            .s("shape")
            .map(shape.len() as u32);
        for (i, d) in shape.iter().enumerate() {
            m = m.s(&i.to_string()).uint(*d);
        }
        m = m.s("chunks").map(chunks.len() as u32);
        for (i, c) in chunks.into_iter().enumerate() {
            m = m.s(&i.to_string()).raw(&c.0);
        }
        m
    }
}

/// A 1-D float32 chunk of `n` values, as flax writes chunks.
pub fn f32_chunk(n: usize) -> Mp {
    Mp::default().array(&[n as u64], "float32", &f32s(n))
}

/// `{"w": chunked array}` whose chunk indices skip `1` (`0`, `2`).
pub fn gapped_chunks() -> Vec<u8> {
    one(
        "w",
        Mp::default()
            .map(3)
            .s("__msgpack_chunked_array__")
            .raw(&[0xc3])
            .s("shape")
            .map(1)
            .s("0")
            .uint(6)
            .s("chunks")
            .map(2)
            .s("0")
            .raw(&f32_chunk(4).0)
            .s("2")
            .raw(&f32_chunk(2).0),
    )
}

/// A one-entry top-level map `{key: value}`.
pub fn one(key: &str, value: Mp) -> Vec<u8> {
    Mp::default().map(1).s(key).raw(&value.0).0
}

/// `n` float32 values 0, 1, 2, … as little-endian bytes.
pub fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}
