//! Kernels named by data, and the one way to launch them.
//!
//! A launcher declares what it launches as a [`Kernel`] (a name and the kinds of its C
//! parameters) or a [`KernelTable`] (variants of one C signature, each with the tag that selects
//! it), and launches through [`Kernel::launch`]: each argument's kind comes from its Rust type
//! ([`KernelArg`]) and must be the entry's, in order and in number, or the launch is refused.
//! `signature::check` holds every entry to its kernel's C signature, so what is pushed is what
//! the kernel reads, for every variant.

use std::fmt::Debug;

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};

use super::{Elem, Param, ParamBuffer};
use crate::error::{KernelError, Result};
use crate::Gpu;

/// The parameter kinds under the names the launchers' entries use (`In` = `const T*`, `Out` =
/// `T*`), e.g. `&[F32_IN, F32_OUT, I32]` for `(const float* x, float* y, int n)`.
pub mod arg {
    use super::{Elem, Param};

    pub const F32_IN: Param = Param::In(Elem::F32);
    pub const F32_OUT: Param = Param::Out(Elem::F32);
    pub const F64_OUT: Param = Param::Out(Elem::F64);
    pub const I32_IN: Param = Param::In(Elem::I32);
    pub const I32_OUT: Param = Param::Out(Elem::I32);
    pub const U8_IN: Param = Param::In(Elem::U8);
    pub const U64_IN: Param = Param::In(Elem::U64);
    pub const I32: Param = Param::I32;
    pub const F32: Param = Param::F32;
}

/// One kernel: its name in the sources and the kinds of its parameters, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    pub name: &'static str,
    pub params: &'static [Param],
}

/// Variants of one kernel that share its C signature, each selected by a tag (e.g. precision
/// and tile): the launch site looks the name up instead of matching on the tag, so one call
/// launches any variant.
#[derive(Debug)]
pub struct KernelTable<T: 'static> {
    /// The parameters every variant takes.
    pub params: &'static [Param],
    /// (tag, kernel name) per variant.
    pub variants: &'static [(T, &'static str)],
}

impl<T: Copy + PartialEq + Debug> KernelTable<T> {
    /// The variant tagged `tag`; `Err` when the table has none (a gap in the table).
    pub fn get(&self, tag: T) -> Result<Kernel> {
        match self.variants.iter().find(|(t, _)| *t == tag) {
            Some(&(_, name)) => Ok(Kernel {
                name,
                params: self.params,
            }),
            None => Err(KernelError::invalid(
                self.variants.first().map_or("?", |v| v.1),
                format!("no variant tagged {tag:?} in its table"),
            )),
        }
    }

    /// Every variant, for the signature check.
    pub fn kernels(&self) -> impl Iterator<Item = Kernel> + '_ {
        self.variants.iter().map(|&(_, name)| Kernel {
            name,
            params: self.params,
        })
    }
}

impl Kernel {
    /// Starts a launch of this kernel on `gpu`'s stream with `cfg`: push the arguments in the
    /// C signature's order ([`Launch::arg`]), then [`Launch::run`].
    pub fn launch(self, gpu: &Gpu, cfg: LaunchConfig) -> Launch<'_> {
        Launch {
            gpu,
            cfg,
            packed: Packing::new(self),
        }
    }
}

/// A launch being assembled: the arguments packed so far, checked one by one against the
/// kernel's entry.
#[must_use = "a launch is queued only by `run`"]
pub struct Launch<'g> {
    gpu: &'g Gpu,
    cfg: LaunchConfig,
    packed: Packing,
}

