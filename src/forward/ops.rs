//! The forward pass's kernels, named after the PyTorch ops they mirror. They work on row-major
//! `[rows, features]` activations (every sample's tokens stacked), write into buffers the caller
//! allocated once per forward pass, and run on the current rayon pool: matrix products split
//! over output columns, attention over (sample, head) pairs, row-wise ops over rows.
//!
//! Numerics follow PyTorch's CPU kernels: f32 storage and products (faer's sgemm),
//! LayerNorm statistics accumulated in f64, softmax with the row maximum subtracted and an exp
//! accurate to about one ulp, GELU through an erf accurate to a few ulp.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::model::Activation;

/// Output columns per product task. Fixed (not derived from the thread count), so that every
/// output element is computed by the same kernel call over the same operands whatever the number
/// of threads: results do not depend on it. A multiple of the GEMM microkernel's rows (96 with
/// AVX-512, 48 with AVX2): 128 left a 32-row remainder in every task, run by a slower kernel.
/// 768 columns make 4 tasks, 3072 make 16, enough to balance two threads. (Measured on the
/// 2-core Xeon, ViT-B/16, whole process: 5–10 % faster than 128 on one thread and at batch 8,
/// even at batch 1 with two; 256 and 384 are slower, one whole-matrix call too; BENCHMARKS.md.)
const COLUMN_BLOCK: usize = 192;
/// Rows per task for the row-wise ops (fixed, like [`COLUMN_BLOCK`]).
const ROW_BLOCK: usize = 8;

/// Runs `op` compiled for the widest vector instruction set this CPU has (AVX-512, AVX2 or the
/// baseline, detected at run time by `pulp`), so that the element-wise loops inlined into it
/// vectorise to that width. Rust never contracts `a * b + c` into an FMA, so every width gives
/// the same results.
fn vectorized<Op: WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}

/// One row of `nn.LayerNorm`, into `out`, with the statistics accumulated in f64.
#[inline(always)]
fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f64, out: &mut [f32]) {
    let d = x.len() as f64;
    let mean = reduce_f64(x, |a, v| a + f64::from(v)) / d;
    let var = reduce_f64(x, |a, v| {
        let c = f64::from(v) - mean;
        a + c * c
    }) / d;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &wi), &bi) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (((f64::from(v) - mean) * inv) as f32) * wi + bi;
    }
}

/// The residual connection and the LayerNorm after it, for a block of rows: `x += y` (when `y`
/// is given), then `out = LayerNorm(x)` row by row.
struct AddNorm<'a> {
    x: &'a mut [f32],
    y: Option<&'a [f32]>,
    w: &'a [f32],
    b: &'a [f32],
    eps: f64,
    out: &'a mut [f32],
}

impl WithSimd for AddNorm<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let d = self.w.len().max(1);
        if let Some(y) = self.y {
            for (xv, &yv) in self.x.iter_mut().zip(y) {
                *xv += yv;
            }
        }
        for (xr, or) in self.x.chunks_exact(d).zip(self.out.chunks_exact_mut(d)) {
            layer_norm_row(xr, self.w, self.b, self.eps, or);
        }
    }
}

/// `x += y` (the residual connection, when `y` is given), then `out = LayerNorm(x; w, b, eps)`
/// over each row of the row-major `[rows, d]` slices, `d = w.len()`, in blocks of rows across
/// the pool. Statistics are accumulated in f64.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when the lengths disagree.
pub(crate) fn add_layer_norm(
    x: &mut [f32],
    y: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    eps: f64,
    out: &mut [f32],
) -> Result<()> {
    let d = w.len();
    let len = x.len();
    if d == 0
        || b.len() != d
        || len % d != 0
        || out.len() != len
        || y.is_some_and(|y| y.len() != len)
    {
        return Err(layout(format!(
            "layer norm of {d} features over {len} values into {}",
            out.len()
        )));
    }
    let block = ROW_BLOCK * d;
    let blocks = x.par_chunks_mut(block).zip(out.par_chunks_mut(block));
    let run = |x, y, out| {
        vectorized(AddNorm {
            x,
            y,
            w,
            b,
            eps,
            out,
        })
    };
    match y {
        Some(y) => blocks
            .zip(y.par_chunks(block))
            .for_each(|((x, out), y)| run(x, Some(y), out)),
        None => blocks.for_each(|(x, out)| run(x, None, out)),
    }
    Ok(())
}

