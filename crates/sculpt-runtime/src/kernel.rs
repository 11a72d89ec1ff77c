//! The matrix kernels: weights packed once into 16-row panels, and micro-kernels that
//! compute a tile of up to [`MR`] input rows against up to [`NR`] panels.
//!
//! A layer computes `C[m][n] = Σ_k A[m][k] · W[n][k]`: `A` holds one input row per sample
//! (or per image patch, for a convolution) and `W` is the weight in PyTorch's `[out, in]`
//! order. The packed layout puts, for each panel of 16 output rows, the values of one `k`
//! (f32) or of four consecutive `k` (8-bit integers) for all 16 rows next to each other, so a
//! single vector load feeds 16 outputs and no horizontal sum is ever needed. This is the
//! layout oneDNN and FBGEMM use for VNNI.
//!
//! - f32: one FMA per `k` and panel (AVX-512F or AVX2+FMA).
//! - 8-bit: unsigned 8-bit activations times signed 8-bit weights, summed in 32-bit integers
//!   (`vpdpbusd` with AVX-512 VNNI; with AVX2, widened to 16 bits and `vpmaddwd`, which is
//!   exact). Weights of 4 bits or fewer are stored two per byte and unpacked in the kernel.
//!
//! The instruction set is chosen at run time ([`Isa::detect`]); every path gives the same
//! integers, and f32 paths differ only in summation order. A portable scalar path serves
//! other CPUs and checks the others in tests.

/// Output rows per packed panel.
pub const PANEL: usize = 16;
/// Input rows per integer tile, at most.
pub const MR: usize = 4;
/// Input rows per f32 tile, at most: with AVX-512, 8 rows by 2 panels keep 16 of the 32
/// vector registers accumulating, so each loaded weight vector serves 8 rows.
pub const MR_F32: usize = 8;
/// Panels per tile, at most.
pub const NR: usize = 2;

/// Raw sums of one tile: `MR_F32` (f32) or `MR` (integer) rows by `NR * PANEL` columns.
pub type TileF32 = [[f32; NR * PANEL]; MR_F32];
pub type TileI32 = [[i32; NR * PANEL]; MR];

/// The instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// AVX-512F, AVX-512BW and AVX-512 VNNI.
    Avx512Vnni,
    /// AVX2 and FMA.
    Avx2,
    Scalar,
}

impl Isa {
    /// The best this CPU supports. `SCULPT_ISA=avx2|scalar` forces a lesser one (for
    /// comparisons and tests); a request the CPU cannot honour is ignored.
    pub fn detect() -> Isa {
        let best = Self::best();
        match std::env::var("SCULPT_ISA").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") if best != Isa::Scalar => Isa::Avx2,
            _ => best,
        }
    }

    /// Every instruction set this CPU can run, best first.
    pub fn available() -> Vec<Isa> {
        match Self::best() {
            Isa::Avx512Vnni => vec![Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar],
            Isa::Avx2 => vec![Isa::Avx2, Isa::Scalar],
            Isa::Scalar => vec![Isa::Scalar],
        }
    }

    fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    pub fn name(&self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }
}

