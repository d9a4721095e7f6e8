//! Host-side view of the kernels' C signatures, parsed from the embedded sources.
//!
//! Used by tests to prove, without a GPU, that every `extern "C" __global__` kernel exists and
//! that each launcher in [`crate::launch`] pushes arguments of the right kinds in the right
//! order (a mismatch would otherwise only show up as garbage or a crash on a device).

mod parse;
pub use parse::{parse_kernels, strip_comments, Elem, KernelSignature, Param};

/// Every kernel of every embedded source.
pub fn all_kernels() -> Result<Vec<(&'static str, KernelSignature)>, String> {
    let mut all = Vec::new();
    for src in crate::SOURCES {
        for k in parse_kernels(src.source).map_err(|e| format!("{}: {e}", src.file))? {
            all.push((src.name, k));
        }
    }
    Ok(all)
}

/// Maps a `launch!` tag (see `launch/mod.rs`) to the parameter kind it must meet.
pub fn tag_param(tag: &str) -> Option<Param> {
    Some(match tag {
        "f32_in" => Param::In(Elem::F32),
        "f32_out" => Param::Out(Elem::F32),
        "f64_out" => Param::Out(Elem::F64),
        "i32_in" => Param::In(Elem::I32),
        "i32_out" => Param::Out(Elem::I32),
        "u8_in" => Param::In(Elem::U8),
        "u64_in" => Param::In(Elem::U64),
        "i32" => Param::I32,
        "f32" => Param::F32,
        _ => return None,
    })
}

/// Parses the `launch!(gpu, "name", cfg, [tag arg, ...])` invocations from a launcher file's text:
/// `(kernel name, tags)`.
pub fn parse_launches(launch_rs: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let src = strip_comments(launch_rs);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(pos) = rest.find("launch!(") {
        rest = &rest[pos + "launch!(".len()..];
        // Skip the macro's own definition / recursive `@push` arms.
        let Some(q1) = rest.find('"') else { break };
        if rest[..q1].contains('$') || rest[..q1].contains('@') || rest[..q1].contains(')') {
            continue;
        }
        let q2 = q1 + 1 + rest[q1 + 1..].find('"').ok_or("unterminated kernel name")?;
        let name = rest[q1 + 1..q2].to_string();
        let lb = q2
            + rest[q2..]
                .find('[')
                .ok_or_else(|| format!("{name}: missing `[`"))?;
        let rb = lb
            + rest[lb..]
                .find(']')
                .ok_or_else(|| format!("{name}: missing `]`"))?;
        let tags = rest[lb + 1..rb]
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| a.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        out.push((name, tags));
        rest = &rest[rb..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn parses_a_kernel_head() {
        let src = r#"
            // extern "C" __global__ void commented_out(int n)
            extern "C" __global__ void __launch_bounds__(256)
            k1(const float* __restrict__ x, float *y, int n, float beta,
               const unsigned char* img, double* acc)
            { }
            extern "C" __global__ void k2(const int* p) {}
        "#;
        let ks = parse_kernels(src).unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!(ks[0].name, "k1");
        assert_eq!(
            ks[0].params,
            vec![
                Param::In(Elem::F32),
                Param::Out(Elem::F32),
                Param::I32,
                Param::F32,
                Param::In(Elem::U8),
                Param::Out(Elem::F64)
            ]
        );
        assert_eq!(ks[1].params, vec![Param::In(Elem::I32)]);
    }

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

    /// The launcher sources, one file per op family (plus `mod.rs`, which holds the macro).
    const LAUNCH_FILES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("launch/mod.rs")),
        ("conv.rs", include_str!("launch/conv.rs")),
        ("conv_plan.rs", include_str!("launch/conv_plan.rs")),
        ("batchnorm.rs", include_str!("launch/batchnorm.rs")),
        ("elementwise.rs", include_str!("launch/elementwise.rs")),
        ("shortcut.rs", include_str!("launch/shortcut.rs")),
        ("pool_fc.rs", include_str!("launch/pool_fc.rs")),
        ("loss.rs", include_str!("launch/loss.rs")),
        ("sgd.rs", include_str!("launch/sgd.rs")),
        ("peak.rs", include_str!("launch/peak.rs")),
        ("augment.rs", include_str!("launch/augment.rs")),
        ("params.rs", include_str!("launch/params.rs")),
        ("param_buffer.rs", include_str!("launch/param_buffer.rs")),
    ];

    /// Every file in `src/launch/` is in [`LAUNCH_FILES`], so no launcher escapes the check below.
    #[test]
    fn launch_file_list_is_complete() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/launch");
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".rs"))
            .collect();
        let listed: BTreeSet<String> = LAUNCH_FILES.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(on_disk, listed);
    }

    /// Each launcher's `launch!` tag list equals the kernel's C parameter list, and every kernel
    /// has at least one launcher.
    #[test]
    fn launchers_match_kernel_signatures() {
        let sigs = all_kernels().unwrap();
        let mut launches = Vec::new();
        for (file, text) in LAUNCH_FILES {
            launches.extend(parse_launches(text).unwrap_or_else(|e| panic!("{file}: {e}")));
        }
        assert!(
            launches.len() >= sigs.len(),
            "found only {} launch! calls",
            launches.len()
        );
        for (name, tags) in &launches {
            let (_, sig) = sigs
                .iter()
                .find(|(_, s)| &s.name == name)
                .unwrap_or_else(|| panic!("launch! of unknown kernel {name}"));
            let got: Vec<Param> = tags
                .iter()
                .map(|t| tag_param(t).unwrap_or_else(|| panic!("{name}: unknown tag {t}")))
                .collect();
            assert_eq!(
                got, sig.params,
                "launcher for {name} disagrees with its C signature"
            );
        }
        for (_, sig) in &sigs {
            assert!(
                launches.iter().any(|(n, _)| n == &sig.name),
                "kernel {} has no launcher",
                sig.name
            );
        }
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