/// Adds `bias` to `row` and applies `f` (a contiguous row, so the loop vectorises).
#[inline(always)]
fn bias_act(row: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32) {
    for (v, &bi) in row.iter_mut().zip(bias) {
        *v = f(*v + bi);
    }
}

/// The end of a linear layer on a block of its output: `y = act(y + bias)` row by row.
struct BiasAct<'a> {
    y: MatMut<'a, f32>,
    bias: &'a [f32],
    act: Option<Activation>,
}

impl WithSimd for BiasAct<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let BiasAct { y, bias, act } = self;
        for row in y.row_iter_mut() {
            let Some(row) = row.try_as_row_major_mut() else {
                continue;
            };
            let r = row.as_slice_mut();
            match act {
                None => bias_act(r, bias, |v| v),
                Some(Activation::QuickGelu) => bias_act(r, bias, quick_gelu),
                Some(a) if a.is_tanh_approximation() => bias_act(r, bias, gelu_tanh),
                Some(_) => bias_act(r, bias, gelu_erf),
            }
        }
    }
}

/// One `nn.Linear` of a [`linears`] group: weight `w` `[out, in]` in PyTorch layout, optional
/// bias `b` `[out]`, output `y` `[rows, out]` (standard layout).
pub(crate) struct Product<'a> {
    pub(crate) w: ArrayView2<'a, f32>,
    pub(crate) b: Option<&'a [f32]>,
    pub(crate) y: ArrayViewMut2<'a, f32>,
}

/// One task of [`linears`]: a block of output columns, its weight rows and bias.
type Task<'a> = (MatMut<'a, f32>, &'a [f32], &'a [f32]);

/// Several `nn.Linear`s of the same input `x` (q, k and v), in one parallel region: each
/// `y = act(x · Wᵀ + b)`. Every product is cut into tasks of [`COLUMN_BLOCK`] output columns
/// (faer's sgemm, with its runtime-dispatched AVX-512/AVX2 kernels) and all the tasks share the
/// pool; each task adds the bias and applies the activation to its block while it is still in cache.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when the shapes disagree or an operand is not in standard layout.
pub(crate) fn linears(
    x: ArrayView2<f32>,
    products: Vec<Product<'_>>,
    act: Option<Activation>,
) -> Result<()> {
    let (m, k) = x.dim();
    let x = x.as_standard_layout();
    let xs = x
        .as_slice()
        .ok_or_else(|| layout("linear input is not contiguous".into()))?;
    let widest = products.iter().map(|p| p.w.nrows()).max().unwrap_or(0);
    let zeros = vec![0.0f32; widest];
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for Product { w, b, y } in products {
        let n = w.nrows();
        if y.dim() != (m, n) || w.ncols() != k || b.is_some_and(|b| b.len() != n) {
            return Err(layout(format!(
                "linear of {:?} by {:?} into {:?}",
                (m, k),
                w.dim(),
                y.dim()
            )));
        }
        let (Some(ws), Some(ys)) = (w.to_slice(), y.into_slice()) else {
            return Err(layout("linear operands are not contiguous".into()));
        };
        let b = b.unwrap_or(zeros.get(..n).unwrap_or(&[]));
        if m == 0 || n == 0 {
            continue;
        }
        let y = MatMut::from_row_major_slice_mut(ys, m, n);
        if k == 0 {
            // An empty product: the bias alone.
            let mut y = y;
            y.fill(0.0);
            vectorized(BiasAct { y, bias: b, act });
            continue;
        }
        let blocks: Vec<MatMut<'_, f32>> = y.par_col_chunks_mut(COLUMN_BLOCK).collect();
        tasks.extend(
            blocks
                .into_iter()
                .zip(ws.chunks(COLUMN_BLOCK * k))
                .zip(b.chunks(COLUMN_BLOCK))
                .map(|((y, w), b)| (y, w, b)),
        );
    }
    tasks.into_par_iter().for_each(|(mut y, wc, bias)| {
        let a = MatRef::from_row_major_slice(xs, m, k);
        let wt = MatRef::from_row_major_slice(wc, y.ncols(), k).transpose();
        matmul(y.as_mut(), Accum::Replace, a, wt, 1.0, Par::Seq);
        vectorized(BiasAct { y, bias, act });
    });
    Ok(())
}