/// A zeroed buffer whose elements start on a 64-byte boundary (a cache line, and one
/// AVX-512 load), whatever the allocator returns: misaligned panels make every vector load
/// straddle two lines, which costs up to a fifth of a layer's time and varies run to run.
#[derive(Debug, Clone)]
pub struct Aligned<T> {
    buf: Vec<T>,
    offset: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    pub fn zeroed(len: usize) -> Self {
        let per_line = (64 / std::mem::size_of::<T>()).max(1);
        let buf = vec![T::default(); len + per_line];
        let misaligned = (buf.as_ptr() as usize % 64) / std::mem::size_of::<T>();
        let offset = (per_line - misaligned) % per_line;
        Aligned { buf, offset, len }
    }

    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.offset..self.offset + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.offset..self.offset + self.len]
    }

    pub fn as_ptr(&self) -> *const T {
        self.as_slice().as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy + Default> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

/// An f32 weight `[n, k]` packed into panels: `data[(p * k + kk) * 16 + r] = W[p*16 + r][kk]`.
#[derive(Debug, Clone)]
pub struct PackedF32 {
    pub n: usize,
    pub k: usize,
    pub panels: usize,
    pub data: Aligned<f32>,
}

impl PackedF32 {
    /// Packs a row-major `[n, k]` weight.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k);
        let panels = n.div_ceil(PANEL);
        let mut data = Aligned::zeroed(panels * k * PANEL);
        let d = data.as_mut_slice();
        for row in 0..n {
            let (p, r) = (row / PANEL, row % PANEL);
            for kk in 0..k {
                d[(p * k + kk) * PANEL + r] = w[row * k + kk];
            }
        }
        PackedF32 { n, k, panels, data }
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// An integer weight `[n, k]` packed into panels of 16 rows by groups of 4 `k`:
/// `data[(p * groups + g) * 64 + r * 4 + j] = W[p*16 + r][4g + j]` as a signed byte. With
/// `nibbles`, two groups share 64 bytes: group `2q` in the low nibbles and `2q + 1` in the
/// high ones, each value in `0..=15`.
#[derive(Debug, Clone)]
pub struct PackedInt {
    pub n: usize,
    pub k: usize,
    /// Groups of 4 along `k` (even when `nibbles`); input rows are padded to `4 * groups`.
    pub groups: usize,
    pub panels: usize,
    pub nibbles: bool,
    pub data: Aligned<u8>,
}

impl PackedInt {
    /// Packs row-major stored values: signed bytes, or `0..=15` when `nibbles`.
    pub fn pack(v: &[i32], n: usize, k: usize, nibbles: bool) -> Self {
        assert_eq!(v.len(), n * k);
        let mut groups = k.div_ceil(4);
        if nibbles {
            groups += groups % 2;
        }
        let panels = n.div_ceil(PANEL);
        let mut data = Aligned::zeroed(panels * groups * 64 / if nibbles { 2 } else { 1 });
        let d = data.as_mut_slice();
        for row in 0..n {
            let (p, r) = (row / PANEL, row % PANEL);
            for kk in 0..k {
                let (g, j) = (kk / 4, kk % 4);
                let value = v[row * k + kk];
                if nibbles {
                    debug_assert!((0..16).contains(&value));
                    let at = (p * groups / 2 + g / 2) * 64 + r * 4 + j;
                    d[at] |= ((value as u8) & 15) << (4 * (g % 2));
                } else {
                    debug_assert!((-128..128).contains(&value));
                    d[(p * groups + g) * 64 + r * 4 + j] = value as i8 as u8;
                }
            }
        }
        PackedInt {
            n,
            k,
            groups,
            panels,
            nibbles,
            data,
        }
    }

    /// Bytes of one input row: `k` padded to whole groups.
    pub fn row_bytes(&self) -> usize {
        self.groups * 4
    }

    /// Bytes of one panel.
    fn panel_bytes(&self) -> usize {
        self.groups * 64 / if self.nibbles { 2 } else { 1 }
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// Sums of `mr` rows of `a` (stride `lda`) against panels `p0..p0 + nr` of `b`, into `out`.
///
/// # Safety
/// `a` must hold `mr` rows of `b.k` values at stride `lda`, `mr <= MR`, `nr <= NR` and
/// `p0 + nr <= b.panels`; `isa` must be supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_f32(
    isa: Isa,
    a: *const f32,
    lda: usize,
    mr: usize,
    b: &PackedF32,
    p0: usize,
    nr: usize,
    out: &mut TileF32,
) {
    let bp = b.data.as_ptr().add(p0 * b.k * PANEL);
    macro_rules! dispatch {
        ($f:ident) => {
            match (mr, nr) {
                (1, 1) => $f::<1, 1>(a, lda, bp, b.k, out),
                (2, 1) => $f::<2, 1>(a, lda, bp, b.k, out),
                (3, 1) => $f::<3, 1>(a, lda, bp, b.k, out),
                (4, 1) => $f::<4, 1>(a, lda, bp, b.k, out),
                (5, 1) => $f::<5, 1>(a, lda, bp, b.k, out),
                (6, 1) => $f::<6, 1>(a, lda, bp, b.k, out),
                (7, 1) => $f::<7, 1>(a, lda, bp, b.k, out),
                (8, 1) => $f::<8, 1>(a, lda, bp, b.k, out),
                (1, 2) => $f::<1, 2>(a, lda, bp, b.k, out),
                (2, 2) => $f::<2, 2>(a, lda, bp, b.k, out),
                (3, 2) => $f::<3, 2>(a, lda, bp, b.k, out),
                (4, 2) => $f::<4, 2>(a, lda, bp, b.k, out),
                (5, 2) => $f::<5, 2>(a, lda, bp, b.k, out),
                (6, 2) => $f::<6, 2>(a, lda, bp, b.k, out),
                (7, 2) => $f::<7, 2>(a, lda, bp, b.k, out),
                _ => $f::<8, 2>(a, lda, bp, b.k, out),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => dispatch!(f32_avx512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // Eight accumulators of 8 lanes (of the 16 registers): up to 4 rows of one
            // panel per call.
            for r0 in (0..mr).step_by(4) {
                let rows = (mr - r0).min(4);
                let ar = a.add(r0 * lda);
                for q in 0..nr {
                    let bq = bp.add(q * b.k * PANEL);
                    let mut part: TileF32 = [[0.0; NR * PANEL]; MR_F32];
                    match rows {
                        1 => f32_avx2::<1>(ar, lda, bq, b.k, &mut part),
                        2 => f32_avx2::<2>(ar, lda, bq, b.k, &mut part),
                        3 => f32_avx2::<3>(ar, lda, bq, b.k, &mut part),
                        _ => f32_avx2::<4>(ar, lda, bq, b.k, &mut part),
                    }
                    for i in 0..rows {
                        out[r0 + i][q * PANEL..(q + 1) * PANEL].copy_from_slice(&part[i][..PANEL]);
                    }
                }
            }
        }
        _ => dispatch!(f32_scalar),
    }
}

unsafe fn f32_scalar<const M: usize, const N: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    k: usize,
    out: &mut TileF32,
) {
    let mut acc = [[0f32; NR * PANEL]; MR_F32];
    for kk in 0..k {
        for q in 0..N {
            let w = std::slice::from_raw_parts(b.add((q * k + kk) * PANEL), PANEL);
            for (i, row) in acc.iter_mut().enumerate().take(M) {
                let x = *a.add(i * lda + kk);
                for (r, &wr) in w.iter().enumerate() {
                    row[q * PANEL + r] += x * wr;
                }
            }
        }
    }
    *out = acc;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f32_avx512<const M: usize, const N: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    k: usize,
    out: &mut TileF32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    for kk in 0..k {
        let mut w = [_mm512_setzero_ps(); N];
        for (q, wq) in w.iter_mut().enumerate() {
            *wq = _mm512_loadu_ps(b.add((q * k + kk) * PANEL));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*a.add(i * lda + kk));
            for (q, c) in row.iter_mut().enumerate() {
                *c = _mm512_fmadd_ps(x, w[q], *c);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (q, c) in row.iter().enumerate() {
            _mm512_storeu_ps(out[i].as_mut_ptr().add(q * PANEL), *c);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_avx2<const M: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    k: usize,
    out: &mut TileF32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    for kk in 0..k {
        let w0 = _mm256_loadu_ps(b.add(kk * PANEL));
        let w1 = _mm256_loadu_ps(b.add(kk * PANEL + 8));
        for (i, row) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_ps(*a.add(i * lda + kk));
            row[0] = _mm256_fmadd_ps(x, w0, row[0]);
            row[1] = _mm256_fmadd_ps(x, w1, row[1]);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        _mm256_storeu_ps(out[i].as_mut_ptr(), row[0]);
        _mm256_storeu_ps(out[i].as_mut_ptr().add(8), row[1]);
    }
}

/// Integer sums of `mr` rows of unsigned bytes `a` (stride `lda`, each `b.row_bytes()` long,
/// zero beyond `b.k`) against panels `p0..p0 + nr` of `b`.
///
/// # Safety
/// As [`tile_f32`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_int(
    isa: Isa,
    a: *const u8,
    lda: usize,
    mr: usize,
    b: &PackedInt,
    p0: usize,
    nr: usize,
    out: &mut TileI32,
) {
    let stride = b.panel_bytes();
    let bp = b.data.as_ptr().add(p0 * stride);
    macro_rules! dispatch {
        ($f:ident, $nib:expr) => {
            match (mr, nr) {
                (1, 1) => $f::<1, 1, $nib>(a, lda, bp, stride, b.groups, out),
                (2, 1) => $f::<2, 1, $nib>(a, lda, bp, stride, b.groups, out),
                (3, 1) => $f::<3, 1, $nib>(a, lda, bp, stride, b.groups, out),
                (4, 1) => $f::<4, 1, $nib>(a, lda, bp, stride, b.groups, out),
                (1, 2) => $f::<1, 2, $nib>(a, lda, bp, stride, b.groups, out),
                (2, 2) => $f::<2, 2, $nib>(a, lda, bp, stride, b.groups, out),
                (3, 2) => $f::<3, 2, $nib>(a, lda, bp, stride, b.groups, out),
                _ => $f::<4, 2, $nib>(a, lda, bp, stride, b.groups, out),
            }
        };
    }
    match (isa, b.nibbles) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, false) => dispatch!(int_vnni, false),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, true) => dispatch!(int_vnni, true),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, nibbles) => {
            // Two rows of one panel per call (eight accumulators).
            for q in 0..nr {
                let bq = bp.add(q * stride);
                let mut i = 0;
                while i < mr {
                    let rows = (mr - i).min(2);
                    let mut part: TileI32 = [[0; NR * PANEL]; MR];
                    let ai = a.add(i * lda);
                    match (rows, nibbles) {
                        (1, false) => int_avx2::<1, false>(ai, lda, bq, b.groups, &mut part),
                        (1, true) => int_avx2::<1, true>(ai, lda, bq, b.groups, &mut part),
                        (_, false) => int_avx2::<2, false>(ai, lda, bq, b.groups, &mut part),
                        (_, true) => int_avx2::<2, true>(ai, lda, bq, b.groups, &mut part),
                    }
                    for r in 0..rows {
                        out[i + r][q * PANEL..(q + 1) * PANEL].copy_from_slice(&part[r][..PANEL]);
                    }
                    i += rows;
                }
            }
        }
        (_, false) => dispatch!(int_scalar, false),
        (_, true) => dispatch!(int_scalar, true),
    }
}

/// The stored value of row `r`, group `g`, lane `j` of a panel starting at `b`.
#[inline(always)]
unsafe fn stored<const NIB: bool>(b: *const u8, g: usize, r: usize, j: usize) -> i32 {
    if NIB {
        let byte = *b.add((g / 2) * 64 + r * 4 + j);
        ((byte >> (4 * (g % 2))) & 15) as i32
    } else {
        *b.add(g * 64 + r * 4 + j) as i8 as i32
    }
}

unsafe fn int_scalar<const M: usize, const N: usize, const NIB: bool>(
    a: *const u8,
    lda: usize,
    b: *const u8,
    stride: usize,
    groups: usize,
    out: &mut TileI32,
) {
    let mut acc = [[0i32; NR * PANEL]; MR];
    for q in 0..N {
        let bq = b.add(q * stride);
        for g in 0..groups {
            for r in 0..PANEL {
                for j in 0..4 {
                    let w = stored::<NIB>(bq, g, r, j);
                    for (i, row) in acc.iter_mut().enumerate().take(M) {
                        row[q * PANEL + r] += *a.add(i * lda + 4 * g + j) as i32 * w;
                    }
                }
            }
        }
    }
    *out = acc;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn int_vnni<const M: usize, const N: usize, const NIB: bool>(
    a: *const u8,
    lda: usize,
    b: *const u8,
    stride: usize,
    groups: usize,
    out: &mut TileI32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); N]; M];
    if NIB {
        let low = _mm512_set1_epi8(15);
        for pair in 0..groups / 2 {
            let mut lo = [_mm512_setzero_si512(); N];
            let mut hi = [_mm512_setzero_si512(); N];
            for q in 0..N {
                let w = _mm512_loadu_si512(b.add(q * stride + pair * 64) as *const _);
                lo[q] = _mm512_and_si512(w, low);
                hi[q] = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let at = a.add(i * lda + pair * 8);
                let x0 = _mm512_set1_epi32((at as *const i32).read_unaligned());
                let x1 = _mm512_set1_epi32((at.add(4) as *const i32).read_unaligned());
                for (q, c) in row.iter_mut().enumerate() {
                    *c = _mm512_dpbusd_epi32(*c, x0, lo[q]);
                    *c = _mm512_dpbusd_epi32(*c, x1, hi[q]);
                }
            }
        }
    } else {
        for g in 0..groups {
            let mut w = [_mm512_setzero_si512(); N];
            for (q, wq) in w.iter_mut().enumerate() {
                *wq = _mm512_loadu_si512(b.add(q * stride + g * 64) as *const _);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32((a.add(i * lda + g * 4) as *const i32).read_unaligned());
                for (q, c) in row.iter_mut().enumerate() {
                    *c = _mm512_dpbusd_epi32(*c, x, w[q]);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (q, c) in row.iter().enumerate() {
            _mm512_storeu_si512(out[i].as_mut_ptr().add(q * PANEL) as *mut _, *c);
        }
    }
}

/// AVX2: each panel's 64 bytes per group are two halves of 8 rows. A half widens to two
/// vectors of 16-bit values (rows 0-3 and 4-7, four `k` each); `vpmaddwd` against the four
/// activations (as 16-bit pairs) leaves two partial sums per row, which one horizontal add
/// at the end combines.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn int_avx2<const M: usize, const NIB: bool>(
    a: *const u8,
    lda: usize,
    b: *const u8,
    groups: usize,
    out: &mut TileI32,
) {
    use std::arch::x86_64::*;
    // acc[i][h]: sample i, 4-row quarter h of the panel (rows 4h..4h+4), two lanes per row.
    let mut acc = [[_mm256_setzero_si256(); 4]; M];
    let low = _mm256_set1_epi8(15);
    for g in 0..groups {
        // The 64 bytes of group g: rows 0-7 then rows 8-15.
        let (h0, h1) = if NIB {
            let base = b.add((g / 2) * 64);
            let v0 = _mm256_loadu_si256(base as *const _);
            let v1 = _mm256_loadu_si256(base.add(32) as *const _);
            if g % 2 == 0 {
                (_mm256_and_si256(v0, low), _mm256_and_si256(v1, low))
            } else {
                (
                    _mm256_and_si256(_mm256_srli_epi16(v0, 4), low),
                    _mm256_and_si256(_mm256_srli_epi16(v1, 4), low),
                )
            }
        } else {
            let base = b.add(g * 64);
            (
                _mm256_loadu_si256(base as *const _),
                _mm256_loadu_si256(base.add(32) as *const _),
            )
        };
        let halves = [
            _mm256_castsi256_si128(h0),
            _mm256_extracti128_si256(h0, 1),
            _mm256_castsi256_si128(h1),
            _mm256_extracti128_si256(h1, 1),
        ];
        let mut w = [_mm256_setzero_si256(); 4];
        for (wq, half) in w.iter_mut().zip(halves) {
            *wq = if NIB {
                _mm256_cvtepu8_epi16(half)
            } else {
                _mm256_cvtepi8_epi16(half)
            };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let at = a.add(i * lda + g * 4);
            let x = [
                *at as i64,
                *at.add(1) as i64,
                *at.add(2) as i64,
                *at.add(3) as i64,
            ];
            let x = _mm256_set1_epi64x(x[0] | (x[1] << 16) | (x[2] << 32) | (x[3] << 48));
            for h in 0..4 {
                row[h] = _mm256_add_epi32(row[h], _mm256_madd_epi16(x, w[h]));
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for half in 0..2 {
            // hadd within 128-bit lanes gives rows (0,1),(4,5),(2,3),(6,7) of the half.
            let s = _mm256_hadd_epi32(row[2 * half], row[2 * half + 1]);
            let s = _mm256_permute4x64_epi64(s, 0xD8);
            _mm256_storeu_si256(out[i].as_mut_ptr().add(8 * half) as *mut _, s);
        }
    }
}

/// A tile row's epilogue with AVX-512: `out[j] = relu?((acc[j] + bias[j]) · s[j] + t[j])`
/// for `j < out.len()`, a panel of 16 columns at a time with masked loads and stores, so a
/// layer of 14 channels costs what one of 16 does (a plain loop runs the 14 as a scalar
/// remainder). `bias`, `s` and `t` hold `out.len()` values. Rounds as the plain loop does.
///
/// # Safety
/// The CPU must support AVX-512F; `out.len() <= NR * PANEL`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn epilogue_avx512(
    acc: &[f32; NR * PANEL],
    bias: &[f32],
    post: Option<(&[f32], &[f32])>,
    relu: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let w = out.len();
    assert!(w <= NR * PANEL && bias.len() >= w);
    if let Some((s, t)) = post {
        assert!(s.len() >= w && t.len() >= w);
    }
    let mut j = 0;
    while j < w {
        let m = lanes(w - j);
        let mut v = _mm512_add_ps(
            _mm512_loadu_ps(acc.as_ptr().add(j)),
            _mm512_maskz_loadu_ps(m, bias.as_ptr().add(j)),
        );
        if let Some((s, t)) = post {
            v = _mm512_add_ps(
                _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, s.as_ptr().add(j))),
                _mm512_maskz_loadu_ps(m, t.as_ptr().add(j)),
            );
        }
        if relu {
            // NaN becomes 0, as `f32::max(0.0)` makes it.
            v = _mm512_max_ps(v, _mm512_setzero_ps());
        }
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), m, v);
        j += PANEL;
    }
}

