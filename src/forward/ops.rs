//! The forward pass's kernels, named after the PyTorch ops they mirror. They work on row-major
//! `[rows, features]` activations (every sample's tokens stacked), write into buffers the caller
//! allocated once per forward pass, and run on the current rayon pool: matrix products split
//! over output columns, attention over (sample, head) pairs, row-wise ops over rows.
//!
//! Numerics follow PyTorch's CPU kernels: f32 storage and products (matrixmultiply's sgemm),
//! LayerNorm statistics accumulated in f64, softmax with the row maximum subtracted and an exp
//! accurate to about one ulp, GELU through an erf accurate to a few ulp.

use ndarray::linalg::general_mat_mul;
use ndarray::parallel::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayView3, ArrayViewMut2, Axis, Zip};

/// Output columns per task are a multiple of this (the sgemm kernel's width).
const COLUMN_ALIGN: usize = 16;
/// Fewest output columns worth a task of their own.
const MIN_TASK_COLUMNS: usize = 64;
/// Tasks per pool thread for a matrix product (more than one balances a busy machine).
const TASKS_PER_THREAD: usize = 2;

/// `nn.LayerNorm(x; weight, bias, eps)` over each row, into `out` (statistics in f64).
pub(crate) fn layer_norm(
    x: ArrayView2<f32>,
    w: &[f32],
    b: &[f32],
    eps: f64,
    mut out: ArrayViewMut2<f32>,
) {
    let d = x.ncols() as f64;
    Zip::from(out.rows_mut())
        .and(x.rows())
        .par_for_each(|mut o, row| {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / d;
            let inv = 1.0 / (var + eps).sqrt();
            for (((o, &v), &wi), &bi) in o.iter_mut().zip(row).zip(w).zip(b) {
                *o = (((f64::from(v) - mean) * inv) as f32) * wi + bi;
            }
        });
}

/// Output columns per task for a product with `n` output columns on the current pool.
fn task_columns(n: usize) -> usize {
    let tasks = rayon::current_num_threads().max(1) * TASKS_PER_THREAD;
    let per = n.div_ceil(tasks).div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN;
    per.max(MIN_TASK_COLUMNS).min(n.max(1))
}

/// An activation applied inside [`linear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact (erf) GELU.
    GeluErf,
    /// tanh-approximated GELU.
    GeluTanh,
}

/// Adds `bias` to each row of `y` and applies `f`, row by row (contiguous rows vectorise).
fn bias_act(mut y: ArrayViewMut2<f32>, bias: &[f32], f: impl Fn(f32) -> f32) {
    for mut row in y.rows_mut() {
        match row.as_slice_mut() {
            Some(r) if r.len() == bias.len() => {
                for (v, &bi) in r.iter_mut().zip(bias) {
                    *v = f(*v + bi);
                }
            }
            _ => {
                for (v, &bi) in row.iter_mut().zip(bias) {
                    *v = f(*v + bi);
                }
            }
        }
    }
}

/// `nn.Linear` into `y`: `y = act(x · Wᵀ + b)` with `W` in PyTorch layout `[out, in]`, split
/// over output columns across the pool; the bias and activation are applied to each block
/// while it is still in cache.
pub(crate) fn linear(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    b: Option<&[f32]>,
    act: Option<Activation>,
    mut y: ArrayViewMut2<f32>,
) {
    let cols = task_columns(w.nrows());
    let zeros = vec![0.0f32; if b.is_none() { w.nrows() } else { 0 }];
    let b = b.unwrap_or(&zeros);
    y.axis_chunks_iter_mut(Axis(1), cols)
        .into_par_iter()
        .zip(w.axis_chunks_iter(Axis(0), cols).into_par_iter())
        .enumerate()
        .for_each(|(j, (mut yc, wc))| {
            general_mat_mul(1.0, &x, &wc.t(), 0.0, &mut yc);
            let start = j * cols;
            let bias = b.get(start..start + yc.ncols()).unwrap_or(&[]);
            match act {
                None => bias_act(yc, bias, |v| v),
                Some(Activation::GeluErf) => bias_act(yc, bias, gelu_erf),
                Some(Activation::GeluTanh) => bias_act(yc, bias, gelu_tanh),
            }
        });
}

/// `x += y`, element-wise (residual connections).
pub(crate) fn add_assign(mut x: ArrayViewMut2<f32>, y: ArrayView2<f32>) {
    Zip::from(x.rows_mut())
        .and(y.rows())
        .par_for_each(|mut xr, yr| xr += &yr);
}

