//! The forward pass over a loaded [`Model`]: embeddings (patches, class/distillation tokens,
//! absolute positions resampled as transformers does), the encoder (relative position bias,
//! layer scale, the residual adds fused with the next LayerNorm), then the poolers and heads.

use ndarray::{concatenate, s, Array2, Array3, ArrayView1, ArrayView2, ArrayView4, Axis};

use super::weights::{Resolved, P};
use super::{budget, interp, ops, relpos, ForwardOptions, ForwardOutput, Linear, Model, Norm};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, Activation, Mlp, ModelType};
use crate::progress::{NoProgress, Progress, Stage};

/// `p` as a `[rows, cols]` matrix.
fn mat<'a>(w: &Resolved<'a>, p: P, rows: usize, cols: usize) -> Result<ArrayView2<'a, f32>> {
    ArrayView2::from_shape((rows, cols), w.get(p)).map_err(|e| {
        ErrorKind::InvalidLayout {
            reason: format!("parameter of {rows}x{cols}: {e}"),
        }
        .into()
    })
}

/// `p` as a vector of `n`.
fn vector<'a>(w: &Resolved<'a>, p: P, n: usize) -> Result<&'a [f32]> {
    let v = w.get(p);
    if v.len() != n {
        return Err(ErrorKind::InvalidLayout {
            reason: format!("parameter of {} values, expected {n}", v.len()),
        }
        .into());
    }
    Ok(v)
}

/// Linear layer `l` into `y`, as one product of an [`ops::linears`] group.
fn product<'a>(
    w: &Resolved<'a>,
    l: &Linear,
    y: ndarray::ArrayViewMut2<'a, f32>,
) -> Result<ops::Product<'a>> {
    Ok(ops::Product {
        w: mat(w, l.w, l.out, l.inp)?,
        b: match l.b {
            Some(b) => Some(vector(w, b, l.out)?),
            None => None,
        },
        y,
    })
}

/// The values of a standard-layout activation matrix.
fn slice(a: &Array2<f32>) -> Result<&[f32]> {
    a.as_slice().ok_or_else(not_contiguous)
}

/// The values of a standard-layout activation matrix, mutably.
fn slice_mut(a: &mut Array2<f32>) -> Result<&mut [f32]> {
    a.as_slice_mut().ok_or_else(not_contiguous)
}

fn not_contiguous() -> Error {
    ErrorKind::InvalidLayout {
        reason: "activations are not contiguous".into(),
    }
    .into()
}

/// [`ops::attention`] over standard-layout activation matrices `[rows, d]`, with an optional
/// additive bias `[heads, t, t]` on the scores.
fn attention(
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    (heads, t, tq): (usize, usize, usize),
    bias: Option<&[f32]>,
    out: &mut Array2<f32>,
) -> Result<()> {
    let d = q.ncols();
    ops::attention(
        slice(q)?,
        slice(k)?,
        slice(v)?,
        (d, heads, t, tq),
        bias,
        slice_mut(out)?,
    )
}