/// An integer tile row to f32 with AVX-512: `out[j] = (acc[j] - zx·vs[j] + of[j]·rest) ·
/// (scale · sc[j])` for `j < w`, exactly as the plain loop computes it (wrapping i32, then
/// one rounding to f32 and two products).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn dequantize_avx512(
    acc: &[i32; NR * PANEL],
    w: usize,
    zx: i32,
    rest: i32,
    scale: f32,
    vs: &[i32],
    of: &[i32],
    sc: &[f32],
    out: &mut [f32; NR * PANEL],
) {
    use std::arch::x86_64::*;
    assert!(w <= NR * PANEL && vs.len() >= w && of.len() >= w && sc.len() >= w);
    let (zx, rest, scale) = (
        _mm512_set1_epi32(zx),
        _mm512_set1_epi32(rest),
        _mm512_set1_ps(scale),
    );
    let mut j = 0;
    while j < w {
        let m = lanes(w - j);
        let a = _mm512_loadu_si512(acc.as_ptr().add(j) as *const _);
        let v = _mm512_maskz_loadu_epi32(m, vs.as_ptr().add(j));
        let o = _mm512_maskz_loadu_epi32(m, of.as_ptr().add(j));
        let r = _mm512_add_epi32(
            _mm512_sub_epi32(a, _mm512_mullo_epi32(zx, v)),
            _mm512_mullo_epi32(o, rest),
        );
        let f = _mm512_mul_ps(
            _mm512_cvtepi32_ps(r),
            _mm512_mul_ps(scale, _mm512_maskz_loadu_ps(m, sc.as_ptr().add(j))),
        );
        _mm512_storeu_ps(out.as_mut_ptr().add(j), f);
        j += PANEL;
    }
}