impl Launch<'_> {
    /// Packs the next argument, if its kind is the next one of the kernel's entry (else
    /// [`Launch::run`] refuses the launch).
    pub fn arg<A: KernelArg>(mut self, a: A) -> Self {
        if self.packed.next_is(A::PARAM) {
            a.push(self.gpu, &mut self.packed.params);
        }
        self
    }

    /// [`Launch::arg`] for each of `ints`, in order.
    pub fn ints(self, ints: &[i32]) -> Self {
        ints.iter().fold(self, |l, &v| l.arg(v))
    }

    /// Queues the kernel with the packed arguments, unless one was of the wrong kind or their
    /// number is not the entry's.
    pub fn run(self) -> Result<()> {
        let name = self.packed.kernel.name;
        let params = self.packed.finish()?;
        self.gpu.launch_packed(name, self.cfg, &params)
    }
}

/// A kernel's parameter buffer being filled, and the check of each argument's kind.
struct Packing {
    kernel: Kernel,
    params: ParamBuffer,
    pushed: usize,
    /// The first argument whose kind is not the entry's.
    wrong: Option<String>,
}

impl Packing {
    fn new(kernel: Kernel) -> Self {
        Packing {
            kernel,
            params: ParamBuffer::new(),
            pushed: 0,
            wrong: None,
        }
    }

    /// Counts an argument of kind `got`: whether it is the entry's next (then the caller packs
    /// it).
    fn next_is(&mut self, got: Param) -> bool {
        let want = self.kernel.params.get(self.pushed).copied();
        self.pushed += 1;
        if want == Some(got) {
            return true;
        }
        if self.wrong.is_none() {
            self.wrong = Some(format!(
                "argument {} is {got:?}, the kernel's entry says {}",
                self.pushed - 1,
                want.map_or("no more".to_string(), |w| format!("{w:?}"))
            ));
        }
        false
    }

    /// The buffer, if every argument had its kind and none was missing.
    fn finish(self) -> Result<ParamBuffer> {
        let Kernel { name, params } = self.kernel;
        if let Some(wrong) = self.wrong {
            return Err(KernelError::invalid(name, wrong));
        }
        if self.pushed != params.len() {
            return Err(KernelError::invalid(
                name,
                format!("{} arguments for {} parameters", self.pushed, params.len()),
            ));
        }
        Ok(self.params)
    }
}

/// `launch!(kernel, gpu, cfg; arg, ...)`: [`Kernel::launch`], each argument pushed in order
/// ([`Launch::arg`]), then [`Launch::run`]. Only syntax: the kinds still come from the
/// arguments' Rust types and are held to the kernel's entry.
#[macro_export]
macro_rules! launch {
    ($kernel:expr, $gpu:expr, $cfg:expr; $($arg:expr),* $(,)?) => {
        $kernel.launch($gpu, $cfg)$(.arg($arg))*.run()
    };
}

/// An element type a kernel's pointer parameter can point to.
pub trait DeviceElem {
    const ELEM: Elem;
}

impl DeviceElem for f32 {
    const ELEM: Elem = Elem::F32;
}
impl DeviceElem for f64 {
    const ELEM: Elem = Elem::F64;
}
impl DeviceElem for i32 {
    const ELEM: Elem = Elem::I32;
}
impl DeviceElem for u8 {
    const ELEM: Elem = Elem::U8;
}
impl DeviceElem for u64 {
    const ELEM: Elem = Elem::U64;
}

/// A value that can be a kernel argument, and the parameter kind its type stands for: a view
/// is a `const T*`, a mutable view a `T*`, `i32` an `int`, `f32` a `float`.
pub trait KernelArg {
    const PARAM: Param;
    fn push(self, gpu: &Gpu, params: &mut ParamBuffer);
}

impl<T: DeviceElem> KernelArg for &CudaView<'_, T> {
    const PARAM: Param = Param::In(T::ELEM);
    fn push(self, gpu: &Gpu, params: &mut ParamBuffer) {
        params.push(gpu.addr_of_view(self));
    }
}

impl<T: DeviceElem> KernelArg for &mut CudaViewMut<'_, T> {
    const PARAM: Param = Param::Out(T::ELEM);
    fn push(self, gpu: &Gpu, params: &mut ParamBuffer) {
        params.push(gpu.addr_of_view_mut(self));
    }
}