/// `erf` in f32: the rational approximation Eigen and XLA use for float (a few ulp), clamped to
/// ±4 where erf is 1 to f32 precision. Branch-free, so loops over it vectorise.
#[allow(clippy::excessive_precision)]
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
pub(crate) fn gelu_erf(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// tanh-approximated GELU, as HF `gelu_pytorch_tanh` / `gelu_new` and JAX `nn.gelu`.
pub(crate) fn gelu_tanh(v: f32) -> f32 {
    let x = f64::from(v);
    let c = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// `1.5 · 2²³`: adding it rounds an f32 in (-2²², 2²²) to an integer, in its low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `exp` in f32 (Cephes' expf: range reduction by ln 2 and a degree-6 polynomial, about one
/// ulp), flushing to 0 below -87 where the result would be subnormal. Branch-free and without
/// library calls, so the softmax loop vectorises. (Constants as Cephes publishes them.)
#[allow(clippy::excessive_precision)]
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

/// Softmax over each row, in f32 with the row maximum subtracted (as torch does).
pub(crate) fn softmax_rows(mut x: ArrayViewMut2<f32>) {
    for mut row in x.rows_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if let Some(r) = row.as_slice_mut() {
            for v in r.iter_mut() {
                *v = exp_f32(*v - max);
            }
        } else {
            row.mapv_inplace(|v| exp_f32(v - max));
        }
        let sum: f32 = row.iter().sum();
        row.mapv_inplace(|v| v / sum);
    }
}

/// Multi-head self-attention (eager path) for `samples` stacked samples of `t` tokens: per
/// sample and head, `softmax(q·kᵀ · hd^-0.5) · v`, heads concatenated along the feature axis,
/// into `out`. Each (sample, head) pair is one task with its own score buffer.
pub(crate) fn attention(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    heads: usize,
    t: usize,
    mut out: ArrayViewMut2<f32>,
) {
    let d = q.ncols();
    let hd = d / heads.max(1);
    let scale = (hd as f64).powf(-0.5) as f32;
    let per_sample = d / hd.max(1);
    let tasks: Vec<_> = out
        .exact_chunks_mut((t.max(1), hd.max(1)))
        .into_iter()
        .enumerate()
        .map(|(i, head)| (i / per_sample.max(1), i % per_sample.max(1), head))
        .collect();
    tasks.into_par_iter().for_each_init(
        || Array2::<f32>::zeros((t, t)),
        |scores, (s, h, mut head)| {
            let rows = s * t..(s + 1) * t;
            let cols = h * hd..(h + 1) * hd;
            let qh = q.slice(ndarray::s![rows.clone(), cols.clone()]);
            let kh = k.slice(ndarray::s![rows.clone(), cols.clone()]);
            let vh = v.slice(ndarray::s![rows, cols]);
            general_mat_mul(scale, &qh, &kh.t(), 0.0, scores);
            softmax_rows(scores.view_mut());
            general_mat_mul(1.0, scores, &vh, 0.0, &mut head);
        },
    );
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
    use ndarray::array;

    #[test]
    fn layer_norm_normalises_each_row() {
        let x = array![[1.0f32, 2.0, 3.0, 4.0]];
        let mut y = Array2::zeros((1, 4));
        layer_norm(x.view(), &[1.0; 4], &[0.0; 4], 0.0, y.view_mut());
        let mean: f32 = y.sum() / 4.0;
        assert!(mean.abs() < 1e-6);
        assert!((y[[0, 3]] - 1.341_640_8).abs() < 1e-5);
    }

    #[test]
    fn gelu_forms_agree_near_zero_and_differ_slightly_elsewhere() {
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
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
        let mut x = array![[1000.0f32, 1000.0], [0.0, 1.0]];
        softmax_rows(x.view_mut());
        assert!((x[[0, 0]] - 0.5).abs() < 1e-7);
        assert!((x.row(1).sum() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn linear_split_over_columns_equals_one_product() {
        let x = Array2::from_shape_fn((5, 7), |(i, j)| (i * 7 + j) as f32 * 0.1 - 1.0);
        let w = Array2::from_shape_fn((150, 7), |(i, j)| ((i * 3 + j) % 11) as f32 * 0.05);
        let b: Vec<f32> = (0..150).map(|i| i as f32 * 0.01).collect();
        let mut y = Array2::zeros((5, 150));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build();
        let mut run = || linear(x.view(), w.view(), Some(&b), None, y.view_mut());
        match pool {
            Ok(p) => p.install(run),
            Err(_) => run(),
        }
        let want = x.dot(&w.t()) + &Array2::from_shape_vec((1, 150), b).unwrap_or_default();
        assert_eq!(y, want);
    }
}
