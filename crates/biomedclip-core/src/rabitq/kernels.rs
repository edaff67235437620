//! The inner loops of a RaBitQ scan, each with a portable version and, where the CPU has it, a
//! vector version chosen at run time (the crate is compiled for baseline x86-64). Each vector
//! version computes the same sums as the portable one: the popcounts exactly, the float sums in
//! a different order (float rounding only).

/// Which kernels this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelIsa {
    /// AVX-512F, BW and VPOPCNTDQ (vector popcounts of 8 words at once).
    Avx512,
    /// POPCNT only (one word at a time).
    Popcnt,
    Portable,
}

pub fn detect() -> KernelIsa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
        {
            return KernelIsa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            return KernelIsa::Popcnt;
        }
    }
    KernelIsa::Portable
}

/// The kernels of this process (detected once).
pub fn active() -> KernelIsa {
    static ISA: std::sync::OnceLock<KernelIsa> = std::sync::OnceLock::new();
    *ISA.get_or_init(detect)
}

/// The ISAs whose kernels this CPU can run (for tests that compare them).
pub fn available() -> Vec<KernelIsa> {
    let mut v = vec![KernelIsa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            v.push(KernelIsa::Popcnt);
        }
        if detect() == KernelIsa::Avx512 {
            v.push(KernelIsa::Avx512);
        }
    }
    v
}