impl KernelArg for i32 {
    const PARAM: Param = Param::I32;
    fn push(self, _: &Gpu, params: &mut ParamBuffer) {
        params.push(self);
    }
}

impl KernelArg for f32 {
    const PARAM: Param = Param::F32;
    fn push(self, _: &Gpu, params: &mut ParamBuffer) {
        params.push(self);
    }
}

#[cfg(test)]
mod tests {
    use super::arg::*;
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Tile {
        Small,
        Large,
        Huge,
    }

    static TABLE: KernelTable<Tile> = KernelTable {
        params: &[F32_IN, F32_OUT, I32],
        variants: &[(Tile::Small, "k_small"), (Tile::Large, "k")],
    };

    #[test]
    fn a_table_names_each_variant_by_its_tag() {
        assert_eq!(TABLE.get(Tile::Small).unwrap().name, "k_small");
        let k = TABLE.get(Tile::Large).unwrap();
        assert_eq!((k.name, k.params), ("k", TABLE.params));
        let err = TABLE.get(Tile::Huge).unwrap_err().to_string();
        assert!(err.contains("Huge"), "{err}");
        let names: Vec<_> = TABLE.kernels().map(|k| k.name).collect();
        assert_eq!(names, ["k_small", "k"]);
    }

    /// What `Launch::arg` does with a scalar: check its kind, then pack it.
    fn pack<A: KernelArg + Copy + Into<f64>>(p: &mut Packing, a: A) {
        if p.next_is(A::PARAM) {
            match A::PARAM {
                Param::I32 => p.params.push(a.into() as i32),
                _ => p.params.push(a.into() as f32),
            }
        }
    }

    #[test]
    fn arguments_are_refused_unless_kind_and_number_are_the_entrys() {
        static SCALARS: Kernel = Kernel {
            name: "k",
            params: &[I32, F32, I32],
        };
        let mut p = Packing::new(SCALARS);
        pack(&mut p, 7i32);
        pack(&mut p, 0.5f32);
        pack(&mut p, -1i32);
        assert_eq!(p.finish().unwrap().as_bytes().len(), 12);
        // An int where the entry says float: refused, naming the kernel and the argument.
        let mut p = Packing::new(SCALARS);
        pack(&mut p, 7i32);
        pack(&mut p, 1i32);
        pack(&mut p, -1i32);
        let err = p.finish().unwrap_err().to_string();
        assert!(
            err.contains("`k`") && err.contains("argument 1 is I32"),
            "{err}"
        );
        // Too few, too many.
        let mut p = Packing::new(SCALARS);
        pack(&mut p, 7i32);
        pack(&mut p, 0.5f32);
        let err = p.finish().unwrap_err().to_string();
        assert!(err.contains("2 arguments for 3 parameters"), "{err}");
        let mut p = Packing::new(SCALARS);
        for _ in 0..2 {
            pack(&mut p, 7i32);
            pack(&mut p, 0.5f32);
        }
        let err = p.finish().unwrap_err().to_string();
        assert!(
            err.contains("argument 3 is F32") && err.contains("no more"),
            "{err}"
        );
    }

    #[test]
    fn argument_kinds_follow_their_rust_types() {
        fn kind<A: KernelArg>(_: A) -> Param {
            A::PARAM
        }
        assert_eq!(kind(3i32), I32);
        assert_eq!(kind(0.5f32), F32);
        assert_eq!(<&CudaView<'_, f32>>::PARAM, F32_IN);
        assert_eq!(<&mut CudaViewMut<'_, f32>>::PARAM, F32_OUT);
        assert_eq!(<&mut CudaViewMut<'_, f64>>::PARAM, F64_OUT);
        assert_eq!(<&CudaView<'_, i32>>::PARAM, I32_IN);
        assert_eq!(<&mut CudaViewMut<'_, i32>>::PARAM, I32_OUT);
        assert_eq!(<&CudaView<'_, u8>>::PARAM, U8_IN);
        assert_eq!(<&CudaView<'_, u64>>::PARAM, U64_IN);
    }
}
