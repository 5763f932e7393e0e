//! What this CPU offers: the SIMD features found at run time (for `info`),
//! and proofs of them that the SIMD kernels' constructors take.
//!
//! A proof is a value with a private field that only its `detect()` makes,
//! after `is_*_feature_detected!` said yes. A constructor that puts a
//! `#[target_feature]` kernel into a table takes one, so safe code cannot
//! build a table that reaches an instruction this CPU lacks.

/// SIMD features of this CPU that matter to tract's and our kernels.
pub fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) {
                    f.push($name.to_string());
                }
            )*};
        }
        probe!(
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($name) {
                    f.push($name.to_string());
                }
            )*};
        }
        probe!("neon", "dotprod", "fp16", "i8mm", "bf16", "sve");
    }
    f
}

/// Proof that this CPU has AVX2 and FMA (two separate CPUID bits: every
/// kernel compiled with `enable = "avx2,fma"` needs both).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub struct Avx2Fma(());

#[cfg(target_arch = "x86_64")]
impl Avx2Fma {
    /// The proof, where the CPU has both features.
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }
}

/// Proof of AVX-VNNI (`vpdpbusd` on ymm registers, VEX-encoded), with
/// AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub struct AvxVnni(Avx2Fma);

#[cfg(target_arch = "x86_64")]
impl AvxVnni {
    /// The proof, where the CPU has the features.
    pub fn detect() -> Option<Self> {
        let base = Avx2Fma::detect()?;
        is_x86_feature_detected!("avxvnni").then_some(AvxVnni(base))
    }
    /// The AVX2 + FMA it implies.
    pub fn avx2(self) -> Avx2Fma {
        self.0
    }
}

/// Proof of AVX-512 VNNI with AVX-512 VL (`vpdpbusd` on ymm registers,
/// EVEX-encoded), with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub struct Avx512Vnni(Avx2Fma);

#[cfg(target_arch = "x86_64")]
impl Avx512Vnni {
    /// The proof, where the CPU has the features.
    pub fn detect() -> Option<Self> {
        let base = Avx2Fma::detect()?;
        (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
            .then_some(Avx512Vnni(base))
    }
    /// The AVX2 + FMA it implies.
    pub fn avx2(self) -> Avx2Fma {
        self.0
    }
}

/// Proof that this CPU has NEON (part of the aarch64 base ISA, still
/// checked).
#[cfg(target_arch = "aarch64")]
#[derive(Debug, Clone, Copy)]
pub struct Neon(());

#[cfg(target_arch = "aarch64")]
impl Neon {
    /// The proof, where the CPU has NEON.
    pub fn detect() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }
}

/// Proof of the dot-product instructions (`sdot`, Cortex-A76/A78 and
/// later), with NEON.
#[cfg(target_arch = "aarch64")]
#[derive(Debug, Clone, Copy)]
pub struct DotProd(Neon);

#[cfg(target_arch = "aarch64")]
impl DotProd {
    /// The proof, where the CPU has the features.
    pub fn detect() -> Option<Self> {
        let base = Neon::detect()?;
        std::arch::is_aarch64_feature_detected!("dotprod").then_some(DotProd(base))
    }
}
