//! The kernels' C signatures, parsed from the embedded sources, and the check that holds the
//! launchers to them.
//!
//! Every launcher names what it launches by data: a [`Kernel`] entry, or a table of variants
//! that share one entry (`launch::KernelTable`). [`check`] proves, without a GPU, that each entry
//! is a kernel of the sources with exactly the entry's parameters, and that every kernel of the
//! sources has an entry; at launch time the arguments are held to the entry (`launch::Launch`).
//! A mismatch would otherwise only show up as garbage or a crash on a device.

pub use kernel_abi::signature::{parse_kernels, strip_comments, Elem, KernelSignature, Param};

use crate::launch::Kernel;

/// Every kernel of every embedded source, with its module's name.
pub fn all_kernels() -> Result<Vec<(&'static str, KernelSignature)>, String> {
    let mut all = Vec::new();
    for src in crate::SOURCES {
        for k in parse_kernels(src.source).map_err(|e| format!("{}: {e}", src.file))? {
            all.push((src.name, k));
        }
    }
    Ok(all)
}

/// The entries of `launched` that are not kernels of the sources, or whose parameters are not
/// their kernel's C signature: one line each.
pub fn disagreements(launched: &[Kernel]) -> Result<Vec<String>, String> {
    let sigs = all_kernels()?;
    Ok(launched
        .iter()
        .filter_map(|k| match sigs.iter().find(|(_, s)| s.name == k.name) {
            None => Some(format!("{}: no such kernel in the sources", k.name)),
            Some((module, s)) if s.params != k.params => Some(format!(
                "{}: the entry says {:?}, {module}.cu says {:?} ({})",
                k.name,
                k.params,
                s.params,
                s.param_names.join(", ")
            )),
            Some(_) => None,
        })
        .collect())
}

/// The kernels of the sources that no entry of `launched` names.
pub fn unlaunched(launched: &[Kernel]) -> Result<Vec<String>, String> {
    Ok(all_kernels()?
        .into_iter()
        .filter(|(_, s)| !launched.iter().any(|k| k.name == s.name))
        .map(|(module, s)| format!("{module}.cu: {} has no launcher", s.name))
        .collect())
}

/// `launched` is every kernel entry of every launcher: each must agree with its C signature,
/// and every kernel must have one. `Err` lists every problem, a line each.
pub fn check(launched: &[Kernel]) -> Result<(), String> {
    let mut problems = disagreements(launched)?;
    problems.extend(unlaunched(launched)?);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::arg::*;
    use std::collections::BTreeSet;

    /// Every name in KERNELS is defined (as extern "C" __global__) in its own module, and every
    /// defined kernel is listed: the list and the sources cannot drift apart.
    #[test]
    fn kernel_list_matches_sources() {
        let defined: BTreeSet<(String, String)> = all_kernels()
            .unwrap()
            .into_iter()
            .map(|(m, k)| (m.to_string(), k.name))
            .collect();
        let listed: BTreeSet<(String, String)> = crate::KERNELS
            .iter()
            .flat_map(|(m, ks)| ks.iter().map(move |k| (m.to_string(), k.to_string())))
            .collect();
        assert_eq!(defined, listed);
        let modules: BTreeSet<&str> = crate::SOURCES.iter().map(|s| s.name).collect();
        let listed_modules: BTreeSet<&str> = crate::KERNELS.iter().map(|(m, _)| *m).collect();
        assert_eq!(modules, listed_modules);
    }

    /// The check finds an entry with a parameter of the wrong kind, one too few, an unknown
    /// name and a kernel without an entry; a right entry passes.
    #[test]
    fn the_check_finds_every_kind_of_disagreement() {
        let relu = Kernel {
            name: "relu_forward",
            params: &[F32_IN, F32_OUT, I32],
        };
        assert_eq!(disagreements(&[relu]).unwrap(), Vec::<String>::new());
        let wrong = [
            Kernel {
                name: "relu_forward",
                params: &[F32_IN, F32_IN, I32],
            },
            Kernel {
                name: "relu_backward",
                params: &[F32_IN, F32_IN, F32_OUT],
            },
            Kernel {
                name: "relu_sideways",
                params: &[],
            },
        ];
        let found = disagreements(&wrong).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("elementwise.cu") && found[0].contains("x, y, n"));
        assert!(found[2].contains("no such kernel"));
        let missing = unlaunched(&[relu]).unwrap();
        assert_eq!(missing.len(), all_kernels().unwrap().len() - 1);
        assert!(missing
            .iter()
            .any(|m| m == "sgd.cu: sgd_step has no launcher"));
        let err = check(&wrong).unwrap_err();
        assert!(err.contains("relu_sideways") && err.contains("conv2d_forward has no launcher"));
    }

    /// This crate's own launches (the ceiling probes) agree with their sources; the rest are
    /// checked with the ops that launch them (`tensor`'s kernel list).
    #[test]
    fn the_peak_probes_match_their_signatures() {
        assert_eq!(
            disagreements(&crate::peak::KERNELS).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sources_are_embedded_and_hashed() {
        assert_eq!(crate::SOURCES.len(), 10);
        for s in crate::SOURCES {
            assert_eq!(s.file, format!("{}.cu", s.name));
            assert!(s.source.contains("extern \"C\" __global__"), "{}", s.file);
            assert_ne!(s.hash, 0);
            // Only what nvrtc provides on its own: our own headers are inlined by build.rs,
            // and nothing else may be included.
            assert!(!s.source.contains("#include"), "{} has an #include", s.file);
        }
        assert!(crate::source("conv").is_some());
        assert_eq!(crate::module_of("sgd_step"), Some("sgd"));
    }
}