impl Model {
    /// The absolute position embeddings for an `h × w` input (`pos` as stored): as stored at
    /// the model's size, else resampled as transformers does (ViT/DeiT only with
    /// `interpolate_pos_encoding`; BEiT at every size, as `BeitEmbeddings` always does).
    fn position_embeddings(
        &self,
        pos: ArrayView2<f32>,
        h: usize,
        w: usize,
        opts: &ForwardOptions,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let p = cfg.patch_size;
        let prefix = cfg.architecture.prefix_tokens();
        let n_pos = pos.nrows().saturating_sub(prefix);
        let (gh, gw) = (h / p, w / p);
        if !self.any_size(opts) {
            if h != cfg.image_size || w != cfg.image_size {
                return Err(size_needs_interpolation(h, w, cfg.image_size));
            }
            return Ok(pos.to_owned());
        }
        if gh * gw == n_pos && h == w {
            return Ok(pos.to_owned());
        }
        let s = model::square_root(n_pos)
            .filter(|&s| s > 0)
            .ok_or_else(|| ErrorKind::Config {
                reason: format!("{n_pos} position rows do not form a square grid"),
            })?;
        let d = cfg.hidden_size;
        let grid: Vec<f32> = pos.slice(s![prefix.., ..]).iter().copied().collect();
        let out = interp::bicubic_grid(&grid, (s, s), (gh, gw), d, self.pos_interp(opts));
        let out =
            Array2::from_shape_vec((gh * gw, d), out).map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?;
        Ok(
            concatenate(Axis(0), &[pos.slice(s![..prefix, ..]), out.view()]).map_err(|e| {
                ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                }
            })?,
        )
    }

    /// Whether inputs of another size than `image_size` run: with `interpolate_pos_encoding`,
    /// and always for BEiT (transformers' BEiT resamples its position embeddings and relative
    /// position bias for every input size).
    fn any_size(&self, opts: &ForwardOptions) -> bool {
        let family = self.config.architecture.family();
        opts.interpolate_pos_encoding || family == ModelType::Beit || family.is_dinov2()
    }

    /// How the position grid is resampled: DINOv2 by its own rule (bicubic to the input's grid;
    /// with registers antialiased, as transformers does), the others as `opts` says.
    fn pos_interp(&self, opts: &ForwardOptions) -> interp::PosInterp {
        match self.config.architecture.family() {
            ModelType::Dinov2 => interp::PosInterp::Hf,
            ModelType::Dinov2WithRegisters => interp::PosInterp::Antialias,
            _ => opts.pos_interp,
        }
    }

    /// Runs the model on a batch `[B, C, H, W]` of float32 pixels.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidOption`] when the channel count differs, or the size differs from
    /// `image_size` without `interpolate_pos_encoding` (as HF does).
    pub fn forward(&self, pixels: ArrayView4<f32>, opts: &ForwardOptions) -> Result<ForwardOutput> {
        self.forward_with_progress(pixels, opts, &NoProgress)
    }

    /// [`Model::forward`], reporting each encoder layer run to `progress` ([`Stage::Forward`]:
    /// `layers × batch` units).
    ///
    /// ```
    /// use vit_convert::{forward::ForwardOptions, progress::NoProgress, verify::F32Array, Model};
    /// let model = Model::load("fixtures/convert/timm_vit/hf")?;
    /// let x = F32Array::read_npy("fixtures/convert/timm_vit/io/input.npy")?;
    /// let out = model.forward_with_progress(x.as_nchw()?, &ForwardOptions::default(), &NoProgress)?;
    /// assert_eq!(out.logits.map(|l| l.ncols()), Some(5));
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn forward_with_progress(
        &self,
        pixels: ArrayView4<f32>,
        opts: &ForwardOptions,
        progress: &dyn Progress,
    ) -> Result<ForwardOutput> {
        budget::check_forward_tokens(&self.config, pixels.dim(), &opts.limits)?;
        budget::check_forward_bytes(&self.config, pixels.dim(), &opts.limits)?;
        let w = self.weights.resolve()?;
        self.start_prefetch();
        match &self.pool {
            Some(pool) => pool.install(|| self.run(&w, pixels, opts, progress)),
            None => self.run(&w, pixels, opts, progress),
        }
    }

    /// `x · Wᵀ + b` (then `act`) for one of the model's linear layers, into `y`.
    fn linear(
        &self,
        w: &Resolved<'_>,
        l: &Linear,
        x: ArrayView2<f32>,
        act: Option<Activation>,
        y: ndarray::ArrayViewMut2<f32>,
    ) -> Result<()> {
        ops::linears(x, vec![product(w, l, y)?], act)
    }

    /// The residual connection `x += y` (when given), then `hn = LayerNorm(x)` with `nm`.
    fn add_norm(
        &self,
        w: &Resolved<'_>,
        nm: Option<&Norm>,
        x: &mut Array2<f32>,
        y: Option<&Array2<f32>>,
        hn: &mut Array2<f32>,
    ) -> Result<()> {
        let d = self.config.hidden_size;
        let y = match y {
            Some(y) => Some(slice(y)?),
            None => None,
        };
        let Some(nm) = nm else {
            // No norm (BEiT with mean pooling ends without one): `hn = x += y`.
            let x = slice_mut(x)?;
            if let Some(y) = y {
                for (a, b) in x.iter_mut().zip(y) {
                    *a += b;
                }
            }
            slice_mut(hn)?.copy_from_slice(x);
            return Ok(());
        };
        let (nw, nb) = (vector(w, nm.w, d)?, vector(w, nm.b, d)?);
        let eps = self.config.layer_norm_eps;
        ops::add_layer_norm(slice_mut(x)?, y, nw, nb, eps, slice_mut(hn)?)
    }

    /// A head or the pooler on `tokens` (`[samples, in]`).
    fn head(&self, w: &Resolved<'_>, l: &Linear, tokens: &Array2<f32>) -> Result<Array2<f32>> {
        let mut y = Array2::zeros((tokens.nrows(), l.out));
        self.linear(w, l, tokens.view(), None, y.view_mut())?;
        Ok(y)
    }

    fn run(
        &self,
        w: &Resolved<'_>,
        pixels: ArrayView4<f32>,
        opts: &ForwardOptions,
        progress: &dyn Progress,
    ) -> Result<ForwardOutput> {
        let cfg = &self.config;
        let (b, c, h, wd) = pixels.dim();
        if c != cfg.num_channels {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "input has {c} channels, the model expects {}",
                    cfg.num_channels
                ),
            }
            .into());
        }
        let p = cfg.patch_size;
        let (gh, gw) = (h / p, wd / p);
        if gh == 0 || gw == 0 {
            return Err(ErrorKind::InvalidOption {
                reason: format!("input {h}x{wd} is smaller than one {p}x{p} patch"),
            }
            .into());
        }
        if !self.any_size(opts) && (h != cfg.image_size || wd != cfg.image_size) {
            return Err(size_needs_interpolation(h, wd, cfg.image_size));
        }
        let d = cfg.hidden_size;
        let pos = match self.pos {
            Some(pp) => {
                Some(self.position_embeddings(mat(w, pp, self.pos_rows, d)?, h, wd, opts)?)
            }
            None => None,
        };
        let t = gh * gw + cfg.architecture.prefix_tokens() + cfg.encoder.registers;
        let x = self.embed(w, pixels, pos.as_ref(), t)?;
        // With `heads_only`, the last layer runs for the tokens the outputs read.
        let kept = self
            .head_rows()
            .filter(|&r| opts.heads_only && r < t && !self.layers.is_empty());
        let last = self.encoder(w, x, (t, kept), b, (gh, gw), progress)?;
        let tl = kept.unwrap_or(t);
        let heads = self.heads(w, &last, tl)?;
        let last_hidden_state = if kept.is_some() {
            Array3::zeros((b, 0, d))
        } else {
            last.into_shape_with_order((b, t, d))
                .map_err(|e| ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                })?
        };
        progress.finish();
        Ok(ForwardOutput {
            last_hidden_state,
            logits: heads.logits,
            cls_logits: heads.cls_logits,
            distillation_logits: heads.distillation_logits,
            pooler_output: heads.pooler_output,
            token_logits: heads.token_logits,
            image_embeds: heads.image_embeds,
        })
    }

    /// The embeddings: per sample, `[cls, (dist,) conv(patches) + bias] (+ pos)`, stacked into
    /// one `[samples × t, D]` matrix (`pos`, when given, has one row per token).
    fn embed(
        &self,
        w: &Resolved<'_>,
        pixels: ArrayView4<f32>,
        pos: Option<&Array2<f32>>,
        t: usize,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let (b, _, h, wd) = pixels.dim();
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let prefix = cfg.architecture.prefix_tokens();
        let regs = cfg.encoder.registers;
        let n = (h / p) * (wd / p);
        // Positions cover the prefix and patch tokens; register tokens have none.
        if n + prefix + regs != t || pos.is_some_and(|pos| pos.nrows() != n + prefix) {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "{} tokens but {} position embeddings",
                    n + prefix,
                    pos.map_or(t, Array2::nrows)
                ),
            }
            .into());
        }
        let too_big = || -> Error {
            ErrorKind::InvalidOption {
                reason: format!("a batch of {b} images of {h}x{wd} is too large"),
            }
            .into()
        };
        let rows = b.checked_mul(t).ok_or_else(too_big)?;
        let patch_rows = b.checked_mul(n).ok_or_else(too_big)?;

        let mut patches = Array2::<f32>::zeros((patch_rows, self.patch.inp));
        for (s, block) in patches.axis_chunks_iter_mut(Axis(0), n.max(1)).enumerate() {
            ops::patches(pixels.index_axis(Axis(0), s), p, block);
        }
        let mut emb = Array2::<f32>::zeros((patch_rows, d));
        self.linear(w, &self.patch, patches.view(), None, emb.view_mut())?;
        drop(patches);
        let cls = match self.cls {
            Some(c) => Some(vector(w, c, d)?),
            None => None,
        };
        let dist = match self.dist {
            Some(dt) => Some(vector(w, dt, d)?),
            None => None,
        };
        let registers = match self.registers {
            Some(r) => Some(mat(w, r, regs, d)?),
            None => None,
        };
        let mut x = Array2::<f32>::zeros((rows, d));
        for (mut block, e) in x
            .axis_chunks_iter_mut(Axis(0), t.max(1))
            .zip(emb.axis_chunks_iter(Axis(0), n.max(1)))
        {
            if let Some(cls) = cls {
                block.row_mut(0).assign(&ArrayView1::from(cls));
            }
            if let Some(dt) = dist {
                block.row_mut(1).assign(&ArrayView1::from(dt));
            }
            block.slice_mut(s![prefix + regs.., ..]).assign(&e);
            if let Some(pos) = pos {
                // The prefix rows, then the patch rows (after the registers).
                let mut head = block.slice_mut(s![..prefix, ..]);
                head += &pos.slice(s![..prefix, ..]);
                let mut tail = block.slice_mut(s![prefix + regs.., ..]);
                tail += &pos.slice(s![prefix.., ..]);
            }
            // Register tokens go in after the class token, after the positions (DINOv2).
            if let Some(r) = &registers {
                block.slice_mut(s![prefix..prefix + regs, ..]).assign(r);
            }
        }
        Ok(x)
    }

    /// The relative position bias `[H, t, t]` of `table` for a `grid` input.
    fn relative_bias(
        &self,
        w: &Resolved<'_>,
        table: P,
        grid: (usize, usize),
        index: &[usize],
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        relpos::bias(
            w.get(table),
            cfg.num_attention_heads,
            cfg.grid(),
            grid,
            index,
        )
    }

    /// The encoder over the embeddings `x` (`b` samples of `t` tokens from a `grid` of
    /// patches): the pre-LN blocks, then the final LayerNorm when the model has one. Returns the
    /// last hidden state, `[b × t, D]`.
    fn encoder(
        &self,
        w: &Resolved<'_>,
        mut x: Array2<f32>,
        (t, kept): (usize, Option<usize>),
        b: usize,
        grid: (usize, usize),
        progress: &dyn Progress,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let (rows, d) = x.dim();
        let heads = cfg.num_attention_heads;
        let mut hn = Array2::<f32>::zeros((rows, d));
        let mut q = Array2::<f32>::zeros((rows, d));
        let mut k = Array2::<f32>::zeros((rows, d));
        let mut v = Array2::<f32>::zeros((rows, d));
        let mut a = Array2::<f32>::zeros((rows, d));
        let mut y = Array2::<f32>::zeros((rows, d));
        let (mut inter, mut gated) = self.mlp_buffers(rows);
        // The relative position index of the input's grid: one for every layer's table.
        let index =
            if self.shared_relative.is_some() || self.layers.iter().any(|l| l.relative.is_some()) {
                model::relative_position_index(grid.0, grid.1)
            } else {
                Vec::new()
            };
        let shared = match self.shared_relative {
            Some(table) => Some(self.relative_bias(w, table, grid, &index)?),
            None => None,
        };
        let layers = u64::try_from(self.layers.len()).unwrap_or(u64::MAX);
        let samples = u64::try_from(b).unwrap_or(u64::MAX);
        progress.start(Stage::Forward, layers.saturating_mul(samples));
        if let Some(pn) = &self.pre_norm {
            // CLIP normalises the embeddings before the first layer.
            self.add_norm(w, Some(pn), &mut x, None, &mut hn)?;
            std::mem::swap(&mut x, &mut hn);
        }
        if let Some(first) = self.layers.first() {
            self.add_norm(w, Some(&first.ln1), &mut x, None, &mut hn)?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let own = match l.relative {
                Some(table) => Some(self.relative_bias(w, table, grid, &index)?),
                None => None,
            };
            if let Some(r) = kept.filter(|_| i + 1 == self.layers.len()) {
                let bias = own.as_deref().or(shared.as_deref());
                let out = self.last_layer_rows(w, l, (&x, &hn), (t, r), bias, (&mut k, &mut v))?;
                progress.advance(samples);
                return Ok(out);
            }
            // q, k and v in one parallel region.
            let qkv = vec![
                product(w, &l.q, q.view_mut())?,
                product(w, &l.k, k.view_mut())?,
                product(w, &l.v, v.view_mut())?,
            ];
            ops::linears(hn.view(), qkv, None)?;
            let bias = own.as_deref().or(shared.as_deref());
            attention(&q, &k, &v, (heads, t, t), bias, &mut a)?;
            self.linear(w, &l.o, a.view(), None, y.view_mut())?;
            if let Some([l1, _]) = l.lambda {
                scale_rows(&mut y, vector(w, l1, d)?)?;
            }
            self.add_norm(w, Some(&l.ln2), &mut x, Some(&y), &mut hn)?;
            self.mlp(w, l, &hn, (&mut inter, gated.as_mut()), &mut y)?;
            // The residual add, fused with the next layer's first LayerNorm (or the final one).
            let next = match self.layers.get(i + 1) {
                Some(nl) => Some(&nl.ln1),
                None => self.ln.as_ref(),
            };
            self.add_norm(w, next, &mut x, Some(&y), &mut hn)?;
            progress.advance(samples);
        }
        // The last layer's residual add already applied the final LayerNorm into `hn`.
        if self.layers.is_empty() {
            self.add_norm(w, self.ln.as_ref(), &mut x, None, &mut hn)?;
        }
        Ok(hn)
    }

    /// The last layer for the first `r` of each sample's `t` tokens (`x` the residual stream,
    /// `hn` its first LayerNorm, both `[samples·t, D]`): keys and values over every token,
    /// everything else over the kept rows; ends with the final LayerNorm. Returns
    /// `[samples·r, D]`. `k` and `v` are the encoder's `[samples·t, D]` buffers.
    fn last_layer_rows(
        &self,
        w: &Resolved<'_>,
        l: &super::Layer,
        (x, hn): (&Array2<f32>, &Array2<f32>),
        (t, r): (usize, usize),
        bias: Option<&[f32]>,
        (k, v): (&mut Array2<f32>, &mut Array2<f32>),
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let d = cfg.hidden_size;
        let rows = x.nrows() / t.max(1) * r;
        ops::linears(
            hn.view(),
            vec![
                product(w, &l.k, k.view_mut())?,
                product(w, &l.v, v.view_mut())?,
            ],
            None,
        )?;
        let hn_r = sample_rows(hn.view(), t, 0..r);
        let mut q = Array2::<f32>::zeros((rows, d));
        self.linear(w, &l.q, hn_r.view(), None, q.view_mut())?;
        let mut a = Array2::<f32>::zeros((rows, d));
        attention(&q, k, v, (cfg.num_attention_heads, t, r), bias, &mut a)?;
        let mut y = Array2::<f32>::zeros((rows, d));
        self.linear(w, &l.o, a.view(), None, y.view_mut())?;
        if let Some([l1, _]) = l.lambda {
            scale_rows(&mut y, vector(w, l1, d)?)?;
        }
        let mut x_r = sample_rows(x.view(), t, 0..r);
        let mut h = Array2::<f32>::zeros((rows, d));
        self.add_norm(w, Some(&l.ln2), &mut x_r, Some(&y), &mut h)?;
        let (mut inter, mut gated) = self.mlp_buffers(rows);
        self.mlp(w, l, &h, (&mut inter, gated.as_mut()), &mut y)?;
        self.add_norm(w, self.ln.as_ref(), &mut x_r, Some(&y), &mut h)?;
        Ok(h)
    }

    /// The MLP's buffers for `rows` rows: `[rows, M]`, and for SwiGLU the packed `[rows, 2·M]`.
    fn mlp_buffers(&self, rows: usize) -> (Array2<f32>, Option<Array2<f32>>) {
        let m = self.config.intermediate_size;
        let gated = match self.config.encoder.mlp {
            Mlp::Standard => None,
            Mlp::SwiGlu => Some(Array2::<f32>::zeros((rows, m.saturating_mul(2)))),
        };
        (Array2::<f32>::zeros((rows, m)), gated)
    }

    /// Layer `l`'s MLP on the normed rows `h`, into `y`: fc1 with the activation (or SwiGLU:
    /// silu(gate) · up, the gate's columns first, through `gated`), fc2, then layer scale.
    fn mlp(
        &self,
        w: &Resolved<'_>,
        l: &super::Layer,
        h: &Array2<f32>,
        (inter, gated): (&mut Array2<f32>, Option<&mut Array2<f32>>),
        y: &mut Array2<f32>,
    ) -> Result<()> {
        let cfg = &self.config;
        match gated {
            None => self.linear(w, &l.fc1, h.view(), Some(cfg.hidden_act), inter.view_mut())?,
            Some(g) => {
                self.linear(w, &l.fc1, h.view(), None, g.view_mut())?;
                ops::swiglu(slice(g)?, slice_mut(inter)?, cfg.intermediate_size);
            }
        }
        self.linear(w, &l.fc2, inter.view(), None, y.view_mut())?;
        if let Some([_, l2]) = l.lambda {
            scale_rows(y, vector(w, l2, cfg.hidden_size)?)?;
        }
        Ok(())
    }

    /// How many leading tokens per sample every output besides `last_hidden_state` reads, when
    /// that is fewer than all ([`ForwardOptions::heads_only`]): the class token for poolers and
    /// CLIP / DINOv2 / BEiT class-token pooling, one token per head for ViT and DeiT. `None` when
    /// some output reads every token, or there is no output but `last_hidden_state`.
    fn head_rows(&self) -> Option<usize> {
        let family = self.config.architecture.family();
        if self.map_head.is_some() || self.lm_head.is_some() || self.pooler_norm.is_some() {
            return None;
        }
        if self.post_norm.is_some() {
            return Some(1);
        }
        if family.is_dinov2() {
            // The classifier reads the mean of the patch tokens too.
            return self.heads.is_empty().then_some(1);
        }
        if family == ModelType::Beit {
            // Class-token pooling (mean pooling returned above).
            return Some(1);
        }
        let pooler = usize::from(self.pooler.is_some());
        match self.heads.len().max(pooler) {
            0 => None,
            n => Some(n),
        }
    }

    /// The pooler and the heads on the last hidden state (`t` tokens per sample).
    fn heads(&self, w: &Resolved<'_>, last: &Array2<f32>, t: usize) -> Result<Heads> {
        let d = self.config.hidden_size;
        let mut out = Heads::default();
        if let Some(pl) = &self.pooler {
            let mut o = self.head(w, pl, &token_rows(last.view(), 0, t))?;
            o.mapv_inplace(f32::tanh);
            out.pooler_output = Some(o);
        }
        // What the classifier reads: BEiT's pooled output (the normed mean of the patch tokens,
        // or the class token), else the class (or distillation) token.
        let family = self.config.architecture.family();
        if let Some(pn) = &self.post_norm {
            // CLIP: pooler_output = post_layernorm(class token); image_embeds its projection.
            let mut cls = token_rows(last.view(), 0, t);
            let mut pooled = Array2::<f32>::zeros(cls.dim());
            self.add_norm(w, Some(pn), &mut cls, None, &mut pooled)?;
            if let Some(proj) = &self.projection {
                out.image_embeds = Some(self.head(w, proj, &pooled)?);
            }
            out.pooler_output = Some(pooled);
            return Ok(out);
        }
        if let Some(mh) = &self.map_head {
            out.pooler_output = Some(self.map_pool(w, mh, last, t)?);
            return Ok(out);
        }
        if family.is_dinov2() {
            // pooler_output: the normed class token; the classifier reads it beside the mean
            // of the patch tokens (after the registers).
            let cls = token_rows(last.view(), 0, t);
            out.pooler_output = Some(cls.clone());
            if let Some(hd) = self.heads.first() {
                let skip = self.config.architecture.prefix_tokens() + self.config.encoder.registers;
                let mean = mean_patch_tokens(last.view(), skip, t);
                let input = concatenate(Axis(1), &[cls.view(), mean.view()]).map_err(|e| {
                    ErrorKind::InvalidLayout {
                        reason: e.to_string(),
                    }
                })?;
                out.logits = Some(self.head(w, hd, &input)?);
            }
            return Ok(out);
        }
        let pooled = match &self.pooler_norm {
            Some(nm) => {
                let mean =
                    mean_patch_tokens(last.view(), self.config.architecture.prefix_tokens(), t);
                let mut normed = Array2::<f32>::zeros(mean.dim());
                let mut x = mean;
                self.add_norm(w, Some(nm), &mut x, None, &mut normed)?;
                Some(normed)
            }
            // BEiT without mean pooling pools the class token; the masked-image-modelling class
            // has no pooler.
            None if self.config.architecture.family() == ModelType::Beit
                && self.lm_head.is_none() =>
            {
                Some(token_rows(last.view(), 0, t))
            }
            None => None,
        };
        if let Some(pooled) = &pooled {
            out.pooler_output = Some(pooled.clone());
        }
        let mut head_out = Vec::with_capacity(self.heads.len());
        for (j, hd) in self.heads.iter().enumerate() {
            let input = match &pooled {
                Some(p) => p.clone(),
                None => token_rows(last.view(), j, t),
            };
            head_out.push(self.head(w, hd, &input)?);
        }
        match head_out.len() {
            1 => out.logits = head_out.pop(),
            2 => {
                let dist = head_out.pop();
                let cls = head_out.pop();
                if let (Some(a), Some(bb)) = (&cls, &dist) {
                    out.logits = Some((a + bb) / 2.0);
                }
                out.cls_logits = cls;
                out.distillation_logits = dist;
            }
            _ => {}
        }
        if let Some((nm, lm)) = &self.lm_head {
            // lm_head(layernorm(x))[:, 1:]: every patch token, per sample.
            let mut x = last.clone();
            let mut normed = Array2::<f32>::zeros(x.dim());
            self.add_norm(w, Some(nm), &mut x, None, &mut normed)?;
            let b = last.nrows() / t.max(1);
            let n = t - 1;
            let mut patches = Array2::<f32>::zeros((b * n, d));
            for (mut dst, src) in patches
                .axis_chunks_iter_mut(Axis(0), n.max(1))
                .zip(normed.axis_chunks_iter(Axis(0), t.max(1)))
            {
                dst.assign(&src.slice(s![1.., ..]));
            }
            let mut y = Array2::zeros((b * n, lm.out));
            self.linear(w, lm, patches.view(), None, y.view_mut())?;
            out.token_logits = Some(y.into_shape_with_order((b, n, lm.out)).map_err(|e| {
                ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                }
            })?);
        }
        Ok(out)
    }
}