fn layout(reason: String) -> Error {
    ErrorKind::InvalidLayout { reason }.into()
}

/// `erf` in f32: the rational approximation Eigen and XLA use for float (a few ulp), clamped to
/// ±4 where erf is 1 to f32 precision. Branch-free, so loops over it vectorise.
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p: f32 = -2.726_142_258_013_06e-10;
    p = p * x2 + 2.770_681_424_959_02e-08;
    p = p * x2 - 2.101_024_020_825_08e-06;
    p = p * x2 - 5.692_506_394_623_46e-05;
    p = p * x2 - 7.349_906_303_268_55e-04;
    p = p * x2 - 2.954_599_808_540_25e-03;
    p = p * x2 - 1.609_603_332_624_15e-02;
    let p = p * x;
    let mut q: f32 = -1.456_607_184_649_96e-05;
    q = q * x2 - 2.133_740_552_789_05e-04;
    q = q * x2 - 1.682_826_974_382_03e-03;
    q = q * x2 - 7.373_329_167_204_68e-03;
    q = q * x2 - 1.426_473_905_141_89e-02;
    p / q
}

/// Exact (erf) GELU, as `nn.GELU()` / HF `gelu`: `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// SwiGLU's middle: for each row of `packed` (`[rows, 2·m]`, the gate's `m` columns first),
/// `out = silu(gate) · up` (`[rows, m]`), as DINOv2's `Dinov2SwiGLUFFN` computes it.
pub(crate) fn swiglu(packed: &[f32], out: &mut [f32], m: usize) {
    vectorized(SwiGlu { packed, out, m });
}

struct SwiGlu<'a> {
    packed: &'a [f32],
    out: &'a mut [f32],
    m: usize,
}

impl WithSimd for SwiGlu<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let SwiGlu { packed, out, m } = self;
        for (src, dst) in packed
            .chunks_exact(2 * m.max(1))
            .zip(out.chunks_exact_mut(m.max(1)))
        {
            let (gate, up) = src.split_at(m);
            for ((o, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
                *o = sigmoid_times(g, g) * u;
            }
        }
    }
}

/// `x · sigmoid(z)` = `x / (1 + e⁻ᶻ)` in f32 with [`exp_f32`] (about one ulp; branch-free, so
/// the loops over it vectorise). Below `z = -88` (where `e⁻ᶻ` leaves f32) the product is
/// `x · 0`, as torch's `0.5·x·(1 + tanh)` gives there; large positive `z` gives `x`.
#[inline(always)]
fn sigmoid_times(x: f32, z: f32) -> f32 {
    let y = x / (1.0 + exp_f32(-z));
    if z < -88.0 {
        x * 0.0
    } else {
        y
    }
}

/// `x · sigmoid(1.702 x)`, as HF `quick_gelu` (OpenAI CLIP).
#[inline(always)]
pub(crate) fn quick_gelu(v: f32) -> f32 {
    sigmoid_times(v, 1.702 * v)
}

/// tanh-approximated GELU, as HF `gelu_pytorch_tanh` / `gelu_new` and JAX `nn.gelu`:
/// `x/2 · (1 + tanh(u))` with `u = √(2/π) (x + 0.044715 x³)`, computed as the identical
/// `x · sigmoid(2u)` (no cancellation near `tanh(u) = -1`, and no library call).
#[inline(always)]
pub(crate) fn gelu_tanh(v: f32) -> f32 {
    const TWO_C: f32 = 2.0 * 0.797_884_6; // 2·√(2/π)
    sigmoid_times(v, TWO_C * (v + 0.044_715 * v * v * v))
}

