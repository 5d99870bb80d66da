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

/// Resamples a grid `[gh_in, gw_in, D]` (row-major, flattened) to `[gh_out, gw_out, D]`.
pub(crate) fn bicubic_grid(
    grid: &[f32],
    (gh_in, gw_in): (usize, usize),
    (gh_out, gw_out): (usize, usize),
    d: usize,
    mode: PosInterp,
) -> Vec<f32> {
    let (sy, sx) = match mode {
        PosInterp::Hf => (gh_in as f64 / gh_out as f64, gw_in as f64 / gw_out as f64),
        PosInterp::Dino => {
            // DINO passes scale_factor = (out + 0.1) / in; PyTorch maps with its reciprocal.
            (
                gh_in as f64 / (gh_out as f64 + 0.1),
                gw_in as f64 / (gw_out as f64 + 0.1),
            )
        }
    };
    let ty = taps(gh_in, gh_out, sy);
    let tx = taps(gw_in, gw_out, sx);
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
}
