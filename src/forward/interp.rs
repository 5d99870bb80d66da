//! Position-embedding interpolation: PyTorch bicubic (`A = -0.75`, `align_corners=False`,
//! clamped edges, no antialias), separable, as `F.interpolate(mode="bicubic")`.

/// How to resample the position grid for inputs of another size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PosInterp {
    /// Current HF transformers: `size=(H//P, W//P)`.
    #[default]
    Hf,
    /// The original DINO algorithm: `scale_factor = ((H//P + 0.1)/√N, (W//P + 0.1)/√N)`.
    Dino,
    /// `F.interpolate(size=(H//P, W//P), mode="bicubic", antialias=True)`: Pillow's kernel
    /// (`A = -0.5`, widened by the scale when shrinking, normalised), as transformers'
    /// `Dinov2WithRegisters` does.
    Antialias,
}

const A: f64 = -0.75;

fn w1(t: f64) -> f64 {
    ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
}

fn w2(t: f64) -> f64 {
    ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A
}

/// Interpolation taps along one axis: for each output index, 4 (input index, weight) pairs.
/// `inv_scale` maps output to input coordinates (`in/out` for `size=`, `1/scale_factor` else).
fn taps(n_in: usize, n_out: usize, inv_scale: f64) -> Vec<[(usize, f64); 4]> {
    (0..n_out)
        .map(|o| {
            let src = (o as f64 + 0.5) * inv_scale - 0.5;
            let i0 = src.floor();
            let t = src - i0;
            let w = [w2(t + 1.0), w1(t), w1(1.0 - t), w2(2.0 - t)];
            let mut out = [(0usize, 0.0f64); 4];
            for (k, slot) in out.iter_mut().enumerate() {
                // An empty axis has no taps to clamp to; its index 0 reads nothing.
                let last = n_in.saturating_sub(1) as i64;
                let idx = (i0 as i64 - 1 + k as i64).clamp(0, last) as usize;
                *slot = (idx, w[k]);
            }
            out
        })
        .collect()
}

/// The taps of torch's antialiased bicubic (`_upsample_bicubic2d_aa`, Pillow's algorithm) along
/// one axis, for `size=`: the kernel `A = -0.5` stretched by the scale when shrinking, its taps
/// cut at the edges and normalised to sum to one.
fn taps_antialias(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f64)>> {
    const AA: f64 = -0.5;
    let filter = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            ((AA + 2.0) * x - (AA + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * AA
        } else {
            0.0
        }
    };
    let scale = n_in as f64 / n_out.max(1) as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..n_out)
        .map(|o| {
            let center = scale * (o as f64 + 0.5);
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(n_in);
            let mut w: Vec<(usize, f64)> = (lo..hi)
                .map(|j| (j, filter((j as f64 - center + 0.5) * inv)))
                .collect();
            let total: f64 = w.iter().map(|(_, x)| x).sum();
            if total != 0.0 {
                w.iter_mut().for_each(|(_, x)| *x /= total);
            }
            w
        })
        .collect()
}

/// Per output index along one axis: (input index, weight) pairs.
type Taps = Vec<Vec<(usize, f64)>>;

fn four(t: Vec<[(usize, f64); 4]>) -> Taps {
    t.into_iter().map(|r| r.to_vec()).collect()
}

/// Resamples a grid `[gh_in, gw_in, D]` (row-major, flattened) to `[gh_out, gw_out, D]`.
pub(crate) fn bicubic_grid(
    grid: &[f32],
    (gh_in, gw_in): (usize, usize),
    (gh_out, gw_out): (usize, usize),
    d: usize,
    mode: PosInterp,
) -> Vec<f32> {
    let (ty, tx): (Taps, Taps) = match mode {
        PosInterp::Hf => (
            four(taps(gh_in, gh_out, gh_in as f64 / gh_out as f64)),
            four(taps(gw_in, gw_out, gw_in as f64 / gw_out as f64)),
        ),
        // DINO passes scale_factor = (out + 0.1) / in; PyTorch maps with its reciprocal.
        PosInterp::Dino => (
            four(taps(gh_in, gh_out, gh_in as f64 / (gh_out as f64 + 0.1))),
            four(taps(gw_in, gw_out, gw_in as f64 / (gw_out as f64 + 0.1))),
        ),
        PosInterp::Antialias => (taps_antialias(gh_in, gh_out), taps_antialias(gw_in, gw_out)),
    };
    let mut out = vec![0f32; gh_out * gw_out * d];
    let mut acc = vec![0f64; d];
    for (oy, ry) in ty.iter().enumerate() {
        for (ox, rx) in tx.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for &(iy, wy) in ry {
                for &(ix, wx) in rx {
                    let wgt = wy * wx;
                    let base = (iy * gw_in + ix) * d;
                    let row = grid.get(base..base + d).unwrap_or(&[]);
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += wgt * f64::from(v);
                    }
                }
            }
            let o = (oy * gw_out + ox) * d;
            let dst_row = out.get_mut(o..o + d).unwrap_or(&mut []);
            for (dst, a) in dst_row.iter_mut().zip(&acc) {
                *dst = *a as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let g: Vec<f32> = (0..18).map(|v| v as f32 * 0.37).collect();
        let out = bicubic_grid(&g, (3, 3), (3, 3), 2, PosInterp::Hf);
        for (a, b) in out.iter().zip(&g) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn weights_sum_to_one() {
        for row in taps(5, 9, 5.0 / 9.0) {
            let s: f64 = row.iter().map(|(_, w)| w).sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn constant_grid_stays_constant() {
        let g = vec![2.5f32; 4 * 4];
        let out = bicubic_grid(&g, (4, 4), (7, 5), 1, PosInterp::Dino);
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-6));
    }

    /// torch 2.15 `F.interpolate(arange(9).view(1,1,3,3)·0.37, size, mode="bicubic",
    /// antialias=True)`, up to (5, 4) and down to (2, 2).
    #[test]
    fn antialias_matches_torch_up_and_down() {
        let g: Vec<f32> = (0..9).map(|v| v as f32 * 0.37).collect();
        let up = [
            -0.103_101_91,
            0.122_166_61,
            0.450_286_33,
            0.675_554_8,
            0.320_298_52,
            0.545_567_04,
            0.873_686_7,
            1.098_955_3,
            1.090_671_7,
            1.315_940_1,
            1.644_059_9,
            1.869_328_4,
            1.861_044_9,
            2.086_313_5,
            2.414_433_2,
            2.639_701_6,
            2.284_445,
            2.509_713_6,
            2.837_833_4,
            3.063_101_8,
        ];
        let out = bicubic_grid(&g, (3, 3), (5, 4), 1, PosInterp::Antialias);
        for (a, b) in out.iter().zip(up) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
        let down = [0.458_490_94, 0.969_245_4, 1.990_754_2, 2.501_508_7];
        let out = bicubic_grid(&g, (3, 3), (2, 2), 1, PosInterp::Antialias);
        for (a, b) in out.iter().zip(down) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}