/// `1.5 · 2²³`: adding it rounds an f32 in (-2²², 2²²) to an integer, in its low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `exp` in f32 (Cephes' expf: range reduction by ln 2 and a degree-6 polynomial, about one
/// ulp), flushing to 0 below -87 where the result would be subnormal. Branch-free and without
/// library calls, so the softmax loop vectorises. (Constants as Cephes publishes them.)
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2), an integer in [-126, 127] after the clamp; its bits sit in the low
    // mantissa of `t`.
    let t = xc * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = xc - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // 2^n: the exponent field of n + 127 (in [1, 254]).
    let bits = t
        .to_bits()
        .wrapping_sub(ROUND_MAGIC.to_bits())
        .wrapping_add(127)
        << 23;
    let y = e * f32::from_bits(bits);
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

/// Lanes of the vectorised reductions below (one AVX-512 register of f32).
const LANES: usize = 16;

/// `f` folded over `r` in [`LANES`] independent accumulators, then across them: the order that
/// lets the compiler vectorise a reduction (as torch's vectorised kernels also reduce).
#[inline(always)]
fn reduce(r: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = r.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = f(*a, v);
    }
    acc.into_iter().fold(init, f)
}

/// [`reduce`] in f64 over f32 values: `f(accumulator, value)` in [`LANES`] / 2 accumulators.
#[inline(always)]
fn reduce_f64(r: &[f32], f: impl Fn(f64, f32) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES / 2];
    let mut chunks = r.chunks_exact(LANES / 2);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = f(*a, v);
    }
    acc.into_iter().sum()
}

/// Softmax of one row, in f32 with the row maximum subtracted (as torch does). Separate passes
/// (max, exp, sum, scale) so that each one vectorises.
#[inline(always)]
fn softmax_row(r: &mut [f32]) {
    let max = reduce(r, f32::NEG_INFINITY, f32::max);
    for v in r.iter_mut() {
        *v = exp_f32(*v - max);
    }
    let inv = 1.0 / reduce(r, 0.0, |a, b| a + b);
    for v in r.iter_mut() {
        *v *= inv;
    }
}

/// Softmax over each row of a row-major `[rows, n]` slice.
struct Softmax<'a> {
    x: &'a mut [f32],
    n: usize,
}

impl WithSimd for Softmax<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for r in self.x.chunks_exact_mut(self.n.max(1)) {
            softmax_row(r);
        }
    }
}

/// Softmax over each row of a row-major `[rows, n]` slice.
pub(crate) fn softmax_rows(x: &mut [f32], n: usize) {
    vectorized(Softmax { x, n });
}

