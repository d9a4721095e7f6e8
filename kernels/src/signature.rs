//! Host-side view of the kernels' C signatures, parsed from the embedded sources.
//!
//! Used by tests to prove, without a GPU, that every `extern "C" __global__` kernel exists and
//! that each launcher in [`crate::launch`] pushes arguments of the right kinds in the right
//! order (a mismatch would otherwise only show up as garbage or a crash on a device).

/// Element type behind a pointer parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// `float`
    F32,
    /// `double`
    F64,
    /// `int`
    I32,
    /// `unsigned char`
    U8,
    /// `unsigned long long` (device addresses in a table)
    U64,
}

/// The kind of one kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `const T*`
    In(Elem),
    /// `T*`
    Out(Elem),
    /// `int`
    I32,
    /// `float`
    F32,
}

/// One `extern "C" __global__` kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSignature {
    /// The kernel name.
    pub name: String,
    /// Its parameters, in order.
    pub params: Vec<Param>,
}

/// Removes `// ...` and `/* ... */` comments.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b + 2..]
                    .find("*/")
                    .map_or("", |e| &rest[b + 2 + e + 2..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn parse_param(text: &str) -> Result<Param, String> {
    let norm = text.replace('*', " * ");
    let toks: Vec<&str> = norm
        .split_whitespace()
        .filter(|t| *t != "__restrict__")
        .collect();
    // Drop the parameter name (last token).
    let ty = &toks[..toks.len().saturating_sub(1)];
    let is_ptr = ty.contains(&"*");
    let is_const = ty.contains(&"const");
    let base: Vec<&str> = ty
        .iter()
        .copied()
        .filter(|t| *t != "*" && *t != "const")
        .collect();
    let elem = match base.join(" ").as_str() {
        "float" => Elem::F32,
        "double" => Elem::F64,
        "int" => Elem::I32,
        "unsigned char" => Elem::U8,
        "unsigned long long" => Elem::U64,
        other => return Err(format!("unsupported parameter type `{other}` in `{text}`")),
    };
    Ok(match (is_ptr, is_const, elem) {
        (true, true, e) => Param::In(e),
        (true, false, e) => Param::Out(e),
        (false, _, Elem::I32) => Param::I32,
        (false, _, Elem::F32) => Param::F32,
        _ => return Err(format!("unsupported scalar parameter `{text}`")),
    })
}

/// Parses every `extern "C" __global__` kernel in `src`.
pub fn parse_kernels(src: &str) -> Result<Vec<KernelSignature>, String> {
    const MARK: &str = "extern \"C\" __global__";
    let src = strip_comments(src);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(pos) = rest.find(MARK) {
        rest = &rest[pos + MARK.len()..];
        let open = rest.find('(').ok_or("missing `(`")?;
        let mut head = rest[..open].trim().to_string();
        let mut after = &rest[open..];
        // `void __launch_bounds__(...) name(`: skip the bounds' parentheses.
        if let Some(before) = head.strip_suffix("__launch_bounds__") {
            let close = after.find(')').ok_or("unclosed __launch_bounds__")?;
            after = &after[close + 1..];
            let open2 = after.find('(').ok_or("missing `(`")?;
            head = format!("{} {}", before.trim(), after[..open2].trim());
            after = &after[open2..];
        }
        let name = head
            .strip_prefix("void")
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("cannot parse kernel head `{head}`"))?
            .to_string();
        let close = after.find(')').ok_or("unclosed parameter list")?;
        let params = after[1..close]
            .split(',')
            .map(parse_param)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{name}: {e}"))?;
        out.push(KernelSignature { name, params });
        rest = &after[close..];
    }
    Ok(out)
}

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
