//! BEiT's relative position bias, as transformers computes it (`BeitRelativePositionBias` in
//! `modeling_beit.py`): a table of `(2·gh-1)·(2·gw-1) + 3` rows × heads, looked up by the 2-D
//! offset between two patches, plus three entries for class-to-patch, patch-to-class and
//! class-to-class. For an input grid other than the table's, the offset part of the table is
//! resampled bilinearly (`F.interpolate(mode="bilinear", align_corners=False)`) first, as
//! transformers does for every input size.

use crate::error::{ErrorKind, Result};

/// The bias `[heads, T, T]` (`T = gh·gw + 1`) for a `gh × gw` input grid from a table made for
/// a `w × w` grid (`table` row-major `[(2w-1)² + 3, heads]`); `index` is that grid's
/// [`relative_position_index`](crate::model::relative_position_index), computed once per forward pass for every layer's table.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when the table's size disagrees with `w` and `heads`, or the
/// index's with the grid.
pub(crate) fn bias(
    table: &[f32],
    heads: usize,
    w: usize,
    (gh, gw): (usize, usize),
    index: &[usize],
) -> Result<Vec<f32>> {
    let old_side = 2 * w - 1;
    let old_rows = old_side * old_side + 3;
    let t = gh * gw + 1;
    if w == 0 || gh == 0 || gw == 0 || table.len() != old_rows * heads || index.len() != t * t {
        return Err(ErrorKind::InvalidLayout {
            reason: format!(
                "a relative position bias table of {} values for a {w}x{w} grid and {heads} heads",
                table.len()
            ),
        }
        .into());
    }
    let (new_h, new_w) = (2 * gh - 1, 2 * gw - 1);
    let offsets = old_side * old_side;
    // transformers reshapes the offset rows to [1, old_w, old_h, heads] → [1, heads, old_w,
    // old_h] and resizes to (new_h, new_w); for the square tables BEiT has, old_w == old_h.
    let mut resized = vec![0f32; (new_h * new_w + 3) * heads];
    for hh in 0..heads {
        let plane: Vec<f32> = (0..offsets).map(|r| table[r * heads + hh]).collect();
        let out = bilinear(&plane, (old_side, old_side), (new_h, new_w));
        for (r, v) in out.into_iter().enumerate() {
            resized[r * heads + hh] = v;
        }
    }
    let new_offsets = new_h * new_w;
    resized[new_offsets * heads..].copy_from_slice(&table[offsets * heads..]);
    let mut out = vec![0f32; heads * t * t];
    for (k, &row) in index.iter().enumerate() {
        for hh in 0..heads {
            out[hh * t * t + k] = resized[row * heads + hh];
        }
    }
    Ok(out)
}

/// torch's `F.interpolate(x, size, mode="bilinear", align_corners=False)` (no antialiasing) of
/// one row-major plane.
fn bilinear(x: &[f32], (ih, iw): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    if (ih, iw) == (oh, ow) {
        return x.to_vec();
    }
    // torch's source index: (dst + 0.5) · in/out - 0.5, clamped below at 0; the upper
    // neighbour is clamped to the last row.
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ty, tx) = (taps(ih, oh), taps(iw, ow));
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, ly) in &ty {
        for &(x0, x1, lx) in &tx {
            let at = |y: usize, xx: usize| x[y * iw + xx];
            let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
            let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
            out.push((1.0 - ly) * top + ly * bottom);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::relative_position_index;

    #[test]
    fn index_matches_the_definition_for_a_2x3_grid() {
        let (gh, gw) = (2, 3);
        let index = relative_position_index(gh, gw);
        let t = 7;
        let side_w = 2 * gw - 1;
        let offsets = 3 * side_w;
        assert_eq!(index[0], offsets + 2);
        assert_eq!(index[1], offsets);
        assert_eq!(index[t], offsets + 1);
        // patch (0,0) to patch (1,2): dy = -1, dx = -2 → (dy+1)·5 + (dx+2) = 0
        assert_eq!(index[t + 1 + 5], 0);
        // patch (1,2) to patch (0,0): dy = 1, dx = 2 → 2·5 + 4 = 14
        assert_eq!(index[6 * t + 1], 14);
        // every patch to itself: the centre offset
        for i in 1..t {
            assert_eq!(index[i * t + i], (gh - 1) * side_w + gw - 1);
        }
    }

    #[test]
    fn bilinear_upsampling_of_a_ramp_stays_linear_inside() {
        let x: Vec<f32> = (0..3).map(|i| i as f32).collect();
        let y = bilinear(&x, (1, 3), (1, 6));
        // torch: F.interpolate(torch.arange(3.).view(1,1,1,3), size=(1,6), mode="bilinear")
        // = [0, 0.25, 0.75, 1.25, 1.75, 2] (align_corners=False clamps the ends)
        let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn bias_at_the_table_grid_is_a_plain_lookup() {
        let (w, heads) = (2, 2);
        let rows = 9 + 3;
        let table: Vec<f32> = (0..rows * heads).map(|i| i as f32).collect();
        let index = relative_position_index(2, 2);
        let b = bias(&table, heads, w, (2, 2), &index).unwrap();
        let t = 5;
        for hh in 0..heads {
            for k in 0..t * t {
                assert_eq!(b[hh * t * t + k], table[index[k] * heads + hh]);
            }
        }
        assert!(bias(&table, heads, 3, (2, 2), &index).is_err());
        assert!(bias(&table, heads, w, (2, 2), &index[1..]).is_err());
    }
}