/// Multi-head self-attention (eager path) for `samples` stacked samples of `t` tokens: per
/// sample and head, `softmax(q·kᵀ · hd^-0.5 (+ bias)) · v`, heads concatenated along the feature
/// axis, into `out`. `k` and `v` are row-major `[samples·t, d]`; `q` and `out` `[samples·tq, d]`:
/// the first `tq` tokens of each sample attend (all `t` of them in every layer but a last one
/// whose outputs read only the leading tokens). `bias` is `[heads, t, t]`; the first `tq` rows of
/// each head's apply. Each (sample, head) pair is one task with its own score buffer, writing its
/// `[tq, hd]` block of `out` in place.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when the lengths disagree with `t`, `tq`, `heads` and `d`.
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (d, heads, t, tq): (usize, usize, usize, usize),
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let hd = d / heads.max(1);
    let len = k.len();
    if let Some(b) = bias {
        if Some(b.len()) != heads.checked_mul(t).and_then(|x| x.checked_mul(t)) {
            return Err(layout(format!(
                "an attention bias of {} values for {heads} heads of {t} tokens",
                b.len()
            )));
        }
    }
    if t == 0 || tq == 0 || tq > t || hd == 0 || hd * heads != d || len % (t * d) != 0 {
        return Err(layout(format!(
            "attention over {len} values with {t} tokens ({tq} attending), {heads} heads of {hd}"
        )));
    }
    let samples = len / (t * d);
    let qlen = samples * tq * d;
    if v.len() != len || q.len() != qlen || out.len() != qlen {
        return Err(layout(format!(
            "attention inputs of {}, {} and {} values and an output of {} for {samples} samples \
             of {t} tokens ({tq} attending) of {d}",
            q.len(),
            k.len(),
            v.len(),
            out.len()
        )));
    }
    let scale = (hd as f64).powf(-0.5) as f32;
    // The [n, hd] block of head h of sample s, as a strided view of a row-major [rows, d]
    // matrix of `n` rows per sample (whose length was checked above, so the block lies inside
    // it).
    fn head_block(m: &[f32], n: usize, d: usize, s: usize, h: usize, hd: usize) -> MatRef<'_, f32> {
        let rows = m.len() / d;
        MatRef::from_row_major_slice(m, rows, d).submatrix(s * n, h * hd, n, hd)
    }
    MatMut::from_row_major_slice_mut(out, samples * tq, d)
        .par_row_chunks_mut(tq)
        .enumerate()
        .flat_map(|(s, sample)| {
            sample
                .par_col_chunks_mut(hd)
                .enumerate()
                .map(move |(h, o)| (s, h, o))
        })
        .for_each_init(
            || vec![0.0f32; tq * t],
            |scores, (s, h, o)| {
                let mut sm = MatMut::from_row_major_slice_mut(scores, tq, t);
                matmul(
                    sm.as_mut(),
                    Accum::Replace,
                    head_block(q, tq, d, s, h, hd),
                    head_block(k, t, d, s, h, hd).transpose(),
                    scale,
                    Par::Seq,
                );
                // The relative position bias of head h (its first tq rows), added to the
                // scaled scores.
                if let Some(b) = bias.and_then(|b| b.get(h * t * t..h * t * t + tq * t)) {
                    for (x, y) in scores.iter_mut().zip(b) {
                        *x += y;
                    }
                }
                softmax_rows(scores, t);
                let sm = MatRef::from_row_major_slice(scores, tq, t);
                matmul(
                    o,
                    Accum::Replace,
                    sm,
                    head_block(v, t, d, s, h, hd),
                    1.0,
                    Par::Seq,
                );
            },
        );
    Ok(())
}