/// `(Σ popcount(code), Σ_j 2^j Σ_w popcount(code_w ∧ plane_{w,j}))` for a code of `words` u64
/// words and 8 bit planes stored word by word (`planes[w * 8 + j]`).
#[inline]
pub fn plane_sums(isa: KernelIsa, planes: &[u64], code: &[u8]) -> (u32, u32) {
    debug_assert_eq!(planes.len(), code.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` comes from `detect`/`available`, which checked the CPU.
        KernelIsa::Avx512 => unsafe { x86::plane_sums_avx512(planes, code) },
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Popcnt => unsafe { x86::plane_sums_popcnt(planes, code) },
        _ => plane_sums_portable(planes, code),
    }
}

#[inline(always)]
fn plane_sums_portable(planes: &[u64], code: &[u8]) -> (u32, u32) {
    let mut ones = 0u32;
    let mut weighted = [0u32; 8];
    for (bytes, word_planes) in code.chunks_exact(8).zip(planes.chunks_exact(8)) {
        let c = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        ones += c.count_ones();
        for (acc, &p) in weighted.iter_mut().zip(word_planes) {
            *acc += (c & p).count_ones();
        }
    }
    (ones, weighted.iter().enumerate().map(|(j, &n)| n << j).sum())
}

/// The 8 bit planes of `k` (one byte per dimension, a multiple of 64 of them), word by word:
/// bit i % 64 of `planes[i / 64 * 8 + j]` is bit j of `k[i]`.
pub fn bit_planes(isa: KernelIsa, k: &[u8], planes: &mut [u64]) {
    debug_assert_eq!(planes.len(), k.len() / 8);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F and BW were detected at run time.
        KernelIsa::Avx512 => unsafe { x86::bit_planes_avx512(k, planes) },
        _ => bit_planes_portable(k, planes),
    }
}

fn bit_planes_portable(k: &[u8], planes: &mut [u64]) {
    for (bytes, word_planes) in k.chunks_exact(64).zip(planes.chunks_exact_mut(8)) {
        for (j, plane) in word_planes.iter_mut().enumerate() {
            *plane = bytes.iter().enumerate().fold(0u64, |w, (i, &b)| w | ((((b >> j) & 1) as u64) << i));
        }
    }
}

/// `Σ_i level_i · v_i` for a 4-bit code (dimension i in the low nibble of byte i/2 when i is
/// even, the high one when odd); `v.len() == 2 * ex.len()`, a multiple of 16.
#[inline]
pub fn nibble_dot(isa: KernelIsa, ex: &[u8], v: &[f32]) -> f32 {
    debug_assert_eq!(v.len(), 2 * ex.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F was detected at run time.
        KernelIsa::Avx512 => unsafe { x86::nibble_dot_avx512(ex, v) },
        _ => nibble_dot_portable(ex, v),
    }
}

#[inline(always)]
fn nibble_dot_portable(ex: &[u8], v: &[f32]) -> f32 {
    // 16 lanes (8 code bytes, 16 dimensions) per step, so the compiler can vectorize it.
    let mut acc = [0f32; 16];
    for (bytes, v) in ex.chunks_exact(8).zip(v.chunks_exact(16)) {
        for j in 0..8 {
            acc[2 * j] += (bytes[j] & 15) as f32 * v[2 * j];
            acc[2 * j + 1] += (bytes[j] >> 4) as f32 * v[2 * j + 1];
        }
    }
    acc.iter().sum()
}

/// In-place normalized fast Walsh-Hadamard transform (length a power of two). The butterflies
/// of a stage are written as two halves zipped, so they vectorize; every element sees the same
/// additions in the same order as the textbook loop.
pub fn fwht(isa: KernelIsa, x: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F was detected at run time.
        KernelIsa::Avx512 => unsafe { x86::fwht_avx512(x) },
        _ => fwht_portable(x),
    }
}

#[inline(always)]
fn fwht_portable(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (a, b) = pair.split_at_mut(h);
            for (p, q) in a.iter_mut().zip(b.iter_mut()) {
                let (s, d) = (*p + *q, *p - *q);
                *p = s;
                *q = d;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    for v in x.iter_mut() {
        *v *= scale;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "popcnt")]
    pub unsafe fn plane_sums_popcnt(planes: &[u64], code: &[u8]) -> (u32, u32) {
        super::plane_sums_portable(planes, code)
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    pub unsafe fn plane_sums_avx512(planes: &[u64], code: &[u8]) -> (u32, u32) {
        let words = code.len() / 8;
        let mut acc = _mm512_setzero_si512();
        let mut ones = 0u32;
        for w in 0..words {
            let c = (code.as_ptr().add(8 * w) as *const u64).read_unaligned();
            ones += c.count_ones();
            let p = _mm512_loadu_si512(planes.as_ptr().add(8 * w) as *const _);
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64(c as i64), p)));
        }
        // Lane j holds the count of plane j: weight it by 2^j.
        let weighted = _mm512_sllv_epi64(acc, _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
        (ones, _mm512_reduce_add_epi64(weighted) as u32)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn bit_planes_avx512(k: &[u8], planes: &mut [u64]) {
        for (w, word_planes) in planes.chunks_exact_mut(8).enumerate() {
            let bytes = _mm512_loadu_si512(k.as_ptr().add(64 * w) as *const _);
            // Shift bit j of every byte into its top bit and take the 64 top bits at once.
            for (j, plane) in word_planes.iter_mut().enumerate() {
                let shifted = _mm512_sllv_epi16(bytes, _mm512_set1_epi16(7 - j as i16));
                *plane = _mm512_movepi8_mask(shifted);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn nibble_dot_avx512(ex: &[u8], v: &[f32]) -> f32 {
        let low = _mm_set1_epi8(15);
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= ex.len() {
            // 16 bytes = 32 dimensions: split nibbles, interleave them back into dimension order.
            let b = _mm_loadu_si128(ex.as_ptr().add(i) as *const __m128i);
            let lo = _mm_and_si128(b, low);
            let hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
            let d0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
            let d1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(lo, hi)));
            acc0 = _mm512_fmadd_ps(d0, _mm512_loadu_ps(v.as_ptr().add(2 * i)), acc0);
            acc1 = _mm512_fmadd_ps(d1, _mm512_loadu_ps(v.as_ptr().add(2 * i + 16)), acc1);
            i += 16;
        }
        let mut total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        if i < ex.len() {
            total += super::nibble_dot_portable(&ex[i..], &v[2 * i..]);
        }
        total
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fwht_avx512(x: &mut [f32]) {
        super::fwht_portable(x)
    }
}