impl Model {
    /// SigLIP's attention pooling: the probe attends over each sample's `t` tokens of `last`
    /// (packed q/k/v projection, `H` heads, softmax of the scaled scores), then the output
    /// projection and a residual MLP on its LayerNorm: `a + fc2(act(fc1(norm(a))))`.
    fn map_pool(
        &self,
        w: &Resolved<'_>,
        mh: &super::MapHead,
        last: &Array2<f32>,
        t: usize,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let d = cfg.hidden_size;
        let heads = cfg.num_attention_heads.max(1);
        let hd = d / heads;
        let in_w = mat(w, mh.in_w, 3 * d, d)?;
        let in_b = vector(w, mh.in_b, 3 * d)?;
        let probe = mat(w, mh.probe, 1, d)?;
        let (wq, wk, wv) = (
            in_w.slice(s![..d, ..]),
            in_w.slice(s![d..2 * d, ..]),
            in_w.slice(s![2 * d.., ..]),
        );
        let bias = |k: usize| ArrayView1::from(&in_b[k * d..(k + 1) * d]);
        let q = probe.dot(&wq.t()) + bias(0);
        let k = last.dot(&wk.t()) + bias(1);
        let v = last.dot(&wv.t()) + bias(2);
        let samples = last.nrows() / t.max(1);
        let scale = (hd as f64).powf(-0.5) as f32;
        let mut a = Array2::<f32>::zeros((samples, d));
        let mut scores = vec![0f32; t];
        for s_ in 0..samples {
            for h in 0..heads {
                let cols = h * hd..(h + 1) * hd;
                let qh = q.slice(s![0, cols.clone()]);
                for (j, sc) in scores.iter_mut().enumerate() {
                    let kj = k.slice(s![s_ * t + j, cols.clone()]);
                    *sc = qh.iter().zip(kj.iter()).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                ops::softmax_rows(&mut scores, t);
                let mut out = a.slice_mut(s![s_, cols.clone()]);
                for (j, &p) in scores.iter().enumerate() {
                    out.scaled_add(p, &v.slice(s![s_ * t + j, cols.clone()]));
                }
            }
        }
        let mut o = Array2::<f32>::zeros((samples, d));
        self.linear(w, &mh.out, a.view(), None, o.view_mut())?;
        let mut normed = Array2::<f32>::zeros(o.dim());
        let mut x = o.clone();
        self.add_norm(w, Some(&mh.norm), &mut x, None, &mut normed)?;
        let mut inter = Array2::<f32>::zeros((samples, mh.fc1.out));
        self.linear(
            w,
            &mh.fc1,
            normed.view(),
            Some(cfg.hidden_act),
            inter.view_mut(),
        )?;
        let mut y = Array2::<f32>::zeros((samples, d));
        self.linear(w, &mh.fc2, inter.view(), None, y.view_mut())?;
        Ok(o + y)
    }
}

/// What [`Model::heads`] computed.
#[derive(Default)]
struct Heads {
    pooler_output: Option<Array2<f32>>,
    image_embeds: Option<Array2<f32>>,
    logits: Option<Array2<f32>>,
    cls_logits: Option<Array2<f32>>,
    distillation_logits: Option<Array2<f32>>,
    token_logits: Option<Array3<f32>>,
}

/// The error for an input of another size than the model's, without interpolation.
fn size_needs_interpolation(h: usize, w: usize, size: usize) -> Error {
    ErrorKind::InvalidOption {
        reason: format!(
            "input image size ({h}*{w}) doesn't match model ({size}*{size}); set option `interpolate_pos_encoding`"
        ),
    }
    .into()
}

/// Rows `rows` of each sample's `t` rows of `x`, stacked: `[samples·rows.len(), D]` (rows a
/// sample does not have stay zero).
fn sample_rows(x: ArrayView2<f32>, t: usize, rows: std::ops::Range<usize>) -> Array2<f32> {
    let samples = x.nrows() / t.max(1);
    let n = rows.len();
    let mut out = Array2::<f32>::zeros((samples * n, x.ncols()));
    for (mut dst, sample) in out
        .axis_chunks_iter_mut(Axis(0), n.max(1))
        .zip(x.axis_chunks_iter(Axis(0), t.max(1)))
    {
        let end = rows.end.min(sample.nrows());
        let start = rows.start.min(end);
        dst.slice_mut(s![..end - start, ..])
            .assign(&sample.slice(s![start..end, ..]));
    }
    out
}

/// Row `token` of each sample's `t` rows of `x`, as `[samples, D]`.
fn token_rows(x: ArrayView2<f32>, token: usize, t: usize) -> Array2<f32> {
    sample_rows(x, t, token..token + 1)
}

/// The mean of each sample's tokens after the first `prefix`, as `[samples, D]` (summed in
/// order, as torch's `mean(1)` over a contiguous tensor does on one thread).
fn mean_patch_tokens(x: ArrayView2<f32>, prefix: usize, t: usize) -> Array2<f32> {
    let samples = x.nrows() / t.max(1);
    let mut out = Array2::<f32>::zeros((samples, x.ncols()));
    let n = t.saturating_sub(prefix).max(1) as f32;
    for (mut dst, sample) in out
        .rows_mut()
        .into_iter()
        .zip(x.axis_chunks_iter(Axis(0), t.max(1)))
    {
        for row in sample.slice(s![prefix.., ..]).rows() {
            dst += &row;
        }
        dst.mapv_inplace(|v| v / n);
    }
    out
}

/// `y[r, :] *= scale` for every row (layer scale).
fn scale_rows(y: &mut Array2<f32>, scale: &[f32]) -> Result<()> {
    let d = scale.len();
    for row in slice_mut(y)?.chunks_exact_mut(d.max(1)) {
        for (v, s) in row.iter_mut().zip(scale) {
            *v *= s;
        }
    }
    Ok(())
}