/// The patches of one image `[C, H, W]` as rows `[N, C·P·P]` in row-major (row, col) patch
/// order, into `out`: the input of `Conv2d(C, D, kernel=P, stride=P)` as a matrix product,
/// as `flatten(2).transpose(1, 2)` orders them. Rows and columns that do not fill a whole patch
/// are dropped, as the convolution does.
pub(crate) fn patches(img: ArrayView3<f32>, p: usize, mut out: ArrayViewMut2<f32>) {
    let (c, h, wd) = img.dim();
    let (gh, gw) = (h / p, wd / p);
    for r in 0..gh {
        for col in 0..gw {
            let mut row = out.row_mut(r * gw + col);
            let mut k = 0;
            for ch in 0..c {
                for y in 0..p {
                    for x in 0..p {
                        row[k] = img[[ch, r * p + y, col * p + x]];
                        k += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn linear(
        x: ArrayView2<f32>,
        w: ArrayView2<f32>,
        b: Option<&[f32]>,
        act: Option<Activation>,
        y: ArrayViewMut2<f32>,
    ) -> Result<()> {
        linears(x, vec![Product { w, b, y }], act)
    }

    #[test]
    fn layer_norm_normalises_each_row_after_the_residual_add() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0];
        let mut y = [0.0f32; 8];
        add_layer_norm(&mut x, None, &[1.0; 4], &[0.0; 4], 0.0, &mut y).unwrap();
        let mean: f32 = y[..4].iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        assert!((y[3] - 1.341_640_8).abs() < 1e-5);
        let r = [0.0f32, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0];
        add_layer_norm(&mut x, Some(&r), &[2.0; 4], &[1.0; 4], 0.0, &mut y).unwrap();
        assert_eq!(x[4..], [1.0, 2.0, 3.0, 4.0]);
        assert!((y[7] - (2.0 * 1.341_640_8 + 1.0)).abs() < 1e-5);
        assert!(add_layer_norm(&mut x, None, &[1.0; 3], &[0.0; 3], 0.0, &mut y).is_err());
    }

    #[test]
    fn gelu_forms_agree_near_zero_and_differ_slightly_elsewhere() {
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        // transformers 5.23 `ACT2FN["quick_gelu"]` on these inputs (float32).
        let x = [-3.0, -1.0, -0.25, 0.0, 0.5, 2.0, 6.0];
        let want = [
            -0.018_071_31,
            -0.154_204_23,
            -0.098_800_35,
            0.0,
            0.350_388_44,
            1.935_658_6,
            5.999_778,
        ];
        for (v, w) in x.into_iter().zip(want) {
            assert!(
                (quick_gelu(v) - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{v}: {}",
                quick_gelu(v)
            );
        }
    }

    /// The f32 sigmoid forms of tanh GELU, QuickGELU and SiLU against their f64 definitions
    /// (what they replaced: a scalar libm call per element, 7× PyTorch's time for SigLIP).
    #[test]
    fn sigmoid_activations_match_their_f64_definitions() {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let mut worst = [0.0f64; 3];
        for i in -200_000..=200_000 {
            let v = i as f32 * 1e-4;
            let x = f64::from(v);
            let want = [
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh()),
                x / (1.0 + (-1.702 * x).exp()),
                x / (1.0 + (-x).exp()),
            ];
            let got = [gelu_tanh(v), quick_gelu(v), {
                let mut o = [0.0f32];
                swiglu(&[v, 1.0], &mut o, 1);
                o[0]
            }];
            for k in 0..3 {
                let err = (f64::from(got[k]) - want[k]).abs() / want[k].abs().max(1.0);
                worst[k] = worst[k].max(err);
            }
        }
        assert!(worst.iter().all(|&w| w < 5e-7), "worst errors {worst:?}");
        assert_eq!(gelu_tanh(-1e30), 0.0);
        assert_eq!(gelu_tanh(-3e38), 0.0);
        assert!(gelu_tanh(f32::NAN).is_nan());
        assert_eq!(gelu_tanh(1e30), 1e30);
        assert_eq!(quick_gelu(f32::MAX), f32::MAX);
    }

    #[test]
    fn erf_matches_the_f64_library_within_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let want = libm::erf(f64::from(x));
            let got = f64::from(erf_f32(x));
            worst = worst.max((got - want).abs() / want.abs().max(1e-30));
        }
        assert!(worst < 1e-6, "worst relative error {worst:e}");
    }

    #[test]
    fn exp_matches_the_f64_library_to_about_one_ulp() {
        let mut worst = 0.0f64;
        for i in -86_990..=87_990 {
            let x = i as f32 * 1e-3;
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut x = [1000.0f32, 1000.0, 0.0, 1.0];
        softmax_rows(&mut x, 2);
        assert!((x[0] - 0.5).abs() < 1e-7);
        assert!((x[2] + x[3] - 1.0).abs() < 1e-6);
    }

    fn on_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn linear_in_column_blocks_matches_the_f64_product_whatever_the_thread_count() {
        let (m, k, n) = (5, 37, 300);
        let x = Array2::from_shape_fn((m, k), |(i, j)| (i * k + j) as f32 * 0.01 - 1.0);
        let w = Array2::from_shape_fn((n, k), |(i, j)| ((i * 3 + j) % 11) as f32 * 0.05 - 0.2);
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let run = |threads| {
            let mut y = Array2::zeros((m, n));
            on_pool(threads, || {
                linear(x.view(), w.view(), Some(&b), None, y.view_mut()).unwrap()
            });
            y
        };
        let y = run(1);
        assert_eq!(y, run(4));
        for ((i, j), &got) in y.indexed_iter() {
            let want: f64 = (0..k)
                .map(|l| f64::from(x[[i, l]]) * f64::from(w[[j, l]]))
                .sum::<f64>()
                + f64::from(b[j]);
            assert!(
                (f64::from(got) - want).abs() < 1e-5,
                "{i},{j}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn a_group_of_products_equals_the_products_one_by_one() {
        let x = Array2::from_shape_fn((4, 9), |(i, j)| (i * 9 + j) as f32 * 0.03 - 0.5);
        let ws: Vec<Array2<f32>> = (0..3)
            .map(|s| Array2::from_shape_fn((130 + s, 9), |(i, j)| ((i + j * s) % 7) as f32 * 0.1))
            .collect();
        let b: Vec<f32> = (0..131).map(|i| i as f32 * 0.001).collect();
        let mut alone: Vec<Array2<f32>> =
            ws.iter().map(|w| Array2::zeros((4, w.nrows()))).collect();
        for (w, y) in ws.iter().zip(&mut alone) {
            linear(
                x.view(),
                w.view(),
                None,
                Some(Activation::Gelu),
                y.view_mut(),
            )
            .unwrap();
        }
        let mut grouped: Vec<Array2<f32>> =
            ws.iter().map(|w| Array2::zeros((4, w.nrows()))).collect();
        let products = ws
            .iter()
            .zip(&mut grouped)
            .map(|(w, y)| Product {
                w: w.view(),
                b: None,
                y: y.view_mut(),
            })
            .collect();
        on_pool(2, || {
            linears(x.view(), products, Some(Activation::Gelu)).unwrap()
        });
        assert_eq!(alone, grouped);
        let mut y = Array2::zeros((4, 131));
        linear(x.view(), ws[1].view(), Some(&b), None, y.view_mut()).unwrap();
        let mut want = Array2::zeros((4, 131));
        linear(x.view(), ws[1].view(), None, None, want.view_mut()).unwrap();
        assert_eq!(y, want + ndarray::ArrayView1::from(&b));
    }

    #[test]
    fn linear_refuses_disagreeing_shapes() {
        let x = Array2::<f32>::zeros((2, 3));
        let w = Array2::<f32>::zeros((4, 5));
        let mut y = Array2::<f32>::zeros((2, 4));
        assert!(linear(x.view(), w.view(), None, None, y.view_mut()).is_err());
    }

    #[test]
    fn attention_matches_a_naive_f64_reference() {
        let (samples, t, heads, hd) = (2, 5, 3, 4);
        let d = heads * hd;
        let rows = samples * t;
        let gen = |seed: usize| -> Vec<f32> {
            (0..rows * d)
                .map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) * 0.1)
                .collect()
        };
        let (q, k, v) = (gen(1), gen(2), gen(3));
        // An additive bias [heads, t, t] on the scores (BEiT's relative position bias).
        let bias: Vec<f32> = (0..heads * t * t)
            .map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.05)
            .collect();
        let mut out = vec![0.0f32; rows * d];
        on_pool(2, || {
            attention(&q, &k, &v, (d, heads, t, t), Some(&bias), &mut out).unwrap()
        });
        let scale = 1.0 / (hd as f64).sqrt();
        for s in 0..samples {
            for h in 0..heads {
                let at = |m: &[f32], r: usize, c: usize| f64::from(m[(s * t + r) * d + h * hd + c]);
                for i in 0..t {
                    let sc: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..hd).map(|c| at(&q, i, c) * at(&k, j, c)).sum::<f64>() * scale
                                + f64::from(bias[(h * t + i) * t + j])
                        })
                        .collect();
                    let max = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|v| (v - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        let want: f64 = (0..t).map(|j| e[j] / z * at(&v, j, c)).sum();
                        let got = f64::from(out[(s * t + i) * d + h * hd + c]);
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{s} {h} {i} {c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // Only the first two tokens of each sample attending: their rows of the full result.
        let tq = 2;
        let lead = |m: &[f32]| -> Vec<f32> {
            m.chunks_exact(t * d)
                .flat_map(|sample| sample[..tq * d].to_vec())
                .collect()
        };
        let mut part = vec![0.0f32; samples * tq * d];
        on_pool(2, || {
            attention(&lead(&q), &k, &v, (d, heads, t, tq), Some(&bias), &mut part).unwrap()
        });
        for (got, want) in part.iter().zip(lead(&out)) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!(attention(&q, &k, &v, (d, heads, 4, 4), None, &mut out).is_err());
        assert!(attention(&q, &k, &v, (d, heads, t, t), Some(&bias[1..]), &mut out).is_err());
        assert!(attention(&q, &k, &v, (d, heads, t, tq), None, &mut out).is_err());
        assert!(attention(&q, &k, &v, (d, heads, t, t + 1), None, &mut out).is_err());
    }
}