/// The mask of the first `min(n, 16)` lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn f32_tiles_match_a_plain_matrix_product_on_every_isa() {
        let mut seed = 1;
        for (m, n, k) in [
            (1, 5, 3),
            (4, 32, 17),
            (3, 40, 64),
            (2, 16, 1),
            (8, 20, 25),
            (7, 50, 9),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|_| lcg(&mut seed) as f32 / 2e9 - 1.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|_| lcg(&mut seed) as f32 / 2e9 - 1.0)
                .collect();
            let packed = PackedF32::pack(&w, n, k);
            for isa in Isa::available() {
                let mut p = 0;
                while p < packed.panels {
                    let nr = (packed.panels - p).min(NR);
                    let mut tile = [[0f32; NR * PANEL]; MR_F32];
                    unsafe { tile_f32(isa, a.as_ptr(), k, m, &packed, p, nr, &mut tile) };
                    for i in 0..m {
                        for c in 0..nr * PANEL {
                            let row = p * PANEL + c;
                            let expect: f32 = if row < n {
                                (0..k).map(|kk| a[i * k + kk] * w[row * k + kk]).sum()
                            } else {
                                0.0
                            };
                            assert!(
                                (tile[i][c] - expect).abs() < 1e-4,
                                "{isa:?} m{m} n{n} k{k}: [{i}][{row}] {} vs {expect}",
                                tile[i][c]
                            );
                        }
                    }
                    p += nr;
                }
            }
        }
    }

    #[test]
    fn integer_tiles_are_exact_on_every_isa_for_bytes_and_nibbles() {
        let mut seed = 7;
        for nibbles in [false, true] {
            for (m, n, k) in [(1, 3, 5), (4, 33, 24), (3, 16, 70), (2, 40, 9)] {
                let w: Vec<i32> = (0..n * k)
                    .map(|_| {
                        if nibbles {
                            (lcg(&mut seed) % 16) as i32
                        } else {
                            (lcg(&mut seed) % 256) as i32 - 128
                        }
                    })
                    .collect();
                let packed = PackedInt::pack(&w, n, k, nibbles);
                let lda = packed.row_bytes();
                let mut a = vec![0u8; m * lda];
                for i in 0..m {
                    for kk in 0..k {
                        a[i * lda + kk] = (lcg(&mut seed) % 256) as u8;
                    }
                }
                for isa in Isa::available() {
                    let mut p = 0;
                    while p < packed.panels {
                        let nr = (packed.panels - p).min(NR);
                        let mut tile = [[0i32; NR * PANEL]; MR];
                        unsafe { tile_int(isa, a.as_ptr(), lda, m, &packed, p, nr, &mut tile) };
                        for i in 0..m {
                            for c in 0..nr * PANEL {
                                let row = p * PANEL + c;
                                let expect: i32 = if row < n {
                                    (0..k)
                                        .map(|kk| a[i * lda + kk] as i32 * w[row * k + kk])
                                        .sum()
                                } else {
                                    0
                                };
                                assert_eq!(
                                    tile[i][c], expect,
                                    "{isa:?} nibbles {nibbles} m{m} n{n} k{k}: [{i}][{row}]"
                                );
                            }
                        }
                        p += nr;
                    }
                }
            }
        }
    }
}
