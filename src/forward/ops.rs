//! Small pure functions named after the PyTorch ops they mirror. Each works on one sample.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};

/// `nn.LayerNorm(x; weight, bias, eps)` over the last axis (statistics accumulated in f64).
pub(crate) fn layer_norm(
    x: ArrayView2<f32>,
    w: &Array1<f32>,
    b: &Array1<f32>,
    eps: f64,
) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(x.raw_dim());
    let d = x.ncols() as f64;
    for (row, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
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
    }
    out
}

/// `nn.Linear`: `x · Wᵀ + b` with `W` in PyTorch layout `[out, in]`.
pub(crate) fn linear(x: ArrayView2<f32>, w: &Array2<f32>, b: Option<&Array1<f32>>) -> Array2<f32> {
    let mut y = x.dot(&w.t());
    if let Some(b) = b {
        y += b;
    }
    y
}

/// Exact (erf) GELU, as `nn.GELU()` / HF `gelu`.
pub(crate) fn gelu_erf(v: f32) -> f32 {
    let x = f64::from(v);
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// tanh-approximated GELU, as HF `gelu_pytorch_tanh` / `gelu_new` and JAX `nn.gelu`.
pub(crate) fn gelu_tanh(v: f32) -> f32 {
    let x = f64::from(v);
    let c = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// Softmax over each row, in f32 with the row maximum subtracted (as torch does).
pub(crate) fn softmax_rows(x: &mut Array2<f32>) {
    for mut row in x.rows_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// Multi-head self-attention (eager path): per head, `softmax(q·kᵀ · hd^-0.5) · v`, heads
/// concatenated along the feature axis.
pub(crate) fn attention(
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    heads: usize,
) -> Array2<f32> {
    let (t, d) = q.dim();
    let hd = d / heads;
    let scale = (hd as f64).powf(-0.5) as f32;
    let mut out = Array2::<f32>::zeros((t, d));
    for h in 0..heads {
        let cols = s![.., h * hd..(h + 1) * hd];
        let qh = q.slice(cols);
        let kh = k.slice(cols);
        let vh = v.slice(cols);
        let mut scores = qh.dot(&kh.t());
        scores *= scale;
        softmax_rows(&mut scores);
        out.slice_mut(cols).assign(&scores.dot(&vh));
    }
    out
}

/// `Conv2d(C, D, kernel=P, stride=P)` on one image `[C, H, W]` as patches · Wᵀ, returning
/// `[N, D]` with patches in row-major (row, col) order, as `flatten(2).transpose(1, 2)`.
/// Rows and columns that do not fill a whole patch are dropped, as the convolution does.
pub(crate) fn patch_embed(
    img: ndarray::ArrayView3<f32>,
    w: &Array2<f32>,
    b: &Array1<f32>,
    p: usize,
) -> Array2<f32> {
    let (c, h, wd) = img.dim();
    let (gh, gw) = (h / p, wd / p);
    let mut patches = Array2::<f32>::zeros((gh * gw, c * p * p));
    for r in 0..gh {
        for col in 0..gw {
            let mut row = patches.row_mut(r * gw + col);
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
    linear(patches.view(), w, Some(b))
}

/// `tanh(x · Wᵀ + b)` on the class token: HF `ViTPooler`.
pub(crate) fn pooler(cls: ArrayView1<f32>, w: &Array2<f32>, b: &Array1<f32>) -> Array1<f32> {
    let y = linear(cls.insert_axis(Axis(0)), w, Some(b));
    y.row(0).mapv(f32::tanh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn layer_norm_normalises_each_row() {
        let x = array![[1.0f32, 2.0, 3.0, 4.0]];
        let y = layer_norm(x.view(), &Array1::ones(4), &Array1::zeros(4), 0.0);
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
    fn softmax_rows_sum_to_one() {
        let mut x = array![[1000.0f32, 1000.0], [0.0, 1.0]];
        softmax_rows(&mut x);
        assert!((x[[0, 0]] - 0.5).abs() < 1e-7);
        assert!((x.row(1).sum() - 1.0).abs() < 1e-6);
    }
}
