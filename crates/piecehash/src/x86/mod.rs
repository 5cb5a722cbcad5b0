//! x86-64 multi-buffer kernels, chosen at run time.

mod avx2;
mod avx512;
mod avx512vl;
mod shani;

use std::sync::OnceLock;

pub(crate) use avx2::Avx2;
pub(crate) use avx512::Avx512;
pub(crate) use avx512vl::Avx512Vl;
pub(crate) use shani::ShaNi;

/// The kernels this CPU can run, detected once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cpu {
    pub(crate) avx2: Option<Avx2>,
    pub(crate) avx512: Option<Avx512>,
    pub(crate) avx512vl: Option<Avx512Vl>,
    /// SHA-NI, which the `sha1` crate uses too.
    pub(crate) sha_ni: Option<ShaNi>,
}

pub(crate) fn cpu() -> Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    *CPU.get_or_init(|| Cpu {
        avx2: Avx2::detect(),
        avx512: Avx512::detect(),
        avx512vl: Avx512Vl::detect(),
        sha_ni: ShaNi::detect(),
    })
}
